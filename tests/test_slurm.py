"""The ``slurm`` back-end against a real one-node Slurm cluster on localhost (``slurm_cluster`` fixture).

Worker jobs run the same Python as the tests but not their ``sys.path``: the processors reach them by
value, as a user's would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    """The default settings: TLS with the run's certificate in ``<cache>/tls``, job logs in
    ``<cache>/logs`` (dask-jobqueue would leave ``slurm-N.out`` in the current directory)."""
    # As after any LocalCluster in this process: its nanny set the variable here, and sbatch exports it.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    cache, cwd = tmp_path / "distproc-cache", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("DISTPROC_CACHE_DIR", str(cache))
    monkeypatch.chdir(cwd)
    cluster = _slurm(slurm_cluster, jobs=2, log_directory=None)  # None: the default
    result = _run(cluster, fileset, tmp_path, chunksize=CHUNKSIZE)
    assert not result.report.failures
    assert result.output["workers"]
    assert all(w.startswith("tls://127.0.0.1:") for w in result.output["workers"])
    assert list((cache / "tls").iterdir()) == []  # the run's certificate directory is gone
    assert list(cwd.iterdir()) == []  # no slurm-N.out
    logs = sorted(p.name for p in (cache / "logs").iterdir())
    assert logs, "no job logs in <cache>/logs"
    assert all(name.startswith("dask-worker-") for name in logs), logs
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


def check_dask_mode(cluster: Any, nano_dy: Path, nano_tt: Path, tmp_path: Path) -> Any:
    """Run a coffea dask-awkward processor, unchanged, with ``mode="dask"`` on ``cluster`` (a back-end
    spec or a client of batch worker jobs) and assert that every histogram bin, cutflow entry and
    reduction equals coffea's ``apply_to_fileset`` + ``dask.compute`` on the same preprocessed steps
    (the processor's file reaches the workers by value). Shared by the Slurm, PBS and SGE tests."""
    from coffea.nanoevents import NanoAODSchema
    from test_dask_mode import PROCS, _coffea, _preprocess, assert_same

    fileset = {
        "dy": {"files": {str(nano_dy): "Events"}, "metadata": {"xsec": 6077.2}},
        "tt": {"files": {str(nano_tt): "Events"}, "metadata": {"xsec": 729.8}},
    }
    fileset = _preprocess(fileset, step_size=50)  # dy: 1 step, tt: 4
    processor = distproc.load_processor(f"{PROCS}:MuonCutflow")
    want = _coffea(processor, fileset, NanoAODSchema)
    result = distproc.run(
        processor,
        fileset,
        mode="dask",
        cluster=cluster,
        progress=False,
        cache_dir=str(tmp_path / "dask-cache"),
    )
    assert not result.report.failures, result.report.failures[0].traceback
    assert {name: d.partitions for name, d in result.report.datasets.items()} == {"dy": 1, "tt": 4}
    assert_same(result.output, want)
    assert result.output["tt"]["cutflow"]["all"] == 200
    assert result.output["dy"]["muon_pt"].sum().value > 0
    return result


def test_dask_mode_on_slurm_equals_coffea(
    slurm_cluster: Any, nano_dy: Path, nano_tt: Path, tmp_path: Path
) -> None:
    """Dask mode on Slurm worker jobs that distproc submits (``check_dask_mode``)."""
    result = check_dask_mode(_slurm(slurm_cluster, jobs=2), nano_dy, nano_tt, tmp_path)
    assert "SLURMCluster" in result.report.cluster
    assert slurm_cluster.wait_no_jobs() == []


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in [directory, *directory.iterdir()]}


def test_slurm_scheduler_accepts_only_the_runs_certificate(slurm_cluster: Any, tmp_path: Path) -> None:
    """While a run goes: workers started by the job script over ``tls://`` with the files in the run's
    directory (0700, files 0600); a client without the certificate, or with another CA's, is refused."""
    from distributed import Client
    from distributed.security import Security

    shared = tmp_path / "shared"
    shared.mkdir()
    backend = get_backend(**_slurm(slurm_cluster, jobs=1, shared_temp_directory=str(shared)))
    with backend.client() as client:
        client.wait_for_workers(1, timeout=120)
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        (run_dir,) = shared.iterdir()
        assert _modes(run_dir) == {run_dir.name: 0o700, "cert.pem": 0o600, "key.pem": 0o600}
        script = client.cluster.job_script()
        assert f"dask_worker {address} " in script
        assert "--protocol tls://" in script
        assert f"--tls-ca-file {run_dir}/cert.pem --tls-cert {run_dir}/cert.pem" in script
        assert f"--tls-key {run_dir}/key.pem" in script
        assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        assert client.submit(sum, [1, 2]).result() == 3
        with pytest.raises(OSError, match=r"closed|reset|Timed out"):
            Client(address.replace("tls://", "tcp://"), timeout=5).close()
        with pytest.raises(OSError, match="TLS certificate does not match"):
            Client(address, security=Security.temporary(), timeout=5).close()
        assert client.dashboard_link.startswith("http://localhost:")  # bound to 127.0.0.1
    assert list(shared.iterdir()) == []
    assert slurm_cluster.wait_no_jobs() == []


def test_failed_slurm_run_removes_its_certificate(
    slurm_cluster: Any, fileset: dict[str, list[str]], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    cluster = _slurm(
        slurm_cluster, shared_temp_directory=str(shared), python="/nonexistent/python", start_timeout=15
    )
    with pytest.raises(distproc.ClusterError, match="no slurm worker joined within 15 s"):
        _run(cluster, fileset, tmp_path, chunksize=CHUNKSIZE)
    assert list(shared.iterdir()) == []
    assert slurm_cluster.wait_no_jobs() == []


def test_interrupted_slurm_run_removes_its_certificate_and_jobs(
    slurm_cluster: Any, nano_tt: Path, tmp_path: Path
) -> None:
    """``SIGTERM`` to ``distproc run`` mid-run (a batch system's or a closed terminal's way to stop it)."""
    shared, cwd = tmp_path / "shared", tmp_path / "cwd"
    shared.mkdir()
    cwd.mkdir()
    cluster = _slurm(slurm_cluster, jobs=1, shared_temp_directory=str(shared))
    config = tmp_path / "run.json"  # JSON is YAML
    config.write_text(
        json.dumps(
            {
                "processor": {"class": PROCESSOR, "args": {"sleep": 2.0}},
                "fileset": {"tt": [str(nano_tt)]},
                "chunksize": FAULT_CHUNKSIZE,
                "cache_dir": str(tmp_path / "cache"),
                "cluster": cluster,
            }
        )
    )
    env = {**os.environ, "DISTPROC_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "distproc.cli", "run", str(config), "-o", str(out), "--no-progress"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (list(shared.iterdir()) and slurm_cluster.running_jobs()) and time.monotonic() < deadline:
            assert run.poll() is None, run.stderr.read()
            time.sleep(0.2)
        assert slurm_cluster.running_jobs(), "no worker job started"
        time.sleep(5)  # the worker joins and starts on the partitions (20 of them, 2 s each)
        assert run.poll() is None, "the run ended before it could be interrupted"
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 3  # stopped, resumable from the checkpoint (README: exit codes)
    finally:
        if run.poll() is None:
            run.kill()
    assert list(shared.iterdir()) == []
    assert slurm_cluster.wait_no_jobs() == []
    assert list(cwd.iterdir()) == []
