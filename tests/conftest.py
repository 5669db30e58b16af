"""Shared fixtures: the real CMS/ATLAS samples in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distproc.cluster import open_client

pytest_plugins = ["services.fixtures"]  # slurm_cluster, xrootd_server (tests/services/fixtures.py)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTPROC_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real sample {name} not found in {SHARED_DATA}")
    return path


@pytest.fixture(scope="session")
def nano_dy() -> Path:
    """CMS NanoAOD Drell-Yan sample (real data file)."""
    return _shared("nano_dy.root")


@pytest.fixture(scope="session")
def nano_tt() -> Path:
    """CMS NanoAOD v12 ttbar sample (real data file)."""
    return _shared("nano_tt_v12.root")


@pytest.fixture(scope="session")
def physlite() -> Path:
    """ATLAS PHYSLITE sample (real data file)."""
    return _shared("PHYSLITE_example.root")


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 workers (distproc's ``local`` back-end), shared by one test module's tests."""
    with open_client(workers=2) as c:
        yield c
