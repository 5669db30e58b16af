"""The ``sge`` back-end against a real one-host Grid Engine on localhost (``sge_cluster`` fixture)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_slurm import (
    CHUNKSIZE,
    _run,
    _slurm,
    assert_same_histograms,
    check_dask_mode,
    fileset,
    local_reference,
)

from distproc.cluster import get_backend

pytestmark = pytest.mark.sge

__all__ = ("fileset", "local_reference")  # test_slurm's fixtures, used here


def test_sge_run_equals_local_run(
    sge_cluster: Any,
    fileset: dict[str, list[str]],
    local_reference: dict[str, Any],
    nano_dy: Path,
    nano_tt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both modes on the same Grid Engine worker jobs: the default mode equals the local run, dask mode
    equals coffea's dask path (``check_dask_mode``)."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as after any LocalCluster in this process
    assert shutil.which("qsub") == "/usr/bin/qsub", "qsub is not Grid Engine's (Torque wrappers on PATH?)"
    # test_slurm's options with Grid Engine's kind (its job logs go to the cluster's directory too). `-V`
    # exports the submitting environment, as sbatch does by default: the workers import this checkout's
    # distproc (PYTHONPATH), not another one installed in the same Python.
    options = _slurm(sge_cluster, kind="sge", jobs=2, job_extra_directives=["-V"])
    backend = get_backend(**options)
    with backend.client() as client:
        client.wait_for_workers(2, timeout=120)
        assert type(client.cluster).__name__ == "SGECluster"
        queued = set(sge_cluster.jobs())
        job_ids = set(client.run(os.getenv, "JOB_ID").values())
        result = _run(client, fileset, tmp_path, chunksize=CHUNKSIZE)
        check_dask_mode(client, nano_dy, nano_tt, tmp_path)  # dask mode on the same worker jobs
    assert len(queued) == 2
    assert job_ids == queued, "the workers are not the Grid Engine jobs"
    assert not result.report.failures
    assert_same_histograms(result.output, local_reference)
    assert result.output["partitions"] == {"dy": 1, "tt": 4}
    assert set(result.output["malloc_trim_threshold"]) == {"unset"}
    assert sge_cluster.wait_no_jobs() == [], "worker jobs left in qstat after the run"
