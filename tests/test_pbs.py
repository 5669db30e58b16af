"""The ``pbs`` back-end against Slurm's Torque compatibility wrappers (``slurm-wlm-torque``: ``qsub``,
``qstat``, ``qdel`` over ``sbatch``/``squeue``/``scancel``) on the one-node Slurm cluster
(``torque_commands`` and ``slurm_cluster`` fixtures). dask-jobqueue's PBS job scripts carry ``#PBS``
directives, which Slurm's ``sbatch`` reads.
"""

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

pytestmark = [pytest.mark.pbs, pytest.mark.slurm]

__all__ = ("fileset", "local_reference")  # test_slurm's fixtures, used here


def test_pbs_run_through_qsub_equals_local_run(
    torque_commands: Path,
    slurm_cluster: Any,
    fileset: dict[str, list[str]],
    local_reference: dict[str, Any],
    nano_dy: Path,
    nano_tt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both modes on the same PBS worker jobs: the default mode equals the local run, dask mode
    equals coffea's dask path (``check_dask_mode``)."""
    assert shutil.which("qsub") == str(torque_commands / "qsub")
    # The wrappers' qsub ignores the job script's `#PBS -o/-e` (a real PBS honours them) and writes the job
    # logs to the submitting directory: submit from the test's own.
    monkeypatch.chdir(tmp_path)
    backend = get_backend(**_slurm(slurm_cluster, kind="pbs", jobs=2))
    with backend.client() as client:
        assert type(client.cluster).__name__ == "PBSCluster"
        client.wait_for_workers(2, timeout=120)
        queued = set(slurm_cluster.jobs())
        job_ids = set(client.run(os.getenv, "SLURM_JOB_ID").values())
        names = set(slurm_cluster.command("squeue", "-h", "-o", "%j").split())
        result = _run(client, fileset, tmp_path, chunksize=CHUNKSIZE)
        check_dask_mode(client, nano_dy, nano_tt, tmp_path)  # dask mode on the same worker jobs
    assert len(queued) == 2
    assert job_ids == queued, "the workers are not the jobs qsub submitted"
    assert names == {"dask-worker"}, "the job script's #PBS -N was not applied"
    assert not result.report.failures
    assert_same_histograms(result.output, local_reference)
    assert result.output["partitions"] == {"dy": 1, "tt": 4}
    assert slurm_cluster.wait_no_jobs() == [], "worker jobs left after the run (qdel)"
