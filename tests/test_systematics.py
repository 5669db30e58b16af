"""Tests of distproc.systematics: lookups, corrections, weight and shape variations, merging.

Every lookup is checked against an independent NumPy reference (``np.digitize`` on flattened arrays,
written here), corrections against correctionlib's own ``evaluate`` on flat arrays, and smearing for
independence of chunking and re-runs on the real NanoAOD samples.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import math
import pickle
import shutil
from pathlib import Path

import awkward as ak
import correctionlib
import dask_awkward as dak
import hist
import numpy as np
import pytest
from coffea.analysis_tools import Weights
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

import distproc.systematics as systematics
from distproc.engine.state import WORKER, current_state
from distproc.exceptions import SystematicsError
from distproc.systematics import (
    BinnedLookup,
    BinningError,
    Correction,
    CorrectionNotFoundError,
    DuplicateVariationError,
    InputsError,
    Scale,
    ShapeVariations,
    Smear,
    deterministic_normal,
    merge_variation_outputs,
    run_variations,
    weight_variations,
)
from distproc.systematics import correction as correction_module

# NanoAODSchema warns about cross-reference targets (e.g. Electron_photonIdx => Photon) that the small
# real test files do not contain; harmless for these tests.
pytestmark = pytest.mark.filterwarnings("ignore:Missing cross-reference target:RuntimeWarning")

REPO = Path(__file__).resolve().parents[1]
CORRECTIONS = REPO / "processors" / "data" / "corrections.json"

PT_EDGES = [20.0, 30.0, 50.0, 80.0, 150.0, 400.0]
ETA_EDGES = [0.0, 0.8, 1.6, 2.4]
RNG = np.random.default_rng(20261127)
TABLE = RNG.uniform(0.8, 1.2, size=(5, 3))
UP = TABLE + 0.05
DOWN = TABLE - 0.05


def _events(path: Path, mode: str = "eager", start: int | None = None, stop: int | None = None) -> ak.Array:
    return NanoEventsFactory.from_root(
        {str(path): "Events"},
        schemaclass=NanoAODSchema,
        mode=mode,
        entry_start=start,
        entry_stop=stop,
    ).events()


@pytest.fixture(scope="module")
def tt_events(nano_tt: Path) -> ak.Array:
    """Virtual-mode NanoEvents (reads only the branches a test touches)."""
    return _events(nano_tt, "virtual")


@pytest.fixture(scope="module")
def tt_eager(nano_tt: Path) -> ak.Array:
    """Eager-mode NanoEvents (reads every branch up front: a few seconds, so once per module)."""
    return _events(nano_tt, "eager")


@pytest.fixture(scope="module")
def dy_events(nano_dy: Path) -> ak.Array:
    return _events(nano_dy, "virtual")


def _sf(**kwargs: object) -> BinnedLookup:
    return BinnedLookup(
        edges=[PT_EDGES, ETA_EDGES],
        values=TABLE,
        variations={"up": UP, "down": DOWN},
        inputs=("pt", "abseta"),
        name="jet_sf",
        **kwargs,
    )


def _reference(
    inputs: list[np.ndarray],
    edges: list[list[float]],
    table: np.ndarray,
    *,
    flow: str = "clamp",
    flow_value: float = 1.0,
    nan_value: float = math.nan,
) -> np.ndarray:
    """Independent reference: ``np.digitize`` per axis on flat values, then explicit flow/NaN rules."""
    index = []
    outside = np.zeros(len(inputs[0]), dtype=bool)
    for x, e in zip(inputs, edges, strict=True):
        i = np.digitize(x, e) - 1  # edges[i] <= x < edges[i + 1]
        nbins = len(e) - 1
        outside |= (i < 0) | (i >= nbins)
        index.append(np.clip(i, 0, nbins - 1))
    out = table[tuple(index)]
    if flow == "fill":
        out = np.where(outside, flow_value, out)
    nan = np.zeros(len(inputs[0]), dtype=bool)
    for x in inputs:
        nan |= np.isnan(x)
    return np.where(nan, nan_value, out)


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None)).astype(np.float64)


def _generated_jets(n_events: int = 2000, seed: int = 7) -> ak.Array:
    """Jagged jets with pt/eta spanning under- and overflow, some NaN and negative pt."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=n_events)
    n = int(counts.sum())
    pt = rng.exponential(60.0, size=n) + rng.uniform(-5.0, 5.0, size=n)
    pt[rng.random(n) < 0.01] = np.nan
    eta = rng.uniform(-3.0, 3.0, size=n)
    return ak.unflatten(ak.zip({"pt": pt, "eta": eta}), counts)


# --------------------------------------------------------------------------------------- binned lookups


@pytest.mark.parametrize("variation", ["nominal", "up", "down"])
@pytest.mark.parametrize("flow", ["clamp", "fill"])
def test_lookup_matches_numpy_reference_on_generated_data(variation: str, flow: str) -> None:
    jets = _generated_jets()
    sf = _sf(flow=flow, flow_value=0.5)
    got = sf(jets.pt, abs(jets.eta), variation=variation)
    assert ak.all(ak.num(got) == ak.num(jets))
    table = {"nominal": TABLE, "up": UP, "down": DOWN}[variation]
    want = _reference(
        [_flat(jets.pt), np.abs(_flat(jets.eta))], [PT_EDGES, ETA_EDGES], table, flow=flow, flow_value=0.5
    )
    np.testing.assert_array_equal(_flat(got), want)


EDGE_AXES = [
    [-math.inf, 20.0, 30.0, 50.0, 80.0, 120.0, math.inf],  # exact in float32
    [0.0, 0.1, 0.7, 1.3, 2.4],  # 0.1, 0.7, ... are not float32 numbers
    list(np.linspace(-5.0, 5.0, 41)),  # 40 bins: binary search
]


def _edge_case(flow: str, dtype: str) -> tuple[BinnedLookup, list[np.ndarray], np.ndarray]:
    """A 3-D lookup of 960 bins, inputs on, just above and just below every edge, and the reference."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(6, 4, 40))
    sf = BinnedLookup(EDGE_AXES, table, flow=flow, flow_value=-1.0, name="edges")
    inputs = []
    for edges in EDGE_AXES:
        finite = np.array([e for e in edges if math.isfinite(e)])
        near = [
            finite,
            np.nextafter(finite, math.inf),
            np.nextafter(finite, -math.inf),
            finite.astype(np.float32),
        ]
        pool = np.concatenate([*near, rng.normal(0, 60, 200), [math.nan, math.inf, -math.inf]])
        x = rng.choice(pool, size=5000)
        inputs.append(
            x.astype(dtype) if dtype != "int32" else np.nan_to_num(x, posinf=999, neginf=-999).astype(dtype)
        )
    want = _reference([x.astype(np.float64) for x in inputs], EDGE_AXES, table, flow=flow, flow_value=-1.0)
    return sf, inputs, want


@pytest.mark.parametrize("flow", ["clamp", "fill"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_lookup_bins_equal_digitize_at_and_around_every_edge(flow: str, dtype: str) -> None:
    """Few-bin axes (comparison sums, float32 kept) and many-bin axes (binary search) both equal
    np.digitize in float64, for values on, just above and just below each edge, including edges that are
    not exact float32 numbers and an N-D table of more than 256 bins."""
    sf, inputs, want = _edge_case(flow, dtype)
    np.testing.assert_array_equal(sf(*inputs), want)


@pytest.mark.parametrize("sample", ["tt_events", "dy_events"])
def test_lookup_matches_numpy_reference_on_real_nanoaod(sample: str, request: pytest.FixtureRequest) -> None:
    events = request.getfixturevalue(sample)
    sf = _sf()
    for collection in (events.Jet, events.Muon, events.Electron):
        for variation, table in (("nominal", TABLE), ("up", UP), ("down", DOWN)):
            got = sf(collection.pt, abs(collection.eta), variation=variation)
            assert ak.all(ak.num(got) == ak.num(collection))
            want = _reference(
                [_flat(collection.pt), np.abs(_flat(collection.eta))], [PT_EDGES, ETA_EDGES], table
            )
            np.testing.assert_array_equal(_flat(got), want)
    # a 1-D lookup of a per-event quantity
    met = BinnedLookup(edges=[0.0, 50.0, 100.0, 200.0], values=[1.0, 2.0, 3.0], inputs=("met",))
    np.testing.assert_array_equal(
        ak.to_numpy(met(events.MET.pt)),
        _reference(
            [ak.to_numpy(events.MET.pt).astype(float)], [[0.0, 50.0, 100.0, 200.0]], np.array([1.0, 2, 3])
        ),
    )


def test_lookup_flow_nan_and_negative_pt_are_defined() -> None:
    pt = ak.Array([[-10.0, 0.0, 19.9, 20.0, 399.9, 400.0, math.inf, -math.inf, math.nan], [25.0]])
    eta = ak.full_like(pt, 0.1)
    first, last = TABLE[0, 0], TABLE[-1, 0]
    clamp = _sf()(pt, eta).tolist()
    assert clamp[0][:8] == [first, first, first, TABLE[0, 0], last, last, last, first]
    assert math.isnan(clamp[0][8])  # NaN input -> nan_value, default NaN
    fill = _sf(flow="fill", flow_value=1.0, nan_value=1.0)(pt, eta).tolist()
    assert fill[0] == [1.0, 1.0, 1.0, TABLE[0, 0], last, 1.0, 1.0, 1.0, 1.0]
    assert fill[1] == [TABLE[0, 0]]
    # NaN in the second input only
    assert math.isnan(_sf()(30.0, math.nan))


def test_lookup_keeps_missing_values_and_accepts_numpy_scalars_and_keywords() -> None:
    sf = _sf()
    pt = ak.Array([[25.0, None], None, [60.0]])
    got = sf(pt, 0.5)
    assert got.tolist() == [[TABLE[0, 0], None], None, [TABLE[2, 0]]]
    assert sf(pt=np.array([25.0, 60.0]), abseta=np.array([[0.5], [2.0]])).shape == (2, 2)
    assert float(sf(abseta=2.0, pt=60.0, variation="up")) == UP[2, 2]
    one_d = BinnedLookup([0.0, 1.0, 2.0], [5.0, 6.0])
    assert one_d.inputs == ("x0",)
    assert one_d(np.array([0.5, 1.5, 9.0])).tolist() == [5.0, 6.0, 6.0]


def test_lookup_on_typetracer_returns_typed_result_and_touches_inputs() -> None:
    jets = _generated_jets(50)
    eager = _sf()(jets.pt, abs(jets.eta))
    form = jets.layout.form_with_key()
    layout, report = ak.typetracer.typetracer_with_report(form)
    tracer = ak.Array(layout)
    pt_key = form.content.content("pt").form_key
    assert pt_key not in report.data_touched
    result = _sf()(tracer.pt, abs(tracer.eta))
    assert ak.backend(result) == "typetracer"
    assert result.layout.form == eager.layout.form
    assert pt_key in report.data_touched  # so column optimisation keeps the inputs


def test_lookup_in_dask_awkward_graph_matches_eager() -> None:
    jets = _generated_jets(300)
    lazy = dak.from_awkward(jets, npartitions=3)
    sf = _sf()
    eager = sf(jets.pt, abs(jets.eta), variation="down")
    direct = sf(lazy.pt, abs(lazy.eta), variation="down")
    mapped = dak.map_partitions(lambda j: sf(j.pt, abs(j.eta), variation="down"), lazy)
    columns = dak.report_necessary_columns(direct)
    assert set().union(*columns.values()) == {"pt", "eta"}
    for result in (direct, mapped):
        assert isinstance(result, dak.Array)
        np.testing.assert_array_equal(_flat(result.compute()), _flat(eager))
        assert ak.num(result.compute()).tolist() == ak.num(eager).tolist()


def test_lookup_bad_edges_and_shapes_raise_with_details() -> None:
    with pytest.raises(BinningError, match=r"axis 0 \('pt'\) must be strictly increasing.*edges\[2\]=25\.0"):
        BinnedLookup(edges=[[20.0, 30.0, 25.0], [0.0, 1.0]], values=[[1.0], [1.0]], inputs=("pt", "eta"))
    with pytest.raises(BinningError, match=r"axis 1 \('eta'\).*strictly increasing.*edges\[1\]=0\.0"):
        BinnedLookup(edges=[[20.0, 30.0], [0.0, 0.0]], values=[[1.0]], inputs=("pt", "eta"))
    with pytest.raises(BinningError, match="contain NaN"):
        BinnedLookup(edges=[0.0, math.nan, 1.0], values=[1.0, 1.0])
    with pytest.raises(BinningError, match="at least 2"):
        BinnedLookup(edges=[[0.0]], values=[])
    with pytest.raises(
        BinningError,
        match=r"shape \(5, 4\) but the edges give \(5, 3\): axis 1 \('abseta'\) has 4 edges, "
        r"so expected 3 bins, got 4",
    ):
        BinnedLookup(edges=[PT_EDGES, ETA_EDGES], values=np.ones((5, 4)), inputs=("pt", "abseta"))
    with pytest.raises(BinningError, match=r"variation 'up' values have shape \(4, 3\).*axis 0 \('pt'\)"):
        BinnedLookup(
            edges=[PT_EDGES, ETA_EDGES],
            values=TABLE,
            variations={"up": np.ones((4, 3))},
            inputs=("pt", "abseta"),
        )
    with pytest.raises(BinningError, match=r"1 dimension\(s\).*2 axes"):
        BinnedLookup(edges=[PT_EDGES, ETA_EDGES], values=np.ones(15))
    with pytest.raises(BinningError, match="'nominal' is the values table"):
        BinnedLookup(edges=[0.0, 1.0], values=[1.0], variations={"nominal": [2.0]})
    with pytest.raises(BinningError, match="flow must be"):
        BinnedLookup(edges=[0.0, 1.0], values=[1.0], flow="wrap")  # type: ignore[arg-type]
    with pytest.raises(InputsError, match="3 input names"):
        BinnedLookup(edges=[PT_EDGES, ETA_EDGES], values=TABLE, inputs=("pt", "eta", "phi"))


def test_lookup_bad_calls_raise_with_details() -> None:
    sf = _sf()
    with pytest.raises(InputsError, match=r"takes 2 inputs \('pt', 'abseta'\), got 1; missing 'abseta'"):
        sf(ak.Array([[30.0]]))
    with pytest.raises(InputsError, match=r"takes 2 inputs \('pt', 'abseta'\), got 3 positional"):
        sf(1.0, 2.0, 3.0)
    with pytest.raises(InputsError, match=r"no input 'aseta'. Did you mean 'abseta'"):
        sf(pt=1.0, aseta=2.0)
    with pytest.raises(
        InputsError, match=r"no variation 'Up'.*Available variations: 'down', 'nominal', 'up'"
    ):
        sf(1.0, 2.0, variation="Up")
    jets = _generated_jets(5)
    with pytest.raises(InputsError, match="record array with fields 'pt', 'eta'; pass one field"):
        sf(jets, 1.0)
    with pytest.raises(InputsError, match="must be numeric, got the string"):
        sf("30", 1.0)
    with pytest.raises(InputsError, match="must be a numeric array, got dtype <U2"):
        sf(np.array(["30"]), 1.0)
    assert isinstance(InputsError("x"), SystematicsError)
    assert isinstance(InputsError("x"), ValueError)


@pytest.mark.gpu
def test_lookup_correction_and_smearing_on_cuda_match_cpu() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        devices = 0
    if devices == 0:
        pytest.skip("no CUDA device visible to cupy")
    jets = _generated_jets(500)
    gpu = ak.to_backend(jets, "cuda")
    sf = _sf()
    got = sf(gpu.pt, abs(gpu.eta), variation="up")
    assert ak.backend(got) == "cuda"
    np.testing.assert_array_equal(
        _flat(ak.to_backend(got, "cpu")), _flat(sf(jets.pt, abs(jets.eta), variation="up"))
    )
    corr = Correction(CORRECTIONS, "lepton_sf")
    got = corr(gpu.pt, abs(gpu.eta), "down")
    assert ak.backend(got) == "cuda"
    np.testing.assert_array_equal(
        _flat(ak.to_backend(got, "cpu")), _flat(corr(jets.pt, abs(jets.eta), "down"))
    )
    for flow, dtype in (("clamp", "float32"), ("fill", "float64")):
        edge_sf, inputs, want = _edge_case(flow, dtype)
        on_gpu = edge_sf(*(cupy.asarray(x) for x in inputs))
        np.testing.assert_array_equal(cupy.asnumpy(on_gpu), want)
    index = ak.local_index(jets.pt)
    z_gpu = deterministic_normal(ak.to_backend(index, "cuda"), 17, name="jer")
    np.testing.assert_allclose(
        _flat(ak.to_backend(z_gpu, "cpu")), _flat(deterministic_normal(index, 17, name="jer"))
    )


# ----------------------------------------------------------------------------------------- corrections


@pytest.fixture(scope="module")
def cset() -> correctionlib.highlevel.CorrectionSet:
    return correctionlib.CorrectionSet.from_file(str(CORRECTIONS))


@pytest.mark.parametrize("systematic", ["nominal", "up", "down"])
def test_correction_equals_correctionlib_on_flat_arrays(
    systematic: str, tt_events: ak.Array, cset: object
) -> None:
    sf = Correction(CORRECTIONS, "lepton_sf")
    for leptons in (tt_events.Muon, tt_events.Electron, tt_events.Jet):
        got = sf(leptons.pt, abs(leptons.eta), systematic)
        assert ak.num(got).tolist() == ak.num(leptons).tolist()
        want = cset["lepton_sf"].evaluate(_flat(leptons.pt), np.abs(_flat(leptons.eta)), systematic)
        np.testing.assert_array_equal(_flat(got), want)
    odd = np.array([math.nan, -30.0, 0.0, math.inf, -math.inf, 1e9])  # NaN/negative: as correctionlib does
    np.testing.assert_array_equal(
        sf(odd, np.abs(odd[::-1]), systematic), cset["lepton_sf"].evaluate(odd, np.abs(odd[::-1]), systematic)
    )
    jes = Correction(CORRECTIONS, "jes_delta")
    np.testing.assert_array_equal(
        _flat(jes(abseta=abs(tt_events.Jet.eta), pt=tt_events.Jet.pt)),
        cset["jes_delta"].evaluate(_flat(tt_events.Jet.pt), np.abs(_flat(tt_events.Jet.eta))),
    )


def test_btag_var_is_the_agc_variation(tt_events: ak.Array, cset: object) -> None:
    btag = Correction(CORRECTIONS, "btag_var")
    assert btag.inputs == ("pt", "index", "direction")
    assert btag.input_types == ("real", "int", "string")
    pt = tt_events.Jet.pt
    index = ak.local_index(pt) % 4
    for direction, sign in (("up", 1.0), ("down", -1.0), ("nominal", 0.0)):
        got = btag(pt, index, direction)
        np.testing.assert_allclose(_flat(got), 1.0 + sign * 0.075 * _flat(pt) / 50.0, rtol=1e-12)
        want = cset["btag_var"].evaluate(_flat(pt), ak.to_numpy(ak.flatten(index)), direction)
        np.testing.assert_array_equal(_flat(got), want)
    assert float(btag(100.0, 3, "up")) == pytest.approx(1.15)


def test_correction_pickles_small_and_loads_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "corrections.json"
    shutil.copy(CORRECTIONS, path)
    calls = []
    original = correctionlib.CorrectionSet.from_string

    def counting(text: str) -> object:
        calls.append(1)
        return original(text)

    monkeypatch.setattr(correctionlib.CorrectionSet, "from_string", counting)
    sf = Correction(path, "lepton_sf")
    before = sf(50.0, 1.0, "nominal")
    payload = pickle.dumps(sf)
    assert len(payload) < 2048
    assert b"MultiBinning" not in payload
    assert b"_compiled" not in payload
    for _ in range(5):
        clone = pickle.loads(payload)
        assert clone == sf
        assert clone(50.0, 1.0, "nominal") == before
    other = Correction(path, "btag_var")
    assert other(50.0, 0, "up") == pytest.approx(1.075)
    assert len(calls) == 1
    assert current_state().lookup(correction_module.CACHE_KIND, (str(path), sf.digest)) is not None


def test_correction_detects_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "corrections.json"
    shutil.copy(CORRECTIONS, path)
    payload = pickle.dumps(Correction(path, "jes_delta"))
    path.write_text(path.read_text() + "\n")
    WORKER.clear(correction_module.CACHE_KIND)  # as in a fresh worker process
    clone = pickle.loads(payload)
    with pytest.raises(SystematicsError, match="changed since the Correction was created"):
        clone(50.0, 1.0)


def test_correction_bad_inputs_raise_with_details(tmp_path: Path) -> None:
    with pytest.raises(
        CorrectionNotFoundError,
        match=r"'lepton_SF' not found in .*corrections\.json\. Did you mean 'lepton_sf'\? "
        r"Available corrections: 'btag_var', 'jes_delta', 'lepton_sf'",
    ):
        Correction(CORRECTIONS, "lepton_SF")
    sf = Correction(CORRECTIONS, "lepton_sf")
    with pytest.raises(
        InputsError,
        match=r"correction 'lepton_sf' .* takes 3 inputs \('pt', 'abseta', 'systematic'\), got 2; "
        r"missing 'systematic'\n    inputs: pt: real, abseta: real, systematic: string",
    ):
        sf(ak.Array([[30.0]]), ak.Array([[1.0]]))
    with pytest.raises(InputsError, match=r"takes 3 inputs .* got 4 positional"):
        sf(30.0, 1.0, "up", 4)
    with pytest.raises(InputsError, match="'systematic' is a string input; pass one Python str"):
        sf(30.0, 1.0, ak.Array(["up"]))
    with pytest.raises(InputsError, match=r"input 'pt' \(real\) must be numeric"):
        sf("30", 1.0, "up")
    with pytest.raises(SystematicsError, match="cannot read correction file"):
        Correction(tmp_path / "missing.json", "lepton_sf")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystematicsError, match="not a valid correctionlib CorrectionSet"):
        Correction(bad, "lepton_sf")


def test_correction_in_dask_awkward_graph_matches_eager() -> None:
    jets = _generated_jets(300)
    lazy = dak.from_awkward(jets, npartitions=3)
    sf = Correction(CORRECTIONS, "lepton_sf")
    result = sf(lazy.pt, abs(lazy.eta), "up")
    dak.report_necessary_columns(result)
    np.testing.assert_array_equal(_flat(result.compute()), _flat(sf(jets.pt, abs(jets.eta), "up")))


def test_make_corrections_script_reproduces_the_committed_file(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_corrections", REPO / "processors" / "make_corrections.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out.json"
    assert script.main([str(out)]) == 0
    assert out.read_text() == CORRECTIONS.read_text()
    assert script.main([]) == 2


# -------------------------------------------------------------------------------------- weight variations


def test_weight_variations_from_coffea_weights(tt_events: ak.Array) -> None:
    btag = Correction(CORRECTIONS, "btag_var")
    jets = ak.pad_none(tt_events.Jet.pt, 4, axis=1)
    weights = Weights(len(tt_events))
    weights.add("genweight", np.sign(ak.to_numpy(tt_events.genWeight)))
    weights.add_multivariation(
        "btag_var",
        np.ones(len(tt_events)),
        modifierNames=[str(i) for i in range(4)],
        weightsUp=[ak.to_numpy(ak.fill_none(btag(jets[:, i], i, "up"), 1.0)) for i in range(4)],
        weightsDown=[ak.to_numpy(ak.fill_none(btag(jets[:, i], i, "down"), 1.0)) for i in range(4)],
    )
    variations = weight_variations(weights)
    assert list(variations) == [
        "nominal",
        *sorted(f"btag_var_{i}{d}" for i in range(4) for d in ("Up", "Down")),
    ]
    np.testing.assert_array_equal(variations["nominal"], weights.weight())
    third = ak.values_astype(jets[:, 2], np.float64)
    expected = weights.weight() * ak.to_numpy(ak.fill_none(1.0 + 0.075 * third / 50.0, 1.0))
    np.testing.assert_allclose(variations["btag_var_2Up"], expected, rtol=1e-12)
    assert list(weight_variations(weights, ["btag_var_0Up"])) == ["nominal", "btag_var_0Up"]
    with pytest.raises(SystematicsError, match=r"'btag_var_0up' is not defined.*Did you mean 'btag_var_0Up'"):
        weight_variations(weights, ["btag_var_0up"])


# ----------------------------------------------------------------------------------------- shape variations


@pytest.mark.parametrize("mode", ["eager", "virtual"])
def test_scale_replaces_only_the_collection_field_and_keeps_behaviours(
    nano_tt: Path, mode: str, request: pytest.FixtureRequest
) -> None:
    events = request.getfixturevalue("tt_eager") if mode == "eager" else _events(nano_tt, mode)
    jes = Correction(CORRECTIONS, "jes_delta")
    variations = ShapeVariations(
        Scale("jes", jes, fields=("pt", "mass")), Scale("flat", 0.1, directions=("up",))
    )
    assert variations.names() == ["nominal", "jes_up", "jes_down", "flat_up"]
    seen = dict(variations.apply(events))
    assert seen["nominal"] is events
    delta = jes(events.Jet.pt, abs(events.Jet.eta))
    for name, sign in (("jes_up", 1.0), ("jes_down", -1.0)):
        varied = seen[name]
        assert type(varied) is type(events)
        assert type(varied.Jet) is type(events.Jet)
        np.testing.assert_allclose(
            _flat(varied.Jet.pt), _flat(events.Jet.pt * (1.0 + sign * delta)), rtol=1e-12
        )
        np.testing.assert_allclose(
            _flat(varied.Jet.mass), _flat(events.Jet.mass * (1.0 + sign * delta)), rtol=1e-12
        )
        np.testing.assert_array_equal(_flat(varied.Jet.eta), _flat(events.Jet.eta))
        np.testing.assert_array_equal(_flat(varied.Muon.pt), _flat(events.Muon.pt))
        # vector behaviours still work on the varied collection
        np.testing.assert_allclose(_flat(varied.Jet.pvec.rho), _flat(varied.Jet.pt), rtol=1e-6)
        pair = varied.Jet[:, :1] + varied.Jet[:, 1:2]
        nominal_pair = events.Jet[:, :1] + events.Jet[:, 1:2]
        assert ak.all(ak.num(pair.mass) == ak.num(nominal_pair.mass))
    np.testing.assert_allclose(_flat(seen["flat_up"].Jet.pt), _flat(events.Jet.pt) * 1.1, rtol=1e-12)
    if mode == "virtual":  # varying Jet.pt reads no other branch
        lazy = _events(nano_tt, mode)
        varied = Smear("jer", 0.1).vary(lazy, "jer")
        for untouched in (varied.Muon.pt, varied.Jet.phi):
            assert untouched.layout.content.data.is_materialized is False


def test_smearing_is_identical_for_any_chunking_and_rerun(nano_tt: Path, tt_eager: ak.Array) -> None:
    jer = Smear("jer", (0.15, 0.05))
    whole = _events(nano_tt, "virtual")
    n = len(whole)
    reference = {name: jer.vary(whole, name).Jet.pt for name in jer.names()}
    for chunk in (1000, 64):
        for name in jer.names():
            pieces = [
                jer.vary(_events(nano_tt, "virtual", start=s, stop=min(s + chunk, n)), name).Jet.pt
                for s in range(0, n, chunk)
            ]
            chunked = ak.concatenate(pieces)
            assert ak.num(chunked).tolist() == ak.num(reference[name]).tolist()
            np.testing.assert_array_equal(_flat(chunked), _flat(reference[name]))
    rerun = jer.vary(tt_eager, "jer_up").Jet.pt  # a second run, on eagerly read events
    np.testing.assert_array_equal(_flat(rerun), _flat(reference["jer_up"]))
    assert not np.array_equal(_flat(reference["jer_up"]), _flat(reference["jer_down"]))
    assert not np.array_equal(_flat(reference["jer_up"]), _flat(whole.Jet.pt))
    reseeded = Smear("jer", (0.15, 0.05), seed=1).vary(whole, "jer_up").Jet.pt
    assert not np.array_equal(_flat(reseeded), _flat(reference["jer_up"]))


def test_deterministic_normal_is_standard_normal_and_a_pure_function() -> None:
    rng = np.random.default_rng(3)
    event = rng.integers(0, 2**40, size=50_000, dtype=np.uint64)
    run = np.full(50_000, 1, dtype=np.uint32)
    z = deterministic_normal(run, event, 0, name="jer")
    assert z.dtype == np.float64
    assert z.shape == (50_000,)
    assert abs(z.mean()) < 0.02
    assert abs(z.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.01
    np.testing.assert_array_equal(z[::7], deterministic_normal(run[::7], event[::7], 0, name="jer"))
    assert not np.array_equal(z, deterministic_normal(run, event, 1, name="jer"))
    lazy = dak.from_awkward(ak.Array(event), npartitions=4)
    np.testing.assert_array_equal(ak.to_numpy(deterministic_normal(1, lazy, 0, name="jer").compute()), z)
    layout = ak.Array(event).layout.to_typetracer(forget_length=True)
    assert ak.backend(deterministic_normal(ak.Array(layout), 0, name="jer")) == "typetracer"


def test_smear_and_scale_on_nan_and_negative_pt_are_defined() -> None:
    events = ak.Array(
        {
            "run": [1, 1],
            "luminosityBlock": [2, 2],
            "event": [3, 4],
            "Jet": [[{"pt": math.nan}, {"pt": -20.0}, {"pt": 50.0}], [{"pt": 10.0}] * 200],
        }
    )
    wide = Smear("wide", 5.0).vary(events, "wide").Jet.pt
    values = _flat(wide)
    assert math.isnan(values[0])  # NaN stays NaN
    assert values[1] <= 0.0  # negative pt times a factor clipped at >= 0
    assert np.all(values[2:] >= 0.0)  # factor max(1 + sigma z, 0) ...
    assert np.any(values[2:] == 0.0)  # ... is clipped for z < -1 / sigma
    down = Scale("big", 1.5).vary(events, "big_down").Jet.pt
    assert _flat(down)[2:].tolist() == [0.0] * 201  # 1 - 1.5 clipped to 0
    up = Scale("jes", 0.1).vary(events, "jes_up").Jet.pt
    assert math.isnan(_flat(up)[0])
    assert _flat(up)[1] == pytest.approx(-22.0)


def test_shape_variation_bad_input_raises() -> None:
    with pytest.raises(DuplicateVariationError, match="'jes_up' is used twice"):
        ShapeVariations(Scale("jes", 0.02), Scale("jes", 0.03, collection="FatJet"))
    with pytest.raises(DuplicateVariationError, match="'jer' is used twice"):
        ShapeVariations(Smear("jer", 0.1), Smear("jer", 0.2))
    with pytest.raises(DuplicateVariationError, match=r"'nominal'.*reserved"):
        ShapeVariations(Smear("nominal", 0.1))
    with pytest.raises(SystematicsError, match="takes Scale, Smear or other ShapeVariation"):
        ShapeVariations("jes")  # type: ignore[arg-type]
    with pytest.raises(SystematicsError, match=r"delta \(up\) must be finite"):
        Scale("jes", math.nan)
    with pytest.raises(SystematicsError, match="directions must be"):
        Scale("jes", 0.1, directions=("sideways",))
    events = ak.Array({"Jet": [[{"pt": 10.0, "eta": 0.2}]], "event": [1]})
    with pytest.raises(SystematicsError, match=r"no collection 'Jets'. Did you mean 'Jet'"):
        Scale("jes", 0.1, collection="Jets").vary(events, "jes_up")
    with pytest.raises(SystematicsError, match=r"has no field 'ptt'. Did you mean 'pt'"):
        Scale("jes", 0.1, fields="ptt").vary(events, "jes_up")
    with pytest.raises(SystematicsError, match=r"lack the seed field\(s\) 'run', 'luminosityBlock'"):
        Smear("jer", 0.1).vary(events, "jer")
    with pytest.raises(SystematicsError, match="needs input 'phi'"):
        Scale("jes", BinnedLookup([0.0, 1.0], [0.1], inputs=("phi",))).vary(events, "jes_up")
    with pytest.raises(SystematicsError, match=r"no shape variation named 'jes_dn'. Did you mean 'jes_down'"):
        ShapeVariations(Scale("jes", 0.1)).vary(events, "jes_dn")


def test_scale_with_a_lookup_resolves_abs_fields() -> None:
    jets = _generated_jets(100)
    events = ak.Array({"Jet": jets})
    lookup = BinnedLookup(edges=[PT_EDGES, ETA_EDGES], values=TABLE - 1.0, inputs=("pt", "abseta"))
    varied = Scale("jes", lookup).vary(events, "jes_up").Jet.pt
    want = _flat(jets.pt) * np.maximum(
        1.0 + (_reference([_flat(jets.pt), np.abs(_flat(jets.eta))], [PT_EDGES, ETA_EDGES], TABLE) - 1.0), 0.0
    )
    np.testing.assert_array_equal(_flat(varied), want)


def test_shape_variations_on_dask_awkward_events_match_eager() -> None:
    jets = _generated_jets(200)
    counts = np.arange(200)
    events = ak.zip(
        {"run": np.ones(200, dtype=np.uint32), "luminosityBlock": counts // 10, "event": counts, "Jet": jets},
        depth_limit=1,
    )
    lazy = dak.from_awkward(events, npartitions=3)
    for variation, name in ((Smear("jer", 0.1), "jer"), (Scale("jes", 0.05), "jes_down")):
        got = variation.vary(lazy, name)
        assert isinstance(got, dak.Array)
        np.testing.assert_array_equal(_flat(got.Jet.pt.compute()), _flat(variation.vary(events, name).Jet.pt))


# ---------------------------------------------------------------------------------------- run_variations


def _fill_pt(events: ak.Array, variation: str) -> dict[str, object]:
    jets = events.Jet[events.Jet.pt > 30.0]
    lead = ak.fill_none(ak.firsts(jets.pt), -1.0)
    h = hist.Hist.new.Reg(20, 0.0, 300.0, name="pt").Weight()
    h.fill(pt=lead, weight=np.ones(len(events)))
    return {
        "lead_pt": h,
        "n_events": len(events),
        "nested": {"njets": ak.sum(ak.num(jets)), "count": h.copy()},
    }


def test_run_variations_adds_a_leading_variation_axis(tt_events: ak.Array) -> None:
    variations = ShapeVariations(Scale("jes", 0.05), Smear("jer", 0.1))
    out = run_variations(tt_events, variations, _fill_pt)
    h = out["lead_pt"]
    assert h.axes[0].name == "variation"
    assert h.axes[0].traits.growth
    assert list(h.axes["variation"]) == variations.names()
    for name in variations.names():
        direct = _fill_pt(variations.vary(tt_events, name), name)
        np.testing.assert_array_equal(
            h[{"variation": name}].view(flow=True), direct["lead_pt"].view(flow=True)
        )
        np.testing.assert_array_equal(
            out["nested"]["count"][{"variation": name}].values(), direct["lead_pt"].values()
        )
    assert out["n_events"] == len(tt_events)
    assert out["nested"]["njets"] == _fill_pt(tt_events, "nominal")["nested"]["njets"]
    assert h[{"variation": "jes_up"}].values().tolist() != h[{"variation": "nominal"}].values().tolist()


def test_run_variations_appends_to_an_existing_weight_variation_axis(tt_events: ak.Array) -> None:
    def fill(events: ak.Array, variation: str) -> dict[str, hist.Hist]:
        weights = Weights(len(events))
        weights.add("lumi", np.full(len(events), 2.0), weightUp=np.full(len(events), 2.2), weightDown=None)
        jets = events.Jet[events.Jet.pt > 30.0]
        h = (
            hist.Hist.new.StrCat([], name="region", growth=True)
            .StrCat([], name="variation", growth=True)
            .Reg(10, 0.0, 300.0, name="pt")
            .Weight()
        )
        region = np.where(ak.to_numpy(ak.num(jets)) >= 4, "4j", "few")
        if variation == "jes_down":
            region = np.full(len(events), "few")  # a region that stays empty in one pass
        for name, w in weight_variations(weights).items():
            h.fill(region=region, variation=name, pt=ak.fill_none(ak.firsts(jets.pt), -1.0), weight=w)
        return {"h": h}

    variations = ShapeVariations(Scale("jes", 0.05))
    out = run_variations(tt_events, variations, fill)["h"]
    assert [a.name for a in out.axes] == ["region", "variation", "pt"]
    assert list(out.axes["variation"]) == ["nominal", "lumiDown", "lumiUp", "jes_up", "jes_down"]
    nominal = fill(tt_events, "nominal")["h"]
    for cat in ("nominal", "lumiUp", "lumiDown"):
        np.testing.assert_array_equal(
            out[{"variation": cat}].view(flow=True), nominal[{"variation": cat}].view(flow=True)
        )
    up = fill(variations.vary(tt_events, "jes_up"), "jes_up")["h"]
    np.testing.assert_array_equal(
        out[{"variation": "jes_up"}].view(flow=True), up[{"variation": "nominal"}].view(flow=True)
    )
    down = fill(variations.vary(tt_events, "jes_down"), "jes_down")["h"]
    assert out[{"variation": "jes_down", "region": "4j"}].sum().value == 0.0
    np.testing.assert_array_equal(
        out[{"variation": "jes_down", "region": "few"}].view(flow=True),
        down[{"variation": "nominal", "region": "few"}].view(flow=True),
    )


def test_run_variations_with_the_processor_call_signature_on_virtual_events(
    tt_events: ak.Array, tt_eager: ak.Array
) -> None:
    class Processor:
        shape_variations = ShapeVariations(Scale("jes", 0.03), Smear("jer", 0.1))

        def process_variation(self, events: ak.Array, variation: str) -> dict[str, object]:
            return _fill_pt(events, variation)

    processor = Processor()
    out = run_variations(tt_events, processor.shape_variations, processor.process_variation)
    again = run_variations(tt_eager, list(processor.shape_variations), processor.process_variation)
    assert out["lead_pt"] == again["lead_pt"]


def test_merge_errors_name_the_output_and_the_pass() -> None:
    def h() -> hist.Hist:
        return hist.Hist.new.StrCat(["nominal", "jes_up"], name="variation").Reg(2, 0, 1, name="x").Double()

    with pytest.raises(
        SystematicsError,
        match=r"output\['a'\]: the 'nominal' pass returned a histogram "
        r"but the 'jes_up' pass returned nothing",
    ):
        merge_variation_outputs({"nominal": {"a": h()}, "jes_up": {}})
    with pytest.raises(SystematicsError, match=r"already has categories \['jes_up'\]"):
        merge_variation_outputs({"nominal": {"a": h()}, "jes_up": {"a": h()}})
    other = hist.Hist.new.Reg(3, 0, 1, name="x").Double()
    with pytest.raises(SystematicsError, match="axis 'x' differs between the 'nominal' and 'jer' passes"):
        merge_variation_outputs({"nominal": hist.Hist.new.Reg(2, 0, 1, name="x").Double(), "jer": other})
    with pytest.raises(SystematicsError, match="needs a 'nominal' output"):
        merge_variation_outputs({"jer": other})
    from hist import dask as hist_dask

    lazy_hist = hist_dask.Hist.new.Reg(2, 0, 1, name="x").Double()
    with pytest.raises(SystematicsError, match=r"output\['h'\] is a dask \(lazy\) histogram"):
        merge_variation_outputs({"nominal": {"h": lazy_hist}, "jer": {"h": lazy_hist}})
    with pytest.raises(SystematicsError, match="needs a ShapeVariations"):
        run_variations(ak.Array([1]), 3, _fill_pt)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- public API


def test_public_api_is_pinned_and_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert systematics.__all__ == (
        "VARIATION_AXIS",
        "BinnedLookup",
        "BinningError",
        "Correction",
        "CorrectionNotFoundError",
        "DuplicateVariationError",
        "InputsError",
        "Scale",
        "ShapeVariation",
        "ShapeVariations",
        "Smear",
        "Varied",
        "apply_varied",
        "deterministic_normal",
        "fill_varied",
        "load_correction_set",
        "merge_variation_outputs",
        "run_variations",
        "weight_variations",
    )
    assert dir(systematics) == sorted(systematics.__all__)
    monkeypatch.chdir(REPO)  # examples read processors/data/corrections.json
    modules = [
        "",
        "._arrays",
        ".apply",
        ".binned",
        ".correction",
        ".merge",
        ".rng",
        ".shape",
        ".varied",
        ".weights",
    ]
    for suffix in modules:
        module = importlib.import_module(f"distproc.systematics{suffix}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, f"doctest failures in {module.__name__}"
        assert result.attempted > 0
