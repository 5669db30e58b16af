"""distproc.systematics.Varied and fill_varied: every result equals the awkward computation it replaces.

Unit tests compare each operation, per variation, with the same awkward expression (bit for bit: the
per-event sums add the same float64 numbers in the same order); the engine tests run the processors of
tests/procs/varied_proc.py (one with Varied, one with plain awkward) on a real LocalCluster over
generated and real CMS NanoAOD files and compare their histograms.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pytest

import distproc
from distproc.exceptions import SystematicsError
from distproc.samples import make_sample
from distproc.systematics import BinnedLookup, Varied, apply_varied, fill_varied

PROCS = Path(__file__).parent / "procs" / "varied_proc.py"


def jagged(seed: int, events: int = 400, special: bool = False) -> ak.Array:
    """Random jagged pT-like values, with empty events; *special* adds NaN, inf and negative values."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, events)
    counts[::7] = 0
    values = rng.exponential(40.0, counts.sum()).astype(np.float32)
    if special:
        values[::11] = np.nan
        values[5::13] = np.inf
        values[3::17] *= -1
    return ak.unflatten(values, counts)


@pytest.fixture
def arrays():
    pt = jagged(1)
    eta = ak.unflatten(np.random.default_rng(2).uniform(-3, 3, int(ak.sum(ak.num(pt)))), ak.num(pt))
    weight = ak.Array(np.random.default_rng(3).normal(1.0, 0.2, len(pt)))
    return pt, eta, weight


def same(a: ak.Array, b: ak.Array) -> None:
    """Equal structure and values, bit for bit (NaN equal to NaN)."""
    assert ak.to_list(ak.num(a, axis=0)) == ak.to_list(ak.num(b, axis=0))
    if a.ndim > 1:
        assert ak.num(a).tolist() == ak.num(b).tolist()
    fa, fb = ak.to_numpy(ak.flatten(a, axis=None)), ak.to_numpy(ak.flatten(b, axis=None))
    assert fa.dtype == fb.dtype, (fa.dtype, fb.dtype)
    np.testing.assert_array_equal(fa, fb)


def reductions(x, good, event):
    """Per-event reductions and selections, written once for a Varied and for plain awkward arrays."""
    return {
        "sum": ak.sum(x[good], axis=1),
        "count": ak.count(x[good], axis=1),
        "num": ak.num(x[good], axis=1),
        "count_nonzero": ak.count_nonzero(good, axis=1),
        "any": ak.any(good, axis=1),
        "all": ak.all(good, axis=1),
        "sum_bool": ak.sum(good, axis=1),
        "selected_sum": ak.sum(x[good], axis=1)[event],
        "objects": x[good][event],
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_selection_and_reductions_equal_awkward(arrays, dtype):
    pt, eta, _ = arrays
    pt = ak.values_astype(pt, dtype)
    scales = {"nominal": 1.0, "up": 1.05, "down": 0.95}
    x = Varied({k: pt * f for k, f in scales.items()})
    good = (x > 30.0) & (abs(eta) < 2.4)
    event = ak.sum(good, axis=1) >= 2
    results = {**reductions(x, good, event), "events_then_objects": ak.sum(x[event][good], axis=1)}
    for name, f in scales.items():
        p = pt * f
        g = (p > 30.0) & (abs(eta) < 2.4)
        e = ak.sum(g, axis=1) >= 2
        # the same code on one variation's awkward arrays; only an object mask after an event selection
        # differs (awkward lines it up with the selected events, Varied with the original objects)
        expected = {**reductions(p, g, e), "events_then_objects": ak.sum(p[e][g[e]], axis=1)}
        for key, result in results.items():
            got = result.variation(name)
            want = expected[key]
            if key in ("sum", "selected_sum", "events_then_objects") and dtype == np.float32:
                # Varied sums accumulate in float64: as awkward's sum of the values cast to float64
                cast = ak.values_astype(p, np.float64)
                want = {"sum": ak.sum(cast[g], axis=1), "selected_sum": ak.sum(cast[g], axis=1)[e]}.get(
                    key, ak.sum(cast[e][g[e]], axis=1)
                )
            same(got, want)


def test_sums_with_nan_inf_and_negative_values_match_awkward():
    pt = jagged(4, special=True)
    x = Varied({"nominal": ak.values_astype(pt, np.float64), "up": ak.values_astype(pt * 2, np.float64)})
    keep = x < 100.0  # NaN never passes; unselected inf and NaN must not reach the sums
    for name, f in (("nominal", 1), ("up", 2)):
        p = ak.values_astype(pt * f, np.float64)
        same(ak.sum(x[keep], axis=1).variation(name), ak.sum(p[p < 100.0], axis=1))
        same(ak.sum(x, axis=1).variation(name), ak.sum(p, axis=1))  # NaN and inf where present
    assert np.isnan(ak.to_numpy(ak.sum(x, axis=1).variation("nominal"))).any()


def test_variations_combine_by_name_like_rdataframe_vary(arrays):
    pt, _, _ = arrays
    jes = Varied({"nominal": pt, "jes_up": pt * 1.1})
    btag = Varied({"nominal": pt * 0 + 1.0, "btag_up": pt * 0 + 2.0, "jes_up": pt * 0 + 3.0})
    product = jes * btag
    assert product.names == ("nominal", "jes_up", "btag_up")
    same(product.variation("nominal"), pt * (pt * 0 + 1.0))
    same(product.variation("jes_up"), (pt * 1.1) * (pt * 0 + 3.0))  # correlated: both vary together
    same(product.variation("btag_up"), pt * (pt * 0 + 2.0))  # jes at its nominal


def test_operators_ufuncs_and_unvaried_operands_on_either_side(arrays):
    pt, eta, weight = arrays
    x = Varied({"nominal": pt, "up": pt * 2})
    central = abs(eta) < 2.4
    per_event = ak.to_numpy(weight)
    checks = {
        "awkward on the left": (central & (x > 30), lambda p: central & (p > 30)),
        "numpy ufunc": (np.sqrt(x), np.sqrt),
        "ndarray per event": (per_event * x, lambda p: per_event * p),
        "awkward per event": (x * weight, lambda p: p * weight),
        "scalars": (2.0 - x / 4 + x**2 % 3, lambda p: 2.0 - p / 4 + p**2 % 3),
        "unary": (-abs(x), lambda p: -abs(p)),
        "invert": (~(x >= 20), lambda p: ~(p >= 20)),
        "where": (ak.where(x > 30, x, 0.0), lambda p: ak.where(p > 30, p, 0.0)),
    }
    for label, (result, expected) in checks.items():
        for name, p in (("nominal", pt), ("up", pt * 2)):
            got, want = result.variation(name), expected(p)
            assert ak.num(got).tolist() == ak.num(want).tolist(), label
            np.testing.assert_array_equal(ak.flatten(got), ak.flatten(want), err_msg=label)


def test_lookup_varied_equals_each_table(arrays):
    pt, eta, _ = arrays
    one = BinnedLookup(
        edges=[20.0, 50.0, 100.0], values=[0.9, 1.1], variations={"up": [1.0, 1.2]}, flow="fill"
    )
    two = BinnedLookup(
        edges=[[0.0, 40.0, np.inf], [-2.5, 0.0, 2.5]],
        values=[[1.0, 2.0], [3.0, 4.0]],
        variations={"up": [[5.0, 6.0], [7.0, 8.0]], "down": [[0.5, 0.6], [0.7, 0.8]]},
        inputs=("pt", "eta"),
    )
    special = jagged(5, special=True)
    cases = [(one, (pt,)), (one, (special,)), (two, (pt, eta))]
    for lookup, inputs in cases:
        result = lookup.varied(*inputs)
        assert result.names == lookup.variations
        for name in lookup.variations:
            same(result.variation(name), lookup(*inputs, variation=name))
    jes = Varied({"nominal": pt, "jes_up": pt * 1.5})
    combined = one.varied(jes)
    assert combined.names == ("nominal", "jes_up", "up")
    same(combined.variation("jes_up"), one(pt * 1.5))
    same(combined.variation("up"), one(pt, variation="up"))


def test_fill_varied_equals_per_variation_fills(arrays):
    pt, eta, weight = arrays
    x = Varied({"nominal": pt, "up": pt * 1.2})
    good = (x > 30.0) & (abs(eta) < 2.4)
    selected = ak.sum(good, axis=1) >= 1
    axis = hist.axis.StrCategory([], name="variation", growth=True)
    h_event = hist.Hist(
        axis,
        hist.axis.Regular(20, 0, 400, name="ht"),
        hist.axis.StrCategory([], name="d", growth=True),
        storage="weight",
    )
    h_jet = hist.Hist(axis, hist.axis.Regular(20, 0, 400, name="pt"), storage="weight")
    fill_varied(h_event, ht=ak.sum(x[good], axis=1)[selected], weight=weight, d="ttbar")
    fill_varied(h_jet, pt=x[good][selected], weight=weight)
    for name, p in (("nominal", pt), ("up", pt * 1.2)):
        g = (p > 30.0) & (abs(eta) < 2.4)
        s = ak.sum(g, axis=1) >= 1
        ref_event = hist.Hist(*h_event.axes[1:2], storage="weight").fill(
            ak.sum(p[g], axis=1)[s], weight=weight[s]
        )
        assert np.array_equal(
            h_event[{"variation": name, "d": "ttbar"}].values(flow=True), ref_event.values(flow=True)
        )
        jets = p[g][s]
        ref_jet = hist.Hist(*h_jet.axes[1:], storage="weight").fill(
            ak.flatten(jets), weight=ak.flatten(ak.broadcast_arrays(weight[s], jets)[0])
        )
        assert np.array_equal(h_jet[{"variation": name}].values(flow=True), ref_jet.values(flow=True))
        assert np.array_equal(h_jet[{"variation": name}].variances(flow=True), ref_jet.variances(flow=True))


# --- apply_varied and Varied.from_variations -------------------------------------------------------------
def leading_pair_mass(pt, eta, weight):
    """Per event: pt-sum of the highest-pT pair of objects (ak.combinations + ak.argmax), times a weight,
    and the eta of that pair's first object: what a Varied cannot express elementwise."""
    pairs = ak.combinations(ak.zip({"pt": pt, "eta": eta}), 2)
    total = pairs["0"].pt + pairs["1"].pt
    best = ak.argmax(total, axis=1, keepdims=True)
    return {
        "pt": ak.to_numpy(ak.fill_none(ak.firsts(total[best]), 0.0)) * weight,
        "eta": ak.to_numpy(ak.fill_none(ak.firsts(pairs["0"].eta[best]), 0.0)),
    }


def test_apply_varied_equals_the_function_on_each_variation(arrays):
    pt, eta, weight = arrays
    w = ak.to_numpy(weight)
    x = Varied({"nominal": pt, "up": pt * 1.2, "down": pt * 0.8})
    scale = Varied({"nominal": w, "w_up": w * 2})  # a per-event operand varying under its own name
    good = (x > 30.0) & (abs(eta) < 2.0)  # objects kept differ per variation
    two = ak.sum(good, axis=1) >= 2  # and so do the events
    result = apply_varied(leading_pair_mass, pt=x[good][two], eta=eta, weight=scale)
    assert set(result) == {"pt", "eta"}
    assert result["pt"].names == ("nominal", "up", "down", "w_up")
    for name, f, sw in (("nominal", 1.0, w), ("up", 1.2, w), ("down", 0.8, w), ("w_up", 1.0, w * 2)):
        p = pt * f
        g = (p > 30.0) & (abs(eta) < 2.0)
        t = ak.to_numpy(ak.sum(g, axis=1) >= 2)
        expected = leading_pair_mass(p[g][t], eta[g][t], sw[t])
        for key in ("pt", "eta"):
            same(result[key].variation(name), ak.Array(expected[key]))
    # the results line up with the events like any Varied: fill equals the per-variation fill
    h = hist.Hist.new.StrCat([], name="variation", growth=True).Reg(10, 0, 400, name="x").Weight()
    fill_varied(h, x=result["pt"], weight=weight)
    p = pt * 1.2
    g = (p > 30.0) & (abs(eta) < 2.0)
    t = ak.to_numpy(ak.sum(g, axis=1) >= 2)
    want = hist.Hist.new.Reg(10, 0, 400, name="x").Weight()
    want.fill(x=leading_pair_mass(p[g][t], eta[g][t], w[t])["pt"], weight=w[t])
    np.testing.assert_array_equal(h[{"variation": "up"}].values(), want.values())


def test_apply_varied_single_and_tuple_results_and_passthrough(arrays):
    pt, _, _ = arrays
    x = Varied({"nominal": pt, "up": pt * 2})
    calls = []

    def count_above(pt, cut):
        calls.append(cut)
        return ak.to_numpy(ak.sum(pt > cut, axis=1)), ak.to_numpy(ak.num(pt, axis=1))

    above, num = apply_varied(count_above, pt=x, cut=25.0)
    assert calls == [25.0, 25.0]  # once per variation, a non-array operand passed as is
    for name, p in (("nominal", pt), ("up", pt * 2)):
        same(above.variation(name), ak.Array(ak.to_numpy(ak.sum(p > 25.0, axis=1))))
        same(num.variation(name), ak.Array(ak.to_numpy(ak.num(p, axis=1))))
    single = apply_varied(lambda pt: ak.to_numpy(ak.sum(pt, axis=1)), pt=x[x > 40.0])
    same(single.variation("up"), ak.Array(ak.to_numpy(ak.sum((pt * 2)[pt * 2 > 40.0], axis=1))))


def test_apply_varied_result_of_the_wrong_length_is_an_error(arrays):
    pt, _, _ = arrays
    x = Varied({"nominal": pt, "up": pt * 2})
    events = ak.sum(x, axis=1) > 50.0
    with pytest.raises(SystematicsError, match=r"result 'a' under 'nominal' has shape \(400,\).*\(\d+\)"):
        apply_varied(lambda pt: {"a": np.zeros(400)}, pt=x[events])
    with pytest.raises(SystematicsError, match="one number per event"):
        apply_varied(lambda pt: ak.to_numpy(ak.flatten(pt)), pt=x)


def test_from_variations_equals_each_varied_copy():
    from distproc.systematics import Scale, ShapeVariations, Smear

    rng = np.random.default_rng(5)
    counts = rng.poisson(3.0, 200)
    jets = ak.unflatten(ak.zip({"pt": rng.exponential(40.0, counts.sum())}), counts)
    n = len(counts)
    events = ak.zip(
        {
            "run": np.ones(n, np.int64),
            "luminosityBlock": np.ones(n, np.int64),
            "event": np.arange(n),
            "Jet": jets,
        },
        depth_limit=1,
    )
    variations = ShapeVariations(Scale("jes", 0.03), Smear("jer", 0.1))
    pt = Varied.from_variations(events, variations, "Jet", "pt")
    assert pt.names == ("nominal", "jes_up", "jes_down", "jer")
    same(pt.variation("nominal"), events.Jet.pt)
    for name in variations.names():
        same(pt.variation(name), variations.vary(events, name).Jet.pt)


# --- bad input: a SystematicsError (or TypeError for NumPy conversion) naming what is wrong ------------
def test_bad_inputs_raise_clear_errors(arrays):
    pt, _, weight = arrays
    x = Varied({"nominal": pt, "up": pt * 2})
    other = jagged(9, events=len(pt))
    bad = {
        "needs a mapping .* 'nominal'": lambda: Varied({"up": pt}),
        "different structures": lambda: x + other,
        "different structures .*events": lambda: x * weight[:-1],
        "type .*option|\\?": lambda: Varied({"nominal": ak.Array([[1.0, None], []])}),
        "type .*x: float64": lambda: Varied({"nominal": ak.Array([[{"x": 1.0}]])}),
        "dask-awkward": lambda: x * __import__("dask_awkward").from_awkward(pt, 1),
        "ak.max is not supported": lambda: ak.max(x, axis=1),
        "only axis=1": lambda: ak.sum(x, axis=None),
        "only axis=1 .*per-object": lambda: ak.sum(ak.sum(x, axis=1), axis=1),
        "options \\['keepdims'\\]": lambda: ak.sum(x, axis=1, keepdims=True),
        "\\.variation\\('up'\\)": lambda: x["up"],
        "must be boolean": lambda: x[x * 2],
        "cannot select one value per event": lambda: ak.sum(x, axis=1)[x > 1],
        "no variation 'upp'. Did you mean 'up'": lambda: x.variation("upp"),
        "no 'variation' axis": lambda: fill_varied(hist.Hist.new.Reg(2, 0, 1, name="pt").Double(), pt=x),
        "do not pass variation=": lambda: fill_varied(
            hist.Hist.new.Reg(2, 0, 1, name="pt").Double(), pt=x, variation="a"
        ),
        "a set": lambda: x + {1, 2},
    }
    for pattern, call in bad.items():
        with pytest.raises(SystematicsError, match=pattern):
            call()
    with pytest.raises(TypeError, match="fill_varied"):
        np.asarray(x)
    with pytest.raises(TypeError, match="fill_varied"):
        hist.Hist.new.Reg(2, 0, 1, name="pt").Double().fill(x)


# --- through the engine: a real LocalCluster, generated and real NanoAOD files -------------------------
def run_both(client, files, tmp_path, chunksize):
    outputs = {}
    for cls in ("VariedJets", "AwkwardJets"):
        result = distproc.run(
            distproc.load_processor(f"{PROCS}:{cls}"),
            {"tt": [str(f) for f in files]},
            cluster=client,
            chunksize=chunksize,
            cache_dir=str(tmp_path / "cache"),
            progress=False,
        )
        assert not result.partial, result.report.failures
        outputs[cls] = result.output
    for key in ("ht", "jet_pt"):
        a, b = outputs["VariedJets"][key], outputs["AwkwardJets"][key]
        assert list(a.axes["variation"]) == list(b.axes["variation"])
        np.testing.assert_allclose(a.values(flow=True), b.values(flow=True), rtol=1e-12, atol=0)
        np.testing.assert_allclose(a.variances(flow=True), b.variances(flow=True), rtol=1e-12, atol=0)
        for name in ("jes_up", "sf_down"):  # the variations do change the histograms
            assert not np.array_equal(a[{"variation": name}].values(), a[{"variation": "nominal"}].values())
    return outputs


@pytest.mark.cluster
def test_engine_varied_equals_awkward_on_generated_sample(client, tmp_path):
    info = make_sample("ttbar", 20_000, tmp_path / "sample", seed=4)
    run_both(client, info.files, tmp_path, chunksize=3_000)


@pytest.mark.cluster
def test_engine_varied_equals_awkward_on_cms_nanoaod(client, nano_tt, tmp_path):
    outputs = run_both(client, [nano_tt], tmp_path, chunksize=10_000)
    assert outputs["VariedJets"]["ht"].sum().value > 0


def test_sliced_and_indexed_awkward_inputs(arrays):
    """Inputs whose layouts start mid-buffer (slices) or are ListArrays (after an event selection)."""
    pt, eta, weight = arrays
    keep = ak.to_numpy(weight) > 1.0
    for p, e, w in ((pt[10:], eta[10:], weight[10:]), (pt[keep], eta[keep], weight[keep])):
        x = Varied({"nominal": p, "up": p * 2})
        good = (x > 30.0) & (abs(e) < 2.4)
        ht = ak.sum(x[good], axis=1) * w
        for name, f in (("nominal", 1), ("up", 2)):
            q = p * f
            g = (q > 30.0) & (abs(e) < 2.4)
            same(ht.variation(name), ak.sum(ak.values_astype(q, np.float64)[g], axis=1) * w)
