"""Partition tasks of several partitions of one file (run option ``partitions_per_task``, issue 16): the
same result as one partition per task, failures, statistics and checkpoint entries still per partition,
progress counted in partitions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import uproot

import distproc
from distproc.config import resolve_run_options
from distproc.engine import build_graph
from distproc.engine.checkpoint import checkpoint_status
from distproc.engine.failures import RepeatWatch
from distproc.engine.graph import task_spans
from distproc.engine.worker import Partial
from distproc.exceptions import ConfigError
from distproc.fileset import normalize_fileset
from distproc.partitioning import plan_partitions
from distproc.report import PartitionFailure, PartitionStat

PROCS = Path(__file__).parent / "procs" / "muon.py"
#: nano_dy.root's 40 events make 8 partitions, nano_tt's 200 make 40.
CHUNKSIZE = 5
PARTITIONS = 48


def fileset(nano_dy: Path, nano_tt: Path) -> dict[str, list[str]]:
    return {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}


def table_of(nano_dy: Path, nano_tt: Path, tmp_path: Path):
    table, _ = plan_partitions(
        normalize_fileset(fileset(nano_dy, nano_tt)), chunksize=CHUNKSIZE, cache_dir=tmp_path / "cache"
    )
    return table


def run(proc, nano_dy, nano_tt, tmp_path, client, **options):
    options.setdefault("progress", False)
    return distproc.run(
        proc,
        fileset(nano_dy, nano_tt),
        cluster=client,
        chunksize=CHUNKSIZE,
        cache_dir=str(tmp_path / "cache"),
        **options,
    )


def test_tasks_hold_consecutive_partitions_of_one_file_shared_evenly(nano_dy, nano_tt, tmp_path):
    table = table_of(nano_dy, nano_tt, tmp_path)
    assert len(table) == PARTITIONS
    spans = task_spans(table, 3)
    # dy's 8 partitions in 3 tasks (2, 3, 3), tt's 40 in 14 (2 or 3 each), in order, covering everything
    assert spans[:3] == [(0, 2), (2, 5), (5, 8)]
    assert len(spans) == 3 + 14
    assert [lo for lo, _ in spans[1:]] == [hi for _, hi in spans[:-1]]
    assert (spans[0][0], spans[-1][1]) == (0, PARTITIONS)
    for lo, hi in spans:
        assert hi - lo in (2, 3)
        assert len({table.file_index[i] for i in range(lo, hi)}) == 1
    assert task_spans(table, 1) == [(i, i + 1) for i in range(PARTITIONS)]

    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    graph, keys, final = build_graph(proc, table, split_every=8, per_task=3)
    assert [(lo, hi) for _, lo, hi in keys] == spans
    # 17 tasks, a reduction of 3 + 1 nodes, the processor and the table
    assert len(graph) == 17 + 3 + 1 + 2
    assert final in graph


def test_partitions_per_task_option():
    assert resolve_run_options()["partitions_per_task"] is None  # chosen by the run's size
    assert resolve_run_options(partitions_per_task=8)["partitions_per_task"] == 8
    with pytest.raises(ConfigError, match="partitions_per_task must be at least 1, got 0"):
        resolve_run_options(partitions_per_task=0)
    with pytest.raises(ConfigError, match=r"partitions_per_task must be int or null, got 2\.5"):
        resolve_run_options(partitions_per_task=2.5)


def test_repeat_watch_counts_partitions_not_tasks():
    failed = PartitionFailure("dy", "dy.root", "Events", 0, 5, "KeyError: 'x'", "")
    watch = RepeatWatch(partitions=100)
    assert watch.see(Partial(failures=[failed] * 4))  # one task of 4 identical failures is enough
    assert watch.reason() == (
        "stopped early: the first 4 partitions to finish all failed with the same exception, "
        "so the other 96 were cancelled"
    )
    mixed = RepeatWatch(partitions=100)
    stat = PartitionStat(index=1, dataset="dy", events=5, bytes_read=0, seconds=0.0, worker="w")
    assert not mixed.see(Partial(stats=[stat], failures=[failed]))
    assert not mixed.see(Partial(failures=[failed] * 2))
    assert not mixed.watching


def _abs_weight_hist(path: Path) -> np.ndarray:
    """Per bin of MuonPt's histogram, the sum of |weight| (what bounds a reordered sum's rounding)."""
    arrays = uproot.open(path)["Events"].arrays(["Muon_pt", "genWeight"], library="np")
    pt = np.concatenate(arrays["Muon_pt"])
    weight = np.repeat(arrays["genWeight"], [len(x) for x in arrays["Muon_pt"]])
    return np.histogram(pt, bins=20, range=(0, 200), weights=np.abs(weight))[0]


@pytest.mark.cluster
def test_grouped_tasks_give_the_result_of_one_partition_per_task(client, nano_dy, nano_tt, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    single = run(proc, nano_dy, nano_tt, tmp_path, client, partitions_per_task=1)
    grouped = run(proc, nano_dy, nano_tt, tmp_path, client, partitions_per_task=4)
    assert grouped.output["events"] == single.output["events"] == 240
    for report in (single.report, grouped.report):
        assert (report.datasets["dy"].partitions, report.datasets["tt"].partitions) == (8, 40)
        assert report.failures == []
    # the same per-partition histograms added in another order: each sum of P partition sums is within
    # (P - 1) u sum|w| of the exact one, so the two differ by at most twice that
    for dataset, path, parts in (("dy", nano_dy, 8), ("tt", nano_tt, 40)):
        a, b = (r.output["muon_pt"][{"dataset": dataset}] for r in (grouped, single))
        bound = 2 * (parts - 1) * 2.0**-53 * _abs_weight_hist(path)
        assert np.all(np.abs(a.values() - b.values()) <= bound), (a.values(), b.values())


@pytest.mark.cluster
def test_a_failing_partition_does_not_take_its_task_neighbours_down(client, nano_dy, nano_tt, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt", {"fail_dataset": "dy"})
    result = run(proc, nano_dy, nano_tt, tmp_path, client, partitions_per_task=4, allow_failures=True)
    [failure] = result.report.failures
    assert (failure.dataset, failure.file, failure.entry_start, failure.entry_stop) == (
        "dy",
        str(nano_dy),
        0,
        5,
    )
    assert "deliberate failure in dy" in failure.exception
    # dy's partitions 1 to 3 ran in the failed partition's task and are kept
    dy = result.report.datasets["dy"]
    assert (dy.partitions, dy.partitions_failed) == (7, 1)
    assert result.output["events"] == 240 - 5
    assert result.partial


@pytest.mark.cluster
def test_checkpoint_of_a_task_with_a_failed_partition_resumes_only_that_partition(
    client, nano_dy, nano_tt, tmp_path
):
    marker = tmp_path / "fail"
    marker.touch()
    proc = distproc.load_processor(f"{PROCS}:MuonPtFailingWhile", {"marker": str(marker)})
    ckpt = tmp_path / "ckpt"
    options = {"partitions_per_task": 4, "checkpoint": ckpt}
    first = run(proc, nano_dy, nano_tt, tmp_path, client, allow_failures=True, **options)
    [failure] = first.report.failures
    assert (failure.dataset, failure.entry_start) == ("dy", 0)
    spans = {tuple(int(x) for x in p.name.split("-")[:2]) for p in (ckpt / "entries").iterdir()}
    # the failed partition's task saved its three other partitions one by one, nothing covers partition 0
    assert {(1, 2), (2, 3), (3, 4)} <= spans
    assert all(lo > 0 for lo, _ in spans)
    assert checkpoint_status(ckpt) == (PARTITIONS - 1, PARTITIONS)

    marker.unlink()
    again = run(proc, nano_dy, nano_tt, tmp_path, client, **options)
    assert again.report.resumed_partitions == PARTITIONS - 1
    assert again.report.failures == []
    reference = run(proc, nano_dy, nano_tt, tmp_path, client, partitions_per_task=4)
    # resumed partitions are added in the order of a run without faults: equal bit for bit
    h, ref = again.output["muon_pt"], reference.output["muon_pt"]
    np.testing.assert_array_equal(h.values(), ref.values())
    np.testing.assert_array_equal(h.variances(), ref.variances())
    assert again.output["events"] == 240
    assert len(list((ckpt / "entries").iterdir())) == 1  # one entry for the whole run


@pytest.mark.cluster
@pytest.mark.parametrize("ledger", [True, False])
def test_progress_counts_partitions(client, nano_dy, nano_tt, tmp_path, capfd, monkeypatch, ledger):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    if ledger:  # the bar follows the scheduler's ledger
        run(proc, nano_dy, nano_tt, tmp_path, client, partitions_per_task=4, progress=True)
    else:  # a scheduler that cannot import distproc: the bar follows a future per task

        def refuse(*args, **kwargs):
            raise ModuleNotFoundError("No module named 'distproc'")

        monkeypatch.setattr(client, "register_plugin", refuse)
        with pytest.warns(UserWarning, match="are not counted"):
            run(proc, nano_dy, nano_tt, tmp_path, client, partitions_per_task=4, progress=True)
    err = capfd.readouterr().err
    assert re.search(rf"\b{PARTITIONS}/{PARTITIONS} partitions\b", err), err
    assert "240/240 events" in err
