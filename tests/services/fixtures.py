"""Session fixtures starting real services, loaded by ``tests/conftest.py`` (``pytest_plugins``).

``slurm_cluster``
    A one-node Slurm cluster on localhost (munged, slurmctld, slurmd; Debian packages installed when
    missing), with ``SLURM_CONF`` exported for the session so dask-jobqueue's ``sbatch`` reaches it.
``xrootd_server``
    An XRootD server on localhost serving copies of the NanoAOD samples ``nano_dy.root`` and
    ``nano_tt_v12.root``.
``gateway_server``
    A dask-gateway server on localhost whose clusters are local processes (skipped when
    ``dask-gateway-server[local]`` is not installed).

Each starts only when a test that uses it is selected, and is stopped at the end of the session. When a
service cannot be installed or started (not root, no package mirror), its tests are skipped with the
reason — except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .services import (
    GatewayServer,
    ServiceError,
    Slurm,
    XRootD,
    start_gateway,
    start_slurm,
    start_xrootd,
    stop_slurm,
)

__all__ = ("gateway_server", "slurm_cluster", "xrootd_server")


def _unavailable(what: str, reason: str) -> None:
    message = f"{what} unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        _unavailable(what, "starting it needs root (the tests install Debian packages and switch users)")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Slurm]:
    """A running one-node Slurm cluster; ``SLURM_CONF`` points at it for the whole session."""
    _need_root("Slurm")
    directory = Path(tempfile.mkdtemp(prefix="distproc-slurm-"))
    try:
        slurm = start_slurm(directory)
    except ServiceError as err:
        stop_slurm(directory)
        _unavailable("Slurm", str(err))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(slurm.conf))
        try:
            yield slurm
        finally:
            left = slurm.jobs()
            if left:
                slurm.command("scancel", *left)
            stop_slurm(directory)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def xrootd_server(nano_dy: Path, nano_tt: Path) -> Iterator[XRootD]:
    """A running XRootD server serving ``nano_dy.root`` and ``nano_tt_v12.root``."""
    _need_root("XRootD")
    directory = Path(tempfile.mkdtemp(prefix="distproc-xrootd-"))
    try:
        server = start_xrootd(directory, [nano_dy, nano_tt])
    except ServiceError as err:
        XRootD(directory, 0).stop()
        _unavailable("XRootD", str(err))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A running dask-gateway server (clusters as local processes)."""
    pytest.importorskip("dask_gateway", reason="the gateway tests need dask-gateway")
    pytest.importorskip("dask_gateway_server", reason="the gateway tests need dask-gateway-server[local]")
    pytest.importorskip("sqlalchemy", reason="the gateway tests need dask-gateway-server[local]")
    try:
        server = start_gateway(tmp_path_factory.mktemp("gateway"))
    except ServiceError as err:
        _unavailable("dask-gateway", str(err))
    try:
        yield server
    finally:
        server.stop()
