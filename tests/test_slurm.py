"""The ``slurm`` back-end against a real one-node Slurm cluster on localhost (``slurm_cluster`` fixture).

Worker jobs run the same Python as the tests but not their ``sys.path``: the processors reach them by
value, as a user's would.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import distproc
from distproc.cluster import get_backend

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
PROCESSOR = f"{HERE / 'services' / 'muon_processor.py'}:MuonPt"
CHUNKSIZE = 50  # dy: 1 partition, tt: 4
FAULT_CHUNKSIZE = 10  # tt only: 20 partitions


@pytest.fixture(scope="module")
def fileset(nano_dy: Path, nano_tt: Path) -> dict[str, list[str]]:
    return {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}


def _run(
    cluster: Any, fileset: dict[str, list[str]], cache: Path, *, chunksize: int, sleep: float = 0.0
) -> Any:
    processor = distproc.load_processor(PROCESSOR, {"sleep": sleep})
    return distproc.run(
        processor, fileset, cluster=cluster, chunksize=chunksize, progress=False, cache_dir=str(cache)
    )


@pytest.fixture(scope="module")
def local_reference(
    fileset: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The same processor on the local back-end (one partition per file: the histograms do not depend
    on the partitioning)."""
    cache = tmp_path_factory.mktemp("local-cache")
    return _run({"kind": "local", "workers": 1}, fileset, cache, chunksize=1000).output


def _slurm(slurm_cluster: Any, **options: Any) -> dict[str, Any]:
    return {
        "kind": "slurm",
        "cores": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "interface": "lo",  # the scheduler and workers talk over loopback, where the node lives
        "log_directory": str(slurm_cluster.directory / "jobs"),
        "start_timeout": 120,
        **options,
    }


def assert_same_histograms(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got["events"]) <= set(want["events"])
    for dataset in got["events"]:
        assert got["events"][dataset] == want["events"][dataset]
        a, b = got["muon_pt"][{"dataset": dataset}], want["muon_pt"][{"dataset": dataset}]
        np.testing.assert_array_equal(a.values(flow=True), b.values(flow=True))
        assert a.axes == b.axes


def test_slurm_run_equals_local_run(
    slurm_cluster: Any,
    fileset: dict[str, list[str]],
    local_reference: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As after any LocalCluster in this process: its nanny set the variable here, and sbatch exports it.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    result = _run(_slurm(slurm_cluster, jobs=2), fileset, tmp_path, chunksize=CHUNKSIZE)
    assert not result.report.failures
    assert_same_histograms(result.output, local_reference)
    assert result.output["partitions"] == {"dy": 1, "tt": 4}
    assert "SLURMCluster" in result.report.cluster
    # Batch workers get the local back-end's allocator setting: no MALLOC_TRIM_THRESHOLD_ from the nanny.
    assert set(result.output["malloc_trim_threshold"]) == {"unset"}
    assert slurm_cluster.wait_no_jobs() == [], "worker jobs left in squeue after the run"


def test_cancelled_worker_job_loses_and_duplicates_no_partition(
    slurm_cluster: Any, fileset: dict[str, list[str]], local_reference: dict[str, Any], tmp_path: Path
) -> None:
    """``scancel`` one of two worker jobs while partitions run: the scheduler reschedules its tasks and
    recomputes the partition outputs it held, and every partition is counted exactly once."""
    backend = get_backend(**_slurm(slurm_cluster, jobs=2))
    cancelled: dict[str, Any] = {}
    with backend.client() as client:
        client.wait_for_workers(2, timeout=120)
        jobs = {w.name: w.job_id for w in client.cluster.workers.values()}

        def cancel_one_busy_worker() -> None:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                held = {
                    worker: [k for k in keys if "distproc-process" in str(k)]
                    for worker, keys in client.has_what().items()
                }
                busy = {w: keys for w, keys in client.processing().items() if keys}
                candidates = [w for w in busy if len(held.get(w, [])) >= 2]
                if len(busy) == 2 and candidates:
                    worker = candidates[0]
                    name = client.scheduler_info()["workers"][worker]["name"]
                    cancelled.update(worker=worker, job=jobs[name], held=len(held[worker]))
                    slurm_cluster.command("scancel", jobs[name])
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=cancel_one_busy_worker)
        killer.start()
        tt_only = {"tt": fileset["tt"]}
        result = _run(client, tt_only, tmp_path, chunksize=FAULT_CHUNKSIZE, sleep=0.1)
        killer.join()
    assert cancelled, "the run ended before a worker job could be cancelled mid-run"
    assert cancelled["job"] not in slurm_cluster.jobs()
    assert not result.report.failures
    assert_same_histograms(result.output, local_reference)
    assert result.output["partitions"] == {"tt": 20}  # each partition counted once
    assert cancelled["held"] >= 2  # the cancelled worker held partition outputs: they were recomputed
    assert slurm_cluster.wait_no_jobs() == []


def test_processor_file_and_its_helper_module_reach_slurm_workers(
    slurm_cluster: Any, fileset: dict[str, list[str]], local_reference: dict[str, Any], tmp_path: Path
) -> None:
    """A processor file in a directory no worker has on ``sys.path``, importing a helper module from that
    directory, runs on Slurm workers (both are pickled by value)."""
    code = tmp_path / "analysis"
    code.mkdir()
    (code / "muon_cuts_for_slurm_test.py").write_text(
        textwrap.dedent(
            """
            import awkward as ak

            PT_MIN = 0.0


            def selected_pt(events):
                pt = events.Muon.pt
                return ak.flatten(pt[pt >= PT_MIN])
            """
        )
    )
    (code / "my_processor.py").write_text(
        textwrap.dedent(
            """
            import hist
            import os

            import distproc
            from muon_cuts_for_slurm_test import selected_pt


            class Selected(distproc.Processor):
                def process(self, events):
                    dataset = events.metadata["dataset"]
                    h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(40, 0, 200, name="pt")
                    h = h.Double().fill(dataset=dataset, pt=selected_pt(events))
                    return {"muon_pt": h, "jobs": {os.environ.get("SLURM_JOB_ID", "not-slurm"): 1}}
            """
        )
    )
    assert str(code) not in os.environ.get("PYTHONPATH", "")
    processor = distproc.load_processor(f"{code / 'my_processor.py'}:Selected")
    result = distproc.run(
        processor,
        fileset,
        cluster=_slurm(slurm_cluster, jobs=1),
        chunksize=CHUNKSIZE,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
    )
    assert not result.report.failures, result.report.failures[0].traceback
    assert "not-slurm" not in result.output["jobs"]
    want = local_reference["muon_pt"]
    for dataset in ("dy", "tt"):
        np.testing.assert_array_equal(
            result.output["muon_pt"][{"dataset": dataset}].values(), want[{"dataset": dataset}].values()
        )
