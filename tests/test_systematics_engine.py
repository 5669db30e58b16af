"""Shape and weight systematics through the run engine: a real LocalCluster and real ROOT files.

The processors are in tests/procs/systematics_proc.py: a weighted HT histogram of the jets with
pT > 30 GeV with a ``variation`` axis holding weight variations (a BinnedLookup jet SF and the
correctionlib ``lepton_sf``) and shape variations (JES Scale +-3 %, JER Smear 5 %, a correctionlib JES up).
The reference here recomputes it from plain uproot arrays with loops over the flattened objects; only
the random numbers come from distproc (``deterministic_normal``).
"""

from __future__ import annotations

from pathlib import Path

import correctionlib
import numpy as np
import pytest
import uproot

import distproc
from distproc.cluster import open_client
from distproc.engine import build_graph
from distproc.fileset import normalize_fileset
from distproc.partitioning import plan_partitions
from distproc.samples import make_sample
from distproc.systematics import deterministic_normal

PROCS = Path(__file__).parent / "procs" / "systematics_proc.py"
CORRECTIONS = Path(__file__).resolve().parents[1] / "processors" / "data" / "corrections.json"
pytestmark = pytest.mark.cluster

# Mirrors tests/procs/systematics_proc.py (kept separate so the reference does not import the processor).
JET_PT_MIN = 30.0
MUON_PT_MIN = 10.0
HT_BINS = (40, 0.0, 1200.0)
JET_SF_EDGES = np.array([30.0, 50.0, 80.0, 120.0, 200.0, np.inf])
JET_SF = {
    "nominal": [0.97, 0.98, 1.0, 1.01, 1.03],
    "up": [0.99, 1.0, 1.015, 1.03, 1.06],
    "down": [0.95, 0.96, 0.985, 0.99, 1.0],
}
WEIGHT_VARIATIONS = ["jet_sfDown", "jet_sfUp", "lepton_sfDown", "lepton_sfUp"]
SHAPE_VARIATIONS = ["jes_up", "jes_down", "jer", "jes_corr_up"]
EXPECTED_AXIS = ["nominal", *WEIGHT_VARIATIONS, *SHAPE_VARIATIONS]


def processor(**args):
    return distproc.load_processor(f"{PROCS}:JetHTSystematics", args)


@pytest.fixture(scope="module")
def client1():
    with open_client(workers=1) as c:
        yield c


@pytest.fixture(scope="module")
def ttbar(tmp_path_factory) -> Path:
    """A generated ttbar sample of 20k events (one file)."""
    info = make_sample("ttbar", 20_000, tmp_path_factory.mktemp("ttbar"), seed=11)
    return Path(info.files[0])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def run(proc, path: Path, cache: str, **kwargs):
    result = distproc.run(proc, {"tt": [str(path)]}, progress=False, cache_dir=cache, **kwargs)
    assert not result.partial, result.report.failures
    return result


@pytest.fixture(scope="module")
def generated_runs(client, client1, ttbar, cache):
    """The processor over the generated sample: 20 chunks on 2 workers and 1 chunk on 1 worker."""
    proc = processor()
    return {
        "chunks1000_workers2": run(proc, ttbar, cache, cluster=client, chunksize=1000),
        "chunks100000_workers1": run(proc, ttbar, cache, cluster=client1, chunksize=100_000),
    }


@pytest.fixture(scope="module")
def real_runs(client, client1, nano_tt, cache):
    """The processor over the real CMS ttbar file (200 events): 4 chunks on 2 workers, 1 chunk on 1 worker.

    (Few chunks: every chunk of a real NanoAOD file re-reads the metadata of its ~650 branches.)
    """
    proc = processor()
    return {
        "chunks50_workers2": run(proc, nano_tt, cache, cluster=client, chunksize=50),
        "chunks100000_workers1": run(proc, nano_tt, cache, cluster=client1, chunksize=100_000),
    }


# ------------------------------------------------------------------------------------- the reference


def _flat(jagged: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened values, the event of each object and its index within the event."""
    counts = np.array([len(x) for x in jagged], dtype=np.int64)
    values = np.concatenate(list(jagged)) if len(jagged) else np.zeros(0)
    event = np.repeat(np.arange(len(jagged)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.arange(len(values)) - np.repeat(starts, counts)
    return values, event, index


def _bin_index(x: np.ndarray) -> np.ndarray:
    """Flow-view index of a Regular axis, computed as boost-histogram does."""
    n, lo, hi = HT_BINS
    z = (x - lo) / (hi - lo)
    index = np.where(z < 0, -1, np.where(z >= 1, n, np.floor(z * n)))
    return index.astype(np.int64) + 1


def reference(path: Path, min_jets: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{category: (values, variances)}`` (flow bins included) for the nominal pass, its weight variations,
    ``jes_up`` and ``jer``, from uproot arrays and loops over the objects."""
    tree = uproot.open(path)["Events"]
    arrays = tree.arrays(
        ["run", "luminosityBlock", "event", "genWeight", "Jet_pt", "Muon_pt", "Muon_eta"], library="np"
    )
    n_events = len(arrays["event"])
    jet_pt32, jet_event, jet_index = _flat(arrays["Jet_pt"])
    jet_pt = jet_pt32.astype(np.float64)
    muon_pt, muon_event, _ = _flat(arrays["Muon_pt"])
    muon_eta, _, _ = _flat(arrays["Muon_eta"])

    # lepton_sf per event: the product over muons with pT > 10 GeV, evaluated with correctionlib directly
    lepton = correctionlib.CorrectionSet.from_file(str(CORRECTIONS))["lepton_sf"]
    lepton_sf = {}
    for systematic in ("nominal", "up", "down"):
        sf = lepton.evaluate(muon_pt.astype(np.float64), np.abs(muon_eta.astype(np.float64)), systematic)
        per_event = np.ones(n_events)
        for i in range(len(muon_pt)):
            if muon_pt[i] > MUON_PT_MIN:
                per_event[muon_event[i]] *= sf[i]
        lepton_sf[systematic] = per_event

    # the JER random numbers: one per jet from (run, lumi, event, index in the event)
    z = deterministic_normal(
        arrays["run"][jet_event],
        arrays["luminosityBlock"][jet_event],
        arrays["event"][jet_event],
        jet_index,
        name="jer",
    )
    varied_pt = {
        "nominal": jet_pt,
        "jes_up": jet_pt * (1.0 + 0.03),
        "jer": jet_pt * np.maximum(1.0 + 0.05 * z, 0.0),
    }
    genweight = arrays["genWeight"].astype(np.float64)
    out = {}
    for variation, pt in varied_pt.items():
        ht = np.zeros(n_events)
        n_jets = np.zeros(n_events, dtype=np.int64)
        jet_sf = {k: np.ones(n_events) for k in JET_SF}
        for i in range(len(pt)):
            if pt[i] > JET_PT_MIN:
                e = jet_event[i]
                ht[e] += pt[i]
                n_jets[e] += 1
                b = min(max(int(np.searchsorted(JET_SF_EDGES, pt[i], side="right")) - 1, 0), 4)
                for k in JET_SF:
                    jet_sf[k][e] *= JET_SF[k][b]
        weights = {"nominal": genweight * jet_sf["nominal"] * lepton_sf["nominal"]}
        if variation == "nominal":
            for d in ("up", "down"):
                name = d.capitalize()
                weights[f"jet_sf{name}"] = genweight * jet_sf[d] * lepton_sf["nominal"]
                weights[f"lepton_sf{name}"] = genweight * jet_sf["nominal"] * lepton_sf[d]
        selected = n_jets >= min_jets
        index = _bin_index(ht[selected])
        for name, w in weights.items():
            category = variation if name == "nominal" else name
            w = w[selected]
            values = np.bincount(index, weights=w, minlength=HT_BINS[0] + 2)
            variances = np.bincount(index, weights=w * w, minlength=HT_BINS[0] + 2)
            out[category] = (values, variances)
    return out


def assert_same_hist(a, b, rtol: float = 1e-12) -> None:
    assert list(a.axes["variation"]) == list(b.axes["variation"])
    np.testing.assert_allclose(a.values(flow=True), b.values(flow=True), rtol=rtol, atol=0)
    np.testing.assert_allclose(a.variances(flow=True), b.variances(flow=True), rtol=rtol, atol=0)


# ------------------------------------------------------------------------------------------------ tests


def test_variation_axis_names_in_order(generated_runs, real_runs):
    for result in (*generated_runs.values(), *real_runs.values()):
        h = result.output["ht"]
        assert [a.name for a in h.axes] == ["variation", "ht"]
        assert list(h.axes["variation"]) == EXPECTED_AXIS


def test_generated_sample_identical_across_chunks_and_workers(generated_runs, client, client1):
    assert len(client.scheduler_info()["workers"]) == 2
    assert len(client1.scheduler_info()["workers"]) == 1
    many, one = generated_runs["chunks1000_workers2"], generated_runs["chunks100000_workers1"]
    assert many.report.partitions == 20
    assert one.report.partitions == 1
    assert many.report.events == one.report.events == 20_000
    assert many.output["events"] == one.output["events"]
    assert_same_hist(many.output["ht"], one.output["ht"])


def test_real_file_identical_across_chunks_and_workers(real_runs):
    many, one = real_runs["chunks50_workers2"], real_runs["chunks100000_workers1"]
    assert many.report.partitions == 4
    assert one.report.partitions == 1
    assert many.output["events"] == one.output["events"]
    assert_same_hist(many.output["ht"], one.output["ht"])


def _check_reference(h, path: Path) -> None:
    expected = reference(path)
    assert set(expected) == {"nominal", *WEIGHT_VARIATIONS, "jes_up", "jer"}
    for category, (values, variances) in expected.items():
        got = h[{"variation": category}]
        np.testing.assert_allclose(got.values(flow=True), values, rtol=1e-9, atol=1e-9, err_msg=category)
        np.testing.assert_allclose(
            got.variances(flow=True), variances, rtol=1e-9, atol=1e-9, err_msg=category
        )
    nominal = h[{"variation": "nominal"}].values(flow=True)
    for category in ("jes_up", "jer", "jet_sfUp", "lepton_sfUp"):
        assert not np.allclose(h[{"variation": category}].values(flow=True), nominal), category


def test_generated_sample_equals_numpy_reference(generated_runs, ttbar):
    _check_reference(generated_runs["chunks1000_workers2"].output["ht"], ttbar)


def test_real_file_equals_numpy_reference(real_runs, nano_tt):
    _check_reference(real_runs["chunks50_workers2"].output["ht"], nano_tt)


def test_axis_order_survives_an_empty_first_chunk(client, nano_dy, cache):
    # Real DY event 0 has two jets above 30 GeV and a third at 29.6 GeV: with min_jets=3 the nominal pass
    # of a one-event first chunk selects nothing while jes_up selects it.
    # Events 0-2: one chunk each, or one chunk of three.
    proc = processor(min_jets=3)
    small = run(proc, nano_dy, cache, cluster=client, chunksize=1, max_chunks=3).output["ht"]
    whole = run(proc, nano_dy, cache, cluster=client, chunksize=3, max_chunks=1).output["ht"]
    assert whole[{"variation": "nominal"}].sum().value != 0.0
    assert list(whole.axes["variation"]) == EXPECTED_AXIS
    assert_same_hist(small, whole)


def test_graph_size_does_not_grow_with_variations(ttbar, cache):
    table, _ = plan_partitions(normalize_fileset({"tt": [str(ttbar)]}), chunksize=1000, cache_dir=cache)
    sizes = {}
    for k in (0, 1, 4, 8):
        proc = distproc.load_processor(f"{PROCS}:JetHTScan", {"k": k})
        assert len(proc.shape_variations.names()) == k + 1
        graph, parts, _ = build_graph(proc, table, schema="nanoaod", retries=0, split_every=8)
        assert len(parts) == 20
        sizes[k] = len(graph)
    # 20 partitions + 3 + 1 reduction nodes + the processor and table keys, for every K
    assert sizes == dict.fromkeys((0, 1, 4, 8), 20 + 3 + 1 + 2)


def test_variations_read_the_input_once(client, ttbar, cache):
    # K variations rerun selection and fill on the chunk already in memory: the bytes read do not grow
    read = {}
    for k in (0, 8):
        proc = distproc.load_processor(f"{PROCS}:JetHTScan", {"k": k})
        result = run(proc, ttbar, cache, cluster=client, chunksize=100_000)
        assert len(result.output["ht"].axes["variation"]) == 1 + len(WEIGHT_VARIATIONS) + k
        read[k] = result.report.datasets["tt"].bytes_read
    assert read[0] > 0
    assert read[8] == read[0]
