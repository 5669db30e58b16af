"""Faults outside a partition (issue 14, part B): each is a run with real processes, compared bin by bin
with a fault-free run; and the bad cluster settings that used to hang or run silently."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from _cli import cli

import distproc

PROCS = Path(__file__).parent / "procs" / "muon.py"
FAULTY = Path(__file__).parent / "procs" / "faults.py"


def fileset(nano_dy: Path) -> dict:
    """Two datasets of the same 40 events: four partitions each at chunksize 10."""
    return {"dy": [str(nano_dy)], "bad": [str(nano_dy)]}


def run(proc, nano_dy, tmp_path, **kwargs):
    kwargs.setdefault("chunksize", 10)
    return distproc.run(
        proc,
        fileset(nano_dy),
        progress=False,
        allow_failures=True,
        cache_dir=str(tmp_path / "cache"),
        **kwargs,
    )


@pytest.fixture(scope="module")
def fault_free(nano_dy, tmp_path_factory):
    """The reference: the same run without faults, and one where the first partition of ``bad`` raises
    (what a partition that kills its worker must come to)."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    without_first = distproc.load_processor(f"{PROCS}:MuonPt", {"fail_dataset": "bad"})
    return run(proc, nano_dy, tmp, workers=1), run(without_first, nano_dy, tmp, workers=1)


def assert_same_bins(got: distproc.RunResult, want: distproc.RunResult) -> None:
    a, b = got.output["muon_pt"], want.output["muon_pt"]
    assert list(a.axes[0]) == list(b.axes[0])
    np.testing.assert_array_equal(a.values(), b.values())
    np.testing.assert_array_equal(a.variances(), b.variances())
    assert got.output["events"] == want.output["events"]


def faulty(**args):
    return distproc.load_processor(f"{FAULTY}:Faulty", args)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("memory", "worker killed: memory limit 1 GB"), ("segfault", "worker died (signal 11)")],
)
def test_partition_that_kills_its_worker_is_a_failed_partition(nano_dy, tmp_path, fault_free, fault, reason):
    # two threads in one worker: the partition sharing the worker with the culprit dies with it, and
    # must be retried, not blamed
    cluster = {"kind": "local", "workers": 1, "threads_per_worker": 2, "memory_limit": "1GB"}
    result = run(faulty(fault=fault, pause=0.2, hog_bytes=2_500_000_000), nano_dy, tmp_path, cluster=cluster)
    [failure] = result.report.failures
    assert (failure.dataset, failure.file, failure.entry_start, failure.entry_stop) == (
        "bad",
        str(nano_dy),
        0,
        10,
    )
    assert reason in failure.exception
    assert result.partial
    assert_same_bins(result, fault_free[1])


def test_partition_that_kills_its_worker_in_a_task_of_several(nano_dy, tmp_path):
    # ``bad``'s first two partitions share a task; the task dies with its worker, both partitions are
    # retried alone, and only the culprit is recorded as failed
    cluster = {"kind": "local", "workers": 1, "threads_per_worker": 2}
    result = run(faulty(fault="segfault"), nano_dy, tmp_path, cluster=cluster, partitions_per_task=2)
    [failure] = result.report.failures
    assert (failure.dataset, failure.file, failure.entry_start, failure.entry_stop) == (
        "bad",
        str(nano_dy),
        0,
        10,
    )
    assert "worker died (signal 11)" in failure.exception
    assert result.report.datasets["bad"].partitions == 3  # its task neighbour (entries 10-20) is kept
    raising = distproc.load_processor(f"{PROCS}:MuonPt", {"fail_dataset": "bad"})
    assert_same_bins(result, run(raising, nano_dy, tmp_path, cluster=cluster, partitions_per_task=2))


def test_workers_killed_four_times(nano_dy, tmp_path, fault_free):
    from distproc.cluster import open_client

    markers = tmp_path / "markers"
    markers.mkdir()
    kills = []
    with open_client(workers=2) as client:

        def killer() -> None:
            seen: set[str] = set()
            deadline = time.monotonic() + 120
            while len(kills) < 4 and time.monotonic() < deadline:
                # the worker processes are this process's children (the nannies run in it); a partition
                # run alone runs in a worker's child. Asked of the OS, not of the cluster losing workers
                workers = {p.pid for p in psutil.Process().children()}
                fresh = [m.name for m in markers.iterdir() if m.name not in seen]
                seen.update(fresh)
                running = [int(m.split("-")[0]) for m in fresh if int(m.split("-")[0]) in workers]
                if running:
                    os.kill(running[-1], signal.SIGKILL)  # in its pause: while it runs a partition
                    kills.append(running[-1])
                time.sleep(0.05)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = run(
            faulty(markers=str(markers), pause=0.5),
            nano_dy,
            tmp_path,
            cluster=client,
            chunksize=4,
            no_workers_timeout=60,
        )
        thread.join()
    assert len(kills) == 4
    assert result.report.failures == []
    assert not result.partial
    assert_same_bins(result, fault_free[0])


def test_all_workers_gone_stops_the_run(nano_dy, tmp_path):
    from distributed import Client, LocalCluster

    markers = tmp_path / "markers"
    markers.mkdir()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):

        def remove_workers() -> None:
            while not any(markers.iterdir()):
                time.sleep(0.05)
            cluster.scale(0)

        threading.Thread(target=remove_workers, daemon=True).start()
        with pytest.raises(distproc.RunStopped, match=r"no worker connected for 3 s") as info:
            run(
                faulty(markers=str(markers), pause=1.0),
                nano_dy,
                tmp_path,
                cluster=client,
                no_workers_timeout=3,
            )
    assert "run the same command again to resume" in str(info.value)


@pytest.mark.parametrize(
    ("setting", "culprit"),
    [
        ("cluster: {kind: local, workers: two}", "cluster option 'workers' must be a whole number"),
        ("cluster: {kind: local, workers: -1}", "got -1"),
        ("cluster: {kind: local, workers: 0}", "got 0"),
        ("cluster: {kind: local, memory_limit: lots}", "cluster option 'memory_limit'"),
        ("cluster: {kind: address, address: 'tcp://127.0.0.1:1', timeout: soon}", "option 'timeout'"),
        ("cluster: 'tpc://127.0.0.1:8786'", "Did you mean 'tcp'?"),
    ],
    ids=["workers-two", "workers-minus-1", "workers-0", "memory-limit-lots", "timeout-soon", "scheme-tpc"],
)
def test_bad_cluster_setting_exits_2_naming_it(tmp_path, nano_dy, setting, culprit):
    config = tmp_path / "run.yaml"
    config.write_text(f'processor: "{PROCS}:MuonPt"\nfileset: {{dy: ["{nano_dy}"]}}\n{setting}\n')
    ran = cli("run", str(config), "--output", "out", cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert culprit in lines[0]
    assert not (tmp_path / "out" / "histograms.root").exists()


def test_misspelled_scheduler_flag_exits_2(tmp_path, nano_dy):
    config = tmp_path / "run.yaml"
    config.write_text(f'processor: "{PROCS}:MuonPt"\nfileset: {{dy: ["{nano_dy}"]}}\n')
    ran = cli("run", str(config), "--output", "out", "--scheduler", "tpc://127.0.0.1:8786", cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert "'tpc://127.0.0.1:8786' has no valid scheme ('tpc'). Did you mean 'tcp'?" in ran.stderr


@pytest.mark.parametrize("workers", [0, -1])
def test_api_worker_count_is_checked(nano_dy, workers):
    import distproc

    with pytest.raises(
        distproc.ConfigError, match=f"'workers' must be a whole number of at least 1, got {workers}"
    ):
        distproc.run(distproc.load_processor(f"{PROCS}:MuonPt"), {"dy": [str(nano_dy)]}, workers=workers)
