"""The run engine against a real distributed LocalCluster and real ROOT files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import distproc
from distproc.engine import build_graph
from distproc.fileset import normalize_fileset
from distproc.partitioning import _CACHE_NAME, plan_partitions

PROCS = Path(__file__).parent / "procs" / "muon.py"
pytestmark = pytest.mark.cluster


@pytest.fixture
def fileset(nano_dy, nano_tt):
    return {
        "dy": {"files": {str(nano_dy): "Events"}, "metadata": {"xsec": 6077.2}},
        "tt": {"files": [str(nano_tt)], "metadata": {"xsec": 729.8}},
    }


def run(proc, fileset, tmp_path, **kwargs):
    kwargs.setdefault("progress", False)
    return distproc.run(proc, fileset, cache_dir=str(tmp_path / "cache"), **kwargs)


def reference_muon_pt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent computation with plain uproot + numpy."""
    arrays = uproot.open(path)["Events"].arrays(["Muon_pt", "genWeight"], library="np")
    pt = np.concatenate(arrays["Muon_pt"])
    weight = np.repeat(arrays["genWeight"], [len(x) for x in arrays["Muon_pt"]])
    values, _ = np.histogram(pt, bins=20, range=(0, 200), weights=weight)
    variances, _ = np.histogram(pt, bins=20, range=(0, 200), weights=weight**2)
    return values, variances


def assert_muon_pt_equals_reference(h, paths: dict[str, Path]) -> None:
    """*h* (MuonPt's histogram) holds, per dataset, what plain uproot + numpy give for its file."""
    for dataset, path in paths.items():
        values, variances = reference_muon_pt(path)
        np.testing.assert_allclose(h[{"dataset": dataset}].values(), values, rtol=1e-6)
        np.testing.assert_allclose(h[{"dataset": dataset}].variances(), variances, rtol=1e-6)


def test_histograms_equal_independent_computation(client, fileset, nano_dy, nano_tt, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    result = run(proc, fileset, tmp_path, cluster=client, chunksize=15)
    assert_muon_pt_equals_reference(result.output["muon_pt"], {"dy": nano_dy, "tt": nano_tt})
    assert result.output["events"] == 240
    assert result.output["metadata"] == {("dy", 6077.2), ("tt", 729.8)}  # metadata reached the processor
    report = result.report
    assert not result.partial
    assert report.datasets["dy"].events == 40
    assert report.datasets["tt"].events == 200
    assert report.datasets["dy"].partitions == 3
    assert report.datasets["tt"].partitions == 13  # coffea's rule: round(200 / 15) partitions
    assert report.partitions == 16
    assert set(report.partition_seconds) == {"min", "median", "p95", "max", "mean"}


def test_one_vs_many_partitions_and_workers(client, fileset, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    many = run(proc, fileset, tmp_path, cluster=client, chunksize=7).output
    one = run(proc, fileset, tmp_path, workers=1, chunksize=1000).output
    assert many["events"] == one["events"]
    np.testing.assert_allclose(many["muon_pt"].values(), one["muon_pt"].values(), rtol=1e-12)
    np.testing.assert_allclose(many["muon_pt"].variances(), one["muon_pt"].variances(), rtol=1e-12)


def test_only_touched_branches_are_read(client, nano_dy, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    result = run(proc, {"dy": [str(nano_dy)]}, tmp_path, cluster=client)
    tree = uproot.open(nano_dy)["Events"]
    used = sum(tree[b].compressed_bytes for b in ("Muon_pt", "nMuon", "genWeight"))
    read = result.report.datasets["dy"].bytes_read
    assert used <= read < nano_dy.stat().st_size / 3


def test_unmodified_coffea_processor(client, fileset, nano_tt, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:CoffeaJets")
    out = run(proc, fileset, tmp_path, cluster=client, chunksize=50).output
    assert out["tt"]["cutflow"]["all"] == 200
    assert out["dy"]["cutflow"]["all"] == 40
    jets = uproot.open(nano_tt)["Events"]["Jet_pt"].array()
    lead = ak.fill_none(ak.firsts(jets[jets > 20]), -1.0)
    ref, _ = np.histogram(ak.to_numpy(lead), bins=30, range=(0, 300))
    np.testing.assert_array_equal(out["tt"]["lead_jet_pt"].values(), ref)


def test_physlite_schema(client, physlite, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:ElectronCount")
    out = run(
        proc,
        {"atlas": {"files": {str(physlite): "CollectionTree"}}},
        tmp_path,
        cluster=client,
        schema="physlite",
        chunksize=40,
    ).output
    pt = uproot.open(physlite)["CollectionTree"]["AnalysisElectronsAuxDyn.pt"].array()
    assert out["n_electrons"] == int(ak.sum(ak.num(pt)))
    # float32 sums in another order (per partition, then across): any order is within (n - 1) u of the sum
    n = int(ak.sum(ak.num(pt)))
    exact = float(np.sum(ak.to_numpy(ak.flatten(pt)), dtype=np.float64))
    assert out["sum_pt"] == pytest.approx(exact, rel=(n - 1) * 2.0**-24)


def test_graph_is_linear_in_partitions(nano_tt, tmp_path):
    table, _ = plan_partitions(normalize_fileset({"tt": [str(nano_tt)]}), chunksize=2, cache_dir=tmp_path)
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    graph, parts, final = build_graph(proc, table, schema="nanoaod", retries=0, split_every=8)
    assert len(parts) == 100
    # partitions + 13 + 2 + 1 reduction nodes + the processor and table keys, whatever the processor fills
    assert len(graph) == 100 + 13 + 2 + 1 + 2
    assert final in graph


def test_preprocessing_cache_avoids_reopening(nano_dy, tmp_path, monkeypatch):
    datasets = normalize_fileset({"dy": [str(nano_dy)]})
    first, _ = plan_partitions(datasets, chunksize=10, cache_dir=tmp_path)
    assert (tmp_path / _CACHE_NAME).exists()

    def must_not_open(*args, **kwargs):
        raise AssertionError("file reopened despite the cache")

    monkeypatch.setattr("distproc.partitioning.count_entries_and_uuid", must_not_open)
    second, _ = plan_partitions(datasets, chunksize=10, cache_dir=tmp_path)
    assert second == first
    assert len(second) == 4
    # a changed file (new size/mtime) is counted again
    copy = tmp_path / "dy.root"
    shutil.copy(nano_dy, copy)
    with pytest.raises(AssertionError, match="reopened"):
        plan_partitions(normalize_fileset({"dy": [str(copy)]}), chunksize=10, cache_dir=tmp_path)


def test_max_chunks_limits_partitions(client, fileset, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    result = run(proc, fileset, tmp_path, cluster=client, chunksize=10, max_chunks=2)
    assert result.report.partitions == 4
    assert result.output["events"] == 40


def test_save_and_load_round_trip(client, fileset, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt")
    result = run(proc, fileset, tmp_path, cluster=client)
    out = distproc.save(result, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        ".outputs",
        "histograms.root",
        "output.pkl",
        "report.json",
    ]
    loaded = distproc.load(out)
    assert loaded.report.events == result.report.events
    assert not loaded.partial
    np.testing.assert_array_equal(loaded.output["muon_pt"].values(), result.output["muon_pt"].values())
    with uproot.open(out / "histograms.root") as f:
        for dataset in ("dy", "tt"):
            th1 = f[f"muon_pt/{dataset}"]
            h = result.output["muon_pt"][{"dataset": dataset}]
            np.testing.assert_allclose(th1.values(), h.values())
            np.testing.assert_allclose(th1.variances(), h.variances())
        assert "muon_pt" in f["_index"]


@pytest.mark.parametrize(
    ("sample", "tree", "schema"),
    [
        ("nano_dy", "Events", "nanoaod"),
        ("nano_tt", "Events", "nanoaod"),
        ("physlite", "CollectionTree", "physlite"),
    ],
)
def test_cached_schema_events_equal_from_root(request, sample, tree, schema):
    """partition_events builds NanoEvents with a schema cached per file: the same events as coffea's
    from_root for every partition, each with its own metadata (which names the partition), and one
    schema built for all of them."""
    from coffea.nanoevents import NanoEventsFactory

    from distproc.engine.state import WORKER
    from distproc.reading import partition_events, schema_class

    path = str(request.getfixturevalue(sample))
    WORKER.clear("schema")  # an earlier in-process read of this file may have cached its schema
    built = WORKER.built("schema")
    file = uproot.open(path)
    n = file[tree].num_entries
    ranges = [(0, n // 2), (n // 2, n), (0, n // 2)]
    # the third partition repeats the first's entries for another dataset: its metadata and type are
    # compared, its values are the first's
    for i, ((start, stop), dataset) in enumerate(zip(ranges, ["a", "b", "b"], strict=True)):
        with warnings.catch_warnings():  # the files' dropped cross-references, uninterpretable branches
            warnings.simplefilter("ignore")
            metadata = {"dataset": dataset, "entrystart": start, "entrystop": stop}
            events, _ = partition_events(path, tree, start, stop, schema=schema, metadata=metadata, file=file)
            ref = NanoEventsFactory.from_root(
                file,
                treepath=tree,
                entry_start=start,
                entry_stop=stop,
                schemaclass=schema_class(schema),
                metadata=dict(metadata),
                mode="virtual",
            ).events()
        assert events.metadata == {**ref.metadata, "fileuuid": str(file.file.uuid)}  # as coffea's Runner
        assert (events.metadata["dataset"], events.metadata["entrystart"]) == (dataset, start)
        assert str(events.type) == str(ref.type)
        if i == 2:
            continue
        compared = 0
        for field in ref.fields:
            try:
                want = ak.materialize(ref[field])
            except ValueError as err:  # coffea's own behaviours refuse a few PHYSLITE collections
                with pytest.raises(type(err)):
                    ak.materialize(events[field])
                continue
            assert ak.array_equal(ak.materialize(events[field]), want, equal_nan=True), field
            compared += 1
        assert compared >= len(ref.fields) // 2
    assert WORKER.built("schema") == built + 1


def _processors_held() -> list[str]:
    """The processor class of each run state this worker process holds."""
    from distproc.engine.state import WORKER

    return sorted(
        type(s.loaded_processor).__name__ for s in WORKER.states() if s.loaded_processor is not None
    )


def test_two_runs_at_once_on_one_scheduler(client, fileset, nano_dy, nano_tt, tmp_path):
    """Two runs sharing a scheduler (as on an ``address`` or ``gateway`` cluster) both give the right
    result, and the workers hold both runs' state side by side (neither evicts the other's)."""
    import concurrent.futures

    jets = distproc.load_processor(f"{PROCS}:CoffeaJets")
    alone = run(jets, {"tt": [str(nano_tt)]}, tmp_path / "alone", cluster=client, chunksize=20).output
    address = client.scheduler.address
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        muons = pool.submit(
            run,
            distproc.load_processor(f"{PROCS}:MuonPt"),
            fileset,
            tmp_path / "a",
            cluster=address,
            chunksize=15,
        )
        both = pool.submit(run, jets, {"tt": [str(nano_tt)]}, tmp_path / "b", cluster=address, chunksize=10)
        muons, both = muons.result(), both.result()
    assert not muons.partial
    assert not both.partial
    assert_muon_pt_equals_reference(muons.output["muon_pt"], {"dy": nano_dy, "tt": nano_tt})
    assert muons.output["events"] == 240
    assert both.output["tt"]["cutflow"] == alone["tt"]["cutflow"]
    np.testing.assert_array_equal(
        both.output["tt"]["lead_jet_pt"].values(), alone["tt"]["lead_jet_pt"].values()
    )
    held = client.run(_processors_held)
    assert any({"CoffeaJets", "MuonPt"} <= set(names) for names in held.values()), held
