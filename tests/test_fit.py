"""The pyhf/cabinetry fit of distproc outputs: workspace, injected normalisation, config validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hist
import numpy as np
import pyhf
import pytest
from click.testing import CliRunner

from distproc.cli.main import main
from distproc.exceptions import ConfigError
from distproc.fit import (
    FitError,
    FitSummary,
    HistogramNotFoundError,
    build_workspace,
    fit,
    load_fit_config,
    parse_fit_config,
)
from distproc.fit.run import ILL_CONDITIONED
from distproc.io import write_histograms

# pyhf 0.7 validates workspaces with jsonschema's RefResolver, deprecated since jsonschema 4.18.
pytestmark = pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
EDGES = np.linspace(0.0, 100.0, 11)
CENTERS = 0.5 * (EDGES[1:] + EDGES[:-1])


def shape(kind: str, scale: float) -> np.ndarray:
    """Smooth, distinct yields per bin for a signal-like or background-like sample."""
    if kind == "signal":
        return scale * np.exp(-0.5 * ((CENTERS - 55.0) / 15.0) ** 2) + 1.0
    return scale * np.exp(-CENTERS / 40.0) + 2.0


YIELDS = {
    ("SR", "signal"): shape("signal", 400.0),
    ("SR", "background"): shape("background", 300.0),
    ("CR", "signal"): shape("signal", 60.0),
    ("CR", "background"): shape("background", 900.0),
}


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run output as distproc.save writes it: hists/<region>/<process>/<variation>."""
    out = tmp_path_factory.mktemp("run")
    hists = {}
    for region in ("SR", "CR"):
        h = hist.Hist(
            hist.axis.StrCategory([], name="process", growth=True),
            hist.axis.StrCategory([], name="variation", growth=True),
            hist.axis.Variable(EDGES, name="observable"),
            storage=hist.storage.Weight(),
        )
        for sample in ("signal", "background"):
            nominal = YIELDS[region, sample]
            tilt = 1 + 0.1 * (CENTERS - 50.0) / 50.0
            variations = {
                "nominal": nominal,
                "jes_up": nominal * tilt,
                "eff_up": nominal * 1.04,
                "eff_down": nominal * 0.97,
            }
            for variation, values in variations.items():
                # one entry per bin at its centre with the bin's yield as weight; variance = yield / 100
                h.fill(process=sample, variation=variation, observable=CENTERS, weight=values)
                view = h.view()[h.axes[0].index(sample), h.axes[1].index(variation)]
                view.variance = values / 100.0
        alternative = YIELDS[region, "signal"] * (1 + 0.05 * np.sign(CENTERS - 50.0))
        h.fill(process="signal_alt", variation="nominal", observable=CENTERS, weight=alternative)
        hists[region] = h
    write_histograms({"hists": hists}, out / "histograms.root")
    return out


def config(**changes) -> dict:
    base = {
        "path": "hists/{region}/{sample}/{variation}",
        "poi": "mu",
        "regions": [{"name": "SR", "observable": "x [GeV]"}, {"name": "CR"}],
        "samples": [{"name": "signal", "norm_factor": "mu"}, {"name": "background"}],
        "systematics": [
            {"name": "lumi", "normalization": 0.03},
            {"name": "jes", "up": {"variation": "jes_up"}},
            {
                "name": "eff",
                "samples": ["background"],
                "up": {"variation": "eff_up"},
                "down": {"variation": "eff_down"},
            },
            {"name": "generator", "samples": ["signal"], "up": {"sample": "signal_alt"}},
        ],
        "data": {"asimov": {"mu": 1.2}},
        "plots": False,
    }
    return base | changes


def within_convergence(summary: FitSummary, name: str, true: float) -> bool:
    """Whether a parameter is within what Migrad guarantees of its true minimum: Migrad stops once the
    estimated distance to the minimum, EDM = d^T C^-1 d on -2 log L (errordef 1), is below edm_goal =
    0.002 * tolerance 0.1, so each parameter is within sqrt(edm_goal) = 1.4 % of its uncertainty."""
    value, uncertainty = summary.parameters[name]
    return abs(value - true) <= np.sqrt(summary.minimizer["edm_goal"]) * uncertainty


def test_workspace_has_every_modifier(output_dir: Path) -> None:
    spec = build_workspace(output_dir / "histograms.root", config())
    workspace = pyhf.Workspace(spec)  # valid against pyhf's schema
    assert workspace.channels == ["CR", "SR"]
    modifiers = {
        (sample["name"], m["name"], m["type"])
        for channel in spec["channels"]
        for sample in channel["samples"]
        for m in sample["modifiers"]
    }
    for expected in [
        ("signal", "mu", "normfactor"),
        ("signal", "lumi", "normsys"),
        ("background", "lumi", "normsys"),
        ("signal", "jes", "normsys"),
        ("signal", "jes", "histosys"),
        ("background", "eff", "normsys"),
        ("signal", "generator", "histosys"),
    ]:
        assert expected in modifiers
    assert ("background", "generator", "histosys") not in modifiers
    sr = next(c for c in spec["channels"] if c["name"] == "SR")
    signal = next(s for s in sr["samples"] if s["name"] == "signal")
    np.testing.assert_allclose(signal["data"], YIELDS["SR", "signal"], rtol=1e-9)
    jes = next(m for m in signal["modifiers"] if m["name"] == "jes" and m["type"] == "normsys")
    # one-sided variation symmetrized: down = 2 * nominal - up, so hi + lo = 2
    assert jes["data"]["hi"] + jes["data"]["lo"] == pytest.approx(2.0)


def test_asimov_fit_recovers_injected_normalisation(output_dir: Path, tmp_path: Path) -> None:
    summary = fit(output_dir, config(), out=tmp_path)
    assert summary.data == "asimov"
    assert within_convergence(summary, "mu", 1.2)
    assert 0 < summary.uncertainty < 0.2
    assert abs(summary.value - 1.2) < summary.uncertainty
    for name in ("lumi", "jes", "eff", "generator"):
        assert within_convergence(summary, name, 0.0)
    written = json.loads((tmp_path / "fit.json").read_text())
    assert written["valid"] is True
    assert written["minimizer"]["covariance"] == "accurate"
    assert 1 <= written["minimizer"]["condition"] < ILL_CONDITIONED
    assert written["poi"] == {"name": "mu", "value": summary.value, "uncertainty": summary.uncertainty}
    labels = written["correlation"]["labels"]
    matrix = np.array(written["correlation"]["matrix"])
    assert matrix.shape == (len(labels), len(labels))
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    assert pyhf.Workspace(json.loads((tmp_path / "workspace.json").read_text()))
    assert not list(output_dir.glob("*.png"))


def test_pseudodata_fit_and_plots(output_dir: Path, tmp_path: Path) -> None:
    cfg = config(data={"pseudodata": {"signal": 0.8, "background": 1.0}}, plots=True)
    summary = fit(output_dir, cfg, out=tmp_path)
    assert summary.data == "pseudodata"
    assert within_convergence(summary, "mu", 0.8)  # the pseudo-data are the model at mu = 0.8
    for name in ("prefit_SR", "prefit_CR", "postfit_SR", "postfit_CR", "pulls"):
        path = Path(summary.files[name])
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_range_and_rebin(output_dir: Path) -> None:
    cfg = config(regions=[{"name": "SR", "range": [20, 100], "rebin": 2}, {"name": "CR"}])
    spec = build_workspace(output_dir / "histograms.root", cfg)
    sr = next(c for c in spec["channels"] if c["name"] == "SR")
    background = next(s for s in sr["samples"] if s["name"] == "background")
    expected = YIELDS["SR", "background"][2:].reshape(-1, 2).sum(axis=1)
    np.testing.assert_allclose(background["data"], expected, rtol=1e-9)
    bad = config(regions=[{"name": "SR", "range": [25, 100]}, {"name": "CR"}])
    with pytest.raises(FitError, match=r"range \[25.0, 100.0\] does not fall on bin edges"):
        build_workspace(output_dir / "histograms.root", bad)
    with pytest.raises(FitError, match="rebin 3 does not divide its 10 bins"):
        build_workspace(output_dir / "histograms.root", config(regions=[{"name": "SR", "rebin": 3}]))


def test_missing_histogram_names_it_and_the_file(output_dir: Path) -> None:
    cfg = config(systematics=[{"name": "jer", "up": {"variation": "jer_up"}}])
    with pytest.raises(HistogramNotFoundError) as excinfo:
        build_workspace(output_dir / "histograms.root", cfg)
    err = excinfo.value
    assert err.histogram == "hists/SR/signal/jer_up"
    assert err.file == str(output_dir / "histograms.root")
    message = str(err)
    assert "'hists/SR/signal/jer_up'" in message
    assert str(output_dir / "histograms.root") in message
    assert "Did you mean 'hists/SR/signal/jes_up'" in message
    with pytest.raises(HistogramNotFoundError, match="histogram file not found"):
        fit(output_dir / "nowhere", config())


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key", "match"),
    [
        ("poi: mu\nregion: []\n", "the fit config.region", r"unknown key 'region'.*Did you mean 'regions'"),
        (
            "poi: mu\nregions: [{name: SR, rebinn: 2}]\nsamples: [{name: s, norm_factor: mu}]\n"
            "data: {asimov: {mu: 1}}\n",
            "regions[0].rebinn",
            r"unknown key 'rebinn' in regions\[0\]. Did you mean 'rebin'",
        ),
        (
            "poi: mu\nregions: [{name: SR}]\nsamples: [{name: s, norm_factor: mu}]\n"
            "systematics: [{name: x, up: {variaton: a}}]\ndata: {asimov: {mu: 1}}\n",
            "systematics[0].up.variaton",
            r"unknown key 'variaton' in systematics\[0\].up. Did you mean 'variation'",
        ),
        (
            "poi: mu\nregions: [{name: SR}]\nsamples: [{name: s, norm_factor: mu}]\n"
            "systematics: [{name: x, samples: [b], normalization: 0.1}]\ndata: {asimov: {mu: 1}}\n",
            "systematics[0].samples",
            r"names 'b', which is not defined",
        ),
        (
            "poi: nu\nregions: [{name: SR}]\nsamples: [{name: s, norm_factor: mu}]\n"
            "data: {asimov: {mu: 1}}\n",
            "poi",
            r"poi 'nu' is not the norm_factor of any sample.*Did you mean 'mu'",
        ),
        (
            "poi: mu\nregions: [{name: SR}]\nsamples: [{name: s}]\n",
            "the fit config.data",
            r"needs the key 'data'",
        ),
        (
            "poi: mu\nregions: [{name: SR}]\nsamples: [{name: s, norm_factor: mu}]\n"
            "systematics: [{name: x, normalization: 0.1, up: {variation: a}}]\ndata: {asimov: {mu: 1}}\n",
            "systematics[0].normalization",
            "both 'normalization' and templates",
        ),
        (
            "poi: mu\nregions: [{name: SR}]\nsamples: [{name: s, norm_factor: mu}]\n"
            "data: {pseudodata: {s: 1}, asimov: {mu: 1}}\n",
            "data",
            "exactly one of 'observed'",
        ),
        ("poi: [\n", None, "not valid YAML"),
    ],
)
def test_config_errors_name_the_key_and_the_file(
    tmp_path: Path, text: str, key: str | None, match: str
) -> None:
    path = write_yaml(tmp_path / "fit.yaml", text)
    with pytest.raises(ConfigError, match=match) as excinfo:
        load_fit_config(path)
    assert excinfo.value.key == key
    assert excinfo.value.source == str(path)
    assert str(path) in str(excinfo.value)


def test_shipped_agc_config_is_valid() -> None:
    cfg = load_fit_config(REPO / "processors" / "fit.yaml")
    assert cfg.poi == "ttbar_norm"
    assert [r.name for r in cfg.regions] == ["4j1b", "4j2b"]
    assert {s.name for s in cfg.systematics} >= {"luminosity", "ME_var", "PS_var", "pt_scale", "btag_var_3"}
    assert cfg.data.pseudodata == {
        "ttbar_me_var": 0.5,
        "ttbar_ps_var": 0.5,
        "single_top_s_chan": 1.0,
        "single_top_t_chan": 1.0,
        "single_top_tW": 1.0,
        "wjets": 1.0,
    }


def test_cli_fit(output_dir: Path, tmp_path: Path) -> None:
    import yaml

    path = write_yaml(tmp_path / "fit.yaml", yaml.safe_dump(config()))
    result = CliRunner().invoke(main, ["fit", str(output_dir), "--config", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "mu = 1.200 +- " in result.output
    assert (tmp_path / "fit.json").exists()
    bad = write_yaml(tmp_path / "bad.yaml", yaml.safe_dump(config(histogram="x.root")))
    result = CliRunner().invoke(main, ["fit", str(output_dir), "--config", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'histogram'" in result.output
    assert "Did you mean 'histograms'" in result.output


def test_parse_docstring_example() -> None:
    cfg = parse_fit_config(config())
    assert cfg.norm_factors == {"mu": ["signal"]}
    assert cfg.systematics[0].normalization == (0.03, -0.03)
    assert cfg.systematics[1].down is None


def write_single_region(out: Path, yields: dict[str, np.ndarray]) -> Path:
    """histograms.root with one histogram per dataset at SR/<dataset> (no variation axis)."""
    h = hist.Hist(
        hist.axis.StrCategory([], name="process", growth=True),
        hist.axis.Variable(EDGES, name="observable"),
        storage=hist.storage.Weight(),
    )
    for dataset, values in yields.items():
        h.fill(process=dataset, observable=CENTERS, weight=values)
    write_histograms({"SR": h}, out / "histograms.root")
    return out


SINGLE_REGION = {
    "path": "{region}/{sample}",  # no {variation}: these datasets have none
    "poi": "mu",
    "regions": [{"name": "SR"}],
    "samples": [{"name": "signal", "norm_factor": "mu"}, {"name": "background"}],
    "systematics": [
        {"name": "lumi", "normalization": 0.03},
        {"name": "generator", "samples": ["signal"], "up": {"sample": "signal_alt"}},
    ],
    "plots": False,
}


def test_path_without_variation_placeholder(tmp_path: Path) -> None:
    signal = YIELDS["SR", "signal"]
    write_single_region(
        tmp_path,
        {"signal": signal, "signal_alt": signal * 1.05, "background": YIELDS["SR", "background"]},
    )
    summary = fit(tmp_path, SINGLE_REGION | {"data": {"asimov": {"mu": 0.9}}})
    assert summary.valid
    assert within_convergence(summary, "mu", 0.9)
    bad = SINGLE_REGION | {
        "systematics": [{"name": "jes", "up": {"variation": "jes_up"}}],
        "data": {"asimov": {}},
    }
    with pytest.raises(ConfigError, match=r"path '\{region\}/\{sample\}' has no \{variation\}") as excinfo:
        parse_fit_config(bad)
    assert excinfo.value.key == "systematics[0].up.variation"


def test_observed_data_is_a_dataset_of_the_run(tmp_path: Path) -> None:
    signal, background = YIELDS["SR", "signal"], YIELDS["SR", "background"]
    counts = np.round(1.3 * signal + background)  # a data dataset (is_data: true in its fileset), weights 1
    write_single_region(
        tmp_path, {"signal": signal, "signal_alt": signal * 1.05, "background": background, "data": counts}
    )
    summary = fit(tmp_path, SINGLE_REGION | {"data": {"observed": "data"}})
    assert summary.data == "observed"
    assert summary.valid
    workspace = json.loads((tmp_path / "workspace.json").read_text())
    assert workspace["observations"] == [{"name": "SR", "data": counts.tolist()}]  # doubles in, doubles out
    assert abs(summary.value - 1.3) < 2 * summary.uncertainty


def test_invalid_fit_exits_3_and_says_so_once(tmp_path: Path) -> None:
    import yaml

    background = YIELDS["SR", "background"].copy()
    background[2] = -500.0  # a negative template bin: the Poisson likelihood is NaN wherever it wins
    write_single_region(
        tmp_path,
        {"signal": YIELDS["SR", "signal"], "signal_alt": YIELDS["SR", "signal"], "background": background},
    )
    config = write_yaml(
        tmp_path / "fit.yaml", yaml.safe_dump(SINGLE_REGION | {"data": {"asimov": {"mu": 1.0}}})
    )
    done = subprocess.run(
        [sys.executable, "-m", "distproc.cli", "fit", str(tmp_path), "--config", str(config)],
        capture_output=True,
        text=True,
        env=os.environ,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout == ""  # no Minuit chatter, no result
    assert done.stderr.startswith("error: the fit did not converge (")
    assert done.stderr.count("\n") == 1
    assert str(tmp_path / "fit.log") in done.stderr
    written = json.loads((tmp_path / "fit.json").read_text())
    assert written["valid"] is False
    assert written["minimizer"]["reason"]
    log = (tmp_path / "fit.log").read_text()
    assert "FCN result is NaN" in log  # Minuit's own warnings are kept, in the log
    assert not list(tmp_path.glob("*.png"))
