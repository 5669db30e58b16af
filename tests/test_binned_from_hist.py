"""BinnedLookup.from_hist: scale factors from hist.Hist objects and ROOT TH1/TH2/TH3 written by uproot."""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
import pytest
import uproot

from distproc.systematics import BinnedLookup, BinningError

PT_EDGES = [20.0, 30.0, 50.0, 100.0, 300.0]
ETA_EDGES = [0.0, 0.9, 1.5, 2.5]


@pytest.fixture
def sf_2d() -> hist.Hist:
    """A muon SF in (pt, |eta|) with distinct values and errors in every bin."""
    h = hist.Hist.new.Var(PT_EDGES, name="pt").Var(ETA_EDGES, name="abseta").Weight()
    values = 0.9 + 0.01 * np.arange(12).reshape(4, 3)
    h[...] = np.stack([values, (0.002 * (1 + np.arange(12).reshape(4, 3))) ** 2], axis=-1)
    return h


def _expected(h: hist.Hist, pt: np.ndarray, abseta: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The independent computation: np.digitize into the regular bins, clamped at both ends."""
    i = np.clip(np.digitize(pt, h.axes[0].edges) - 1, 0, h.axes[0].size - 1)
    j = np.clip(np.digitize(abseta, h.axes[1].edges) - 1, 0, h.axes[1].size - 1)
    return table[i, j]


def test_from_hist_values_and_error_variations(sf_2d):
    rng = np.random.default_rng(5)
    pt = rng.uniform(5.0, 400.0, 200)  # under- and overflow included
    abseta = rng.uniform(0.0, 2.7, 200)
    sf = BinnedLookup.from_hist(sf_2d, errors="muon_sf", name="muon")
    assert sf.inputs == ("pt", "abseta")
    assert sf.variations == ("nominal", "muon_sf_up", "muon_sf_down")
    values = sf_2d.values()
    errors = np.sqrt(sf_2d.variances())
    np.testing.assert_array_equal(sf(pt=pt, abseta=abseta), _expected(sf_2d, pt, abseta, values))
    np.testing.assert_array_equal(
        sf(pt, abseta, variation="muon_sf_up"), _expected(sf_2d, pt, abseta, values + errors)
    )
    np.testing.assert_array_equal(
        sf(pt, abseta, variation="muon_sf_down"), _expected(sf_2d, pt, abseta, values - errors)
    )
    jagged = sf(ak.Array([[25.0, 60.0], []]), ak.Array([[0.5, 2.0], []]))
    assert jagged.tolist() == [[values[0, 0], values[2, 2]], []]


def test_flow_bins_of_the_histogram_are_not_used(sf_2d):
    """A value outside the edges takes the edge bin (clamp) or flow_value (fill), never the
    histogram's own under/overflow content."""
    h = hist.Hist.new.Reg(2, 0.0, 2.0, name="x").Double()
    h.fill([0.5, 1.5, 1.5, -1.0, -1.0, -1.0, 7.0, 7.0, 7.0, 7.0])  # flow bins hold 3 and 4
    clamped = BinnedLookup.from_hist(h)
    np.testing.assert_array_equal(clamped(np.array([-5.0, 0.5, 1.5, 9.0])), [1.0, 1.0, 2.0, 2.0])
    filled = BinnedLookup.from_hist(h, flow="fill", flow_value=1.0)
    np.testing.assert_array_equal(filled(np.array([-5.0, 0.5, 1.5, 9.0])), [1.0, 1.0, 2.0, 1.0])


def test_poisson_errors_without_variances():
    h = hist.Hist.new.Reg(2, 0.0, 2.0, name="x").Double()
    h[...] = [4.0, 9.0]
    sf = BinnedLookup.from_hist(h, errors="stat")
    np.testing.assert_array_equal(sf(np.array([0.5, 1.5]), variation="stat_up"), [6.0, 12.0])


def test_named_variation_histograms(sf_2d):
    up = sf_2d.copy()
    up[...] = np.stack([sf_2d.values() * 1.1, sf_2d.variances()], axis=-1)
    sf = BinnedLookup.from_hist(sf_2d, variations={"syst_up": up})
    np.testing.assert_allclose(sf(60.0, 1.0, variation="syst_up"), sf_2d.values()[2, 1] * 1.1)
    wrong = hist.Hist.new.Reg(3, 0, 3, name="pt").Reg(3, 0, 3, name="abseta").Double()
    with pytest.raises(BinningError, match="variation 'bad'"):
        BinnedLookup.from_hist(sf_2d, variations={"bad": wrong})


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_root_histograms_written_by_uproot(tmp_path, dims):
    """TH1D/TH2D/TH3D written by uproot from a Weight hist and read back give the hist's lookup; the
    ROOT axes are named xaxis, yaxis, zaxis (as uproot names them)."""
    rng = np.random.default_rng(dims)
    h = hist.Hist(
        *[hist.axis.Variable(np.cumsum(rng.uniform(0.5, 2.0, 4 + d)), name=f"a{d}") for d in range(dims)],
        storage=hist.storage.Weight(),
    )
    shape = h.values().shape
    h[...] = np.stack([rng.uniform(0.8, 1.2, shape), rng.uniform(1e-4, 1e-2, shape)], axis=-1)
    with uproot.recreate(tmp_path / "sf.root") as file:
        file["sf"] = h
    with uproot.open(tmp_path / "sf.root") as file:
        root_hist = file["sf"]
        assert root_hist.classname == f"TH{dims}D"
        from_root = BinnedLookup.from_hist(root_hist, errors="sf")
    from_hist = BinnedLookup.from_hist(h, errors="sf")
    assert from_root.name == "sf"
    assert from_root.inputs == ("xaxis", "yaxis", "zaxis")[:dims]
    points = [rng.uniform(axis.edges[0] - 1, axis.edges[-1] + 1, 100) for axis in h.axes]
    for variation in ("nominal", "sf_up", "sf_down"):
        np.testing.assert_array_equal(
            from_root(*points, variation=variation), from_hist(*points, variation=variation)
        )
    np.testing.assert_array_equal(from_root.values("sf_up"), h.values() + np.sqrt(h.variances()))


def test_root_th1_from_numpy_histogram(tmp_path):
    with uproot.recreate(tmp_path / "eff.root") as file:
        file["eff"] = (np.array([0.5, 0.7, 0.9]), np.array([0.0, 10.0, 20.0, 40.0]))
    with uproot.open(tmp_path / "eff.root") as file:
        eff = BinnedLookup.from_hist(file["eff"], inputs=["pt"])
    np.testing.assert_array_equal(eff(pt=np.array([5.0, 15.0, 35.0, 50.0])), [0.5, 0.7, 0.9, 0.9])


def test_bad_histograms_are_named():
    h = hist.Hist.new.StrCat(["tt"], name="dataset").Reg(2, 0, 2, name="x").Double()
    with pytest.raises(BinningError, match=r"numeric axes only.*select a category"):
        BinnedLookup.from_hist(h)
    with pytest.raises(BinningError, match="got ndarray"):
        BinnedLookup.from_hist(np.ones(3))
