"""The AGC ttbar analysis (processors/ttbar.py) against an independent plain uproot + numpy computation,
and the skim -> train -> inference chain, on small generated samples and a real LocalCluster."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import distproc
from distproc.columns import read_columns, read_manifest, write_manifest
from distproc.io import write_histograms
from distproc.samples import AGC_PROCESSES, make_agc_samples, sample_fileset
from distproc.systematics import deterministic_normal

PROCESSORS = Path(__file__).resolve().parents[1] / "processors"
LUMI = 3378.0
BINS = np.linspace(50.0, 550.0, 26)
pytestmark = pytest.mark.cluster


def _module(name: str):
    """A processors/ module, imported by path (processors/ is not a package)."""
    if str(PROCESSORS) not in sys.path:
        sys.path.insert(0, str(PROCESSORS))
    spec = importlib.util.spec_from_file_location(f"agc_test_{name}", PROCESSORS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fileset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    infos = make_agc_samples(4000, tmp_path_factory.mktemp("agc"), seed=3, events_per_file=2500)
    return sample_fileset(infos.values())


def run(client, processor, fileset, tmp_path):
    return distproc.run(
        processor, fileset, cluster=client, chunksize=1500, progress=False, cache_dir=str(tmp_path / "cache")
    )


@pytest.fixture(scope="module")
def output(client, fileset, tmp_path_factory) -> dict:
    proc = distproc.load_processor(f"{PROCESSORS / 'ttbar.py'}:TtbarAnalysis")
    result = run(client, proc, fileset, tmp_path_factory.mktemp("run"))
    assert not result.partial
    return result.output


# ---------------------------------------------------------------------------------------------------------
# Independent reference: plain uproot + numpy (awkward only to hold the jagged branches)

LEPTON_PT_EDGES = np.array([30.0, 40.0, 60.0, 100.0])  # lower edges; the last bin is open
LEPTON_ETA_EDGES = np.array([0.0, 0.9, 1.2])
SF = np.array([[0.95, 0.94, 0.92], [0.96, 0.95, 0.93], [0.97, 0.96, 0.94], [0.98, 0.97, 0.95]])
SF_UNC = np.array([[0.015, 0.02, 0.03], [0.01, 0.015, 0.025], [0.01, 0.015, 0.02], [0.015, 0.02, 0.03]])


def read(entry: dict) -> ak.Array:
    arrays = [uproot.open(path)["Events"].arrays() for path in entry["files"]]
    return ak.concatenate(arrays)


def reference(entry: dict, variation: str, region: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values and variances of the region's histogram for *variation*, and, per selected event, the
    number of b-tagged jets among its four leading selected jets."""
    a = read(entry)
    meta = entry["metadata"]
    good_e = (a.Electron_pt > 30) & (abs(a.Electron_eta) < 2.1) & (a.Electron_cutBased == 4)
    good_e = good_e & (a.Electron_sip3d < 4)
    good_m = (a.Muon_pt > 30) & (abs(a.Muon_eta) < 2.1) & a.Muon_tightId & (a.Muon_sip3d < 4)
    good_m = good_m & (a.Muon_pfRelIso04_all < 0.15)
    n_e, n_m = ak.to_numpy(ak.sum(good_e, axis=1)), ak.to_numpy(ak.sum(good_m, axis=1))
    one = n_e + n_m == 1
    e_pt = ak.to_numpy(ak.fill_none(ak.firsts(a.Electron_pt[good_e]), 0.0))
    m_pt = ak.to_numpy(ak.fill_none(ak.firsts(a.Muon_pt[good_m]), 0.0))
    e_eta = ak.to_numpy(ak.fill_none(ak.firsts(a.Electron_eta[good_e]), 0.0))
    m_eta = ak.to_numpy(ak.fill_none(ak.firsts(a.Muon_eta[good_m]), 0.0))
    lep_pt = np.where(n_e == 1, e_pt, m_pt)
    lep_abseta = np.abs(np.where(n_e == 1, e_eta, m_eta))

    pt = ak.values_astype(a.Jet_pt, np.float64)
    if variation == "pt_scale_up":
        pt = pt * 1.03
    elif variation == "pt_res_up":
        index = ak.local_index(pt)
        z = deterministic_normal(a.run, a.luminosityBlock, a.event, index, name="pt_res_up")
        pt = pt * np.maximum(1.0 + 0.05 * z, 0.0)
    jets = (pt > 30) & (abs(a.Jet_eta) < 2.4) & ((a.Jet_jetId & 4) != 0)
    n_jets = ak.to_numpy(ak.sum(jets, axis=1))
    n_b = ak.to_numpy(ak.sum(jets & (a.Jet_btagCSVV2 > 0.5), axis=1))
    cut = one & (n_jets >= 4) & ((n_b == 1) if region == "4j1b" else (n_b >= 2))

    sf_table = SF + {"lepton_sf_up": SF_UNC, "lepton_sf_down": -SF_UNC}.get(variation, 0.0)
    i_pt = np.searchsorted(LEPTON_PT_EDGES, lep_pt, side="right") - 1
    i_eta = np.clip(np.searchsorted(LEPTON_ETA_EDGES, lep_abseta, side="right") - 1, 0, 2)
    weight = ak.to_numpy(a.genWeight).astype(np.float64) * meta["xsec"] * LUMI / meta["sum_genweight"]
    weight = weight[cut] * sf_table[np.clip(i_pt[cut], 0, 3), i_eta[cut]]
    selected_pt = pt[jets][cut]
    if variation.startswith("btag_var_"):
        i, direction = int(variation[9]), variation.rsplit("_", 1)[1]
        leading = ak.to_numpy(selected_pt[:, i]).astype(np.float64)
        weight = weight * (1 + (0.075 if direction == "up" else -0.075) * leading / 50)
    weight = weight * {"scale_var_up": 1.025, "scale_var_down": 0.975}.get(variation, 1.0)

    if region == "4j1b":
        observable = ak.to_numpy(ak.sum(selected_pt, axis=1))
    else:
        observable = trijet_masses(
            selected_pt, *(a[f"Jet_{f}"][jets][cut] for f in ("eta", "phi", "mass", "btagCSVV2"))
        )
    values, _ = np.histogram(observable, bins=BINS, weights=weight)
    variances, _ = np.histogram(observable, bins=BINS, weights=weight**2)
    leading_tags = ak.to_numpy(ak.sum(a.Jet_btagCSVV2[jets][cut][:, :4] > 0.5, axis=1))
    return values, variances, leading_tags


def trijet_masses(pt, eta, phi, mass, btag) -> np.ndarray:
    """Per event: mass of the highest-pT three-jet combination containing a jet with btag > 0.5."""
    out = []
    for p, h, f, m, b in zip(*(ak.to_list(x) for x in (pt, eta, phi, mass, btag)), strict=True):
        best = (-1.0, 0.0)
        for combo in itertools.combinations(range(len(p)), 3):
            if max(b[k] for k in combo) <= 0.5:
                continue
            vec = np.zeros(4)
            for k in combo:
                px, py, pz = p[k] * np.cos(f[k]), p[k] * np.sin(f[k]), p[k] * np.sinh(h[k])
                vec += [np.sqrt(px**2 + py**2 + pz**2 + m[k] ** 2), px, py, pz]
            pt2 = vec[1] ** 2 + vec[2] ** 2
            if pt2 > best[0]:
                best = (pt2, np.sqrt(max(vec[0] ** 2 - pt2 - vec[3] ** 2, 0.0)))
        out.append(best[1])
    return np.array(out)


def check(output: dict, fileset: dict, region: str, dataset: str, variation: str) -> None:
    h = output["hists"][region][{"process": dataset, "variation": variation}]
    values, variances, _ = reference(fileset[dataset], variation, region)
    assert values.sum() > 0, "the reference selects nothing: the check would be vacuous"
    np.testing.assert_allclose(h.values(), values, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(h.variances(), variances, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "variation",
    ["nominal", "btag_var_0_up", "btag_var_3_down", "pt_scale_up", "pt_res_up", "lepton_sf_up"],
)
def test_4j1b_ht_matches_independent_computation(output, fileset, variation: str) -> None:
    for dataset in ("ttbar", "single_top_tW"):
        check(output, fileset, "4j1b", dataset, variation)


@pytest.mark.parametrize("variation", ["nominal", "pt_scale_up", "btag_var_1_down"])
def test_4j2b_trijet_mass_matches_independent_computation(output, fileset, variation: str) -> None:
    check(output, fileset, "4j2b", "ttbar", variation)


def test_wjets_scale_variation(output, fileset) -> None:
    for variation in ("nominal", "scale_var_up", "scale_var_down"):
        check(output, fileset, "4j1b", "wjets", variation)
    h = output["hists"]["4j1b"]
    assert "scale_var_up" in h.axes["variation"]
    assert h[{"process": "ttbar", "variation": "scale_var_up"}].values().sum() == 0  # W+jets only


def test_alternative_samples_are_nominal_only(output, fileset) -> None:
    h = output["hists"]["4j2b"]
    for dataset in ("ttbar_me_var", "ttbar_ps_var", "ttbar_scaleup", "ttbar_scaledown"):
        check(output, fileset, "4j2b", dataset, "nominal")
        for variation in h.axes["variation"]:
            if variation != "nominal":
                assert h[{"process": dataset, "variation": variation}].values().sum() == 0
    assert output["nevents"] == dict.fromkeys(AGC_PROCESSES, 4000)


def test_histograms_root_names(output, tmp_path) -> None:
    write_histograms(output, tmp_path / "histograms.root")
    with uproot.open(tmp_path / "histograms.root") as f:
        keys = set(f.keys(cycle=False))
        h = f["hists/4j1b/ttbar/btag_var_0_up"]
        expected = output["hists"]["4j1b"][{"process": "ttbar", "variation": "btag_var_0_up"}]
        np.testing.assert_allclose(h.values(), expected.values())
    for key in (
        "hists/4j1b/ttbar/nominal",
        "hists/4j2b/wjets/scale_var_up",
        "hists/4j2b/ttbar_me_var/nominal",
    ):
        assert key in keys


def test_skim_train_inference(client, fileset, output, tmp_path) -> None:
    ttbar = {"ttbar": fileset["ttbar"]}
    skim = distproc.load_processor(
        f"{PROCESSORS / 'skim.py'}:AssignmentSkim", {"directory": str(tmp_path / "skim")}
    )
    result = run(client, skim, fileset, tmp_path)  # every dataset given: only ttbar is skimmed
    manifest = read_manifest(write_manifest(result.output["assignment"]))
    tags = reference(fileset["ttbar"], "nominal", "4j2b")[2]
    n_events = len(tags)
    assert result.output["cutflow"]["ttbar"]["4j2b"] == n_events
    # b-tag-consistent assignments of four jets: t (t - 1) with t >= 2 tagged jets, else all 12
    assert manifest["rows"] == np.where(tags >= 2, tags * (tags - 1), 12).sum()
    assert list(manifest["datasets"]) == ["ttbar"]
    rows = read_columns(tmp_path / "skim")
    assert 0 < ak.sum(rows.label) <= n_events  # at most one right assignment per event

    train = _module("train_assignment")
    model, metrics = train.train(train.load(tmp_path / "skim"), max_iter=20)
    assert metrics["test_auc"] > 0.9
    path = train.export(model, tmp_path)

    proc = distproc.load_processor(f"{PROCESSORS / 'ttbar.py'}:TtbarAnalysis", {"model_path": str(path)})
    with_ml = run(client, proc, ttbar, tmp_path).output
    for region in ("4j1b", "4j2b"):  # inference adds histograms, changes none
        for variation in with_ml["hists"][region].axes["variation"]:
            where = {"process": "ttbar", "variation": variation}
            expected = output["hists"][region][where].values()
            np.testing.assert_allclose(with_ml["hists"][region][where].values(), expected, rtol=1e-12)
    nominal = {"process": "ttbar", "variation": "nominal"}
    score = with_ml["ml"]["score"][nominal]
    total = output["hists"]["4j2b"][nominal].values(flow=True).sum()
    assert score.values(flow=True).sum() == pytest.approx(total, rel=1e-9)  # one best assignment per event
    assert score.values(flow=True)[[0, -1]].sum() == 0  # scores are probabilities
    top = with_ml["ml"]["top_mass"][nominal]
    peak = top.axes[0].centers[np.argmax(top.values())]
    assert 130 < peak < 210  # the best assignment reconstructs the top quark
    assert set(with_ml["ml"]["top_mass"].axes["variation"]) == set(with_ml["hists"]["4j2b"].axes["variation"])


@pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning")  # pyhf 0.7
def test_fit_of_the_analysis_recovers_an_injected_normalisation(fileset, output, tmp_path) -> None:
    import yaml

    from distproc.fit import fit

    # At 3378 /pb, 4,000 simulated events per process give Asimov data ~100 times more precise than the
    # templates: the curvature of -2 log L along the directions the data fix exceeds that along the ones
    # only priors fix (ttbar_norm against the b-tagging and luminosity normalisations, the staterror
    # gammas) by ~2e5, more than Minuit's finite-difference Hesse resolves (forced pos-def, an uncertainty
    # off by 10x, an end point that moves with the last bit of the input). The fit is tested where it is
    # well posed: at the luminosity at which a simulated ttbar event weighs one, i.e. data as precise as
    # the simulation (correlation matrix condition number ~1e2).
    meta = fileset["ttbar"]["metadata"]
    scale = meta["sum_genweight"] / (meta["xsec"] * LUMI)
    scaled = {region: h * scale for region, h in output["hists"].items()}  # variances scale by scale**2
    write_histograms({"hists": scaled}, tmp_path / "histograms.root")
    config = yaml.safe_load((PROCESSORS / "fit.yaml").read_text())
    config |= {"data": {"asimov": {"ttbar_norm": 1.2}}, "plots": False}
    summary = fit(tmp_path, config)
    assert summary.poi == "ttbar_norm"
    assert summary.valid
    assert summary.minimizer["covariance"] == "accurate"
    # Migrad stops once the estimated distance to the minimum, EDM = d^T C^-1 d on -2 log L (errordef 1),
    # is below edm_goal = 0.002 * tolerance 0.1: each parameter is then within sqrt(edm_goal) = 1.4 % of
    # its uncertainty of the true minimum, which Asimov data put at the injected value.
    assert abs(summary.value - 1.2) <= np.sqrt(summary.minimizer["edm_goal"]) * summary.uncertainty
    assert 0 < summary.uncertainty < 0.5
    assert {"luminosity", "ME_var", "pt_res", "btag_var_3", "wjets_scale"} <= set(summary.parameters)


def test_cli_make_sample_agc(tmp_path) -> None:
    import yaml
    from click.testing import CliRunner

    from distproc.cli.main import main

    result = CliRunner().invoke(
        main, ["make-sample", "--process", "agc", "--events", "300", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "2,700 events of 9 AGC processes" in result.output
    fileset = yaml.safe_load((tmp_path / "fileset.yaml").read_text())
    assert list(fileset) == list(AGC_PROCESSES)
    for name, entry in fileset.items():
        assert set(entry["metadata"]) == {"xsec", "sum_genweight", "nevents", "process"}
        assert entry["metadata"]["process"] == name
        assert all((tmp_path / path).is_file() for path in entry["files"])  # relative to the fileset


def test_best_permutation_is_the_first_highest_score_of_each_event() -> None:
    ttbar = _module("ttbar")
    rng = np.random.default_rng(4)
    rows_per_event = rng.integers(1, 7, size=500)
    event = np.repeat(np.arange(500), rows_per_event)
    scores = np.round(rng.random(len(event)), 1).astype(np.float32)  # many ties
    expected = [np.flatnonzero(event == i)[np.argmax(scores[event == i])] for i in range(500)]
    assert ttbar.best_permutation(scores, event, 500).tolist() == expected
    with pytest.raises(ValueError, match="501 events but 500 have permutations"):
        ttbar.best_permutation(scores, event, 501)


def test_committed_fileset_is_what_make_demo_generates(tmp_path: Path) -> None:
    import yaml

    committed = yaml.safe_load((PROCESSORS / "agc_fileset.yaml").read_text())
    make_agc_samples(50_000, tmp_path, seed=1)  # the Makefile's demo samples
    generated = yaml.safe_load((tmp_path / "fileset.yaml").read_text())
    assert list(committed) == list(generated) == list(AGC_PROCESSES)
    for name, entry in generated.items():
        assert committed[name]["metadata"] == entry["metadata"]
        files = [f"../demo-output/samples/{f}" for f in entry["files"]]
        assert list(committed[name]["files"]) == files
