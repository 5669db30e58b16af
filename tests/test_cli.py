"""The command line end to end: make-sample, then run a YAML config, as a user would."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import uproot
from _cli import cli

import distproc

PROCS = Path(__file__).parent / "procs" / "muon.py"


@pytest.mark.cluster
def test_make_sample_then_run(tmp_path):
    made = cli(
        "make-sample",
        "--process",
        "ttbar",
        "--events",
        "3000",
        "--out",
        "samples/ttbar",
        "--seed",
        "3",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "3,000 ttbar events" in made.stdout
    config = tmp_path / "run.yaml"
    config.write_text(
        textwrap.dedent(f"""
        processor: "{PROCS}:MuonPt"
        fileset:
          ttbar:
            files: {{"samples/ttbar/*.root": Events}}
            metadata: {{xsec: 729.84}}
        chunksize: 1000
        cluster: {{kind: local, workers: 2}}
        cache_dir: cache
        """)
    )
    ran = cli("run", str(config), "--output", "out", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    for expected in ("ttbar", "3,000", "muon_pt: dataset={ttbar}, pt[20]", "outputs written to"):
        assert expected in ran.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["datasets"]["ttbar"]["events"] == 3000
    assert report["datasets"]["ttbar"]["partitions"] == 3
    assert report["partial"] is False
    result = distproc.load(tmp_path / "out")
    with uproot.open(tmp_path / "out" / "histograms.root") as f:
        np.testing.assert_allclose(f["muon_pt/ttbar"].values(), result.output["muon_pt"].values()[0])


def test_run_flags_override_the_yaml(tmp_path, nano_dy):
    config = tmp_path / "run.yaml"
    config.write_text(
        f'processor: "{PROCS}:MuonPt"\nfileset: {{dy: ["{nano_dy}"]}}\nchunksize: 1000\n'
        f'cache_dir: "{tmp_path}/cache"\n'
    )
    ran = cli(
        "run",
        str(config),
        "--output",
        "out",
        "--chunksize",
        "10",
        "--max-chunks",
        "2",
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["partitions"] == 2
    assert report["datasets"]["dy"]["events"] == 20


def test_cli_errors_exit_2_with_the_message(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("processor: x.py:X\nfileset: {a: [a.root]}\nchunksize: -1\n")
    ran = cli("run", str(config), "--output", "out", cwd=tmp_path)
    assert ran.returncode == 2
    assert "chunksize must be at least 1" in ran.stderr
    assert str(config) in ran.stderr
    bad = cli("make-sample", "--process", "ttbarr", "--events", "10", "--out", "s", cwd=tmp_path)
    assert bad.returncode == 2
    assert "Did you mean 'ttbar'" in bad.stderr


def test_histograms_root_naming_with_two_category_axes(tmp_path):
    import hist

    h = hist.Hist.new.StrCat(["tt", "wj"], name="dataset").StrCat(["nominal", "up"], name="variation")
    h = h.Reg(5, 0, 5, name="x").Weight()
    h.fill(dataset="tt", variation="up", x=[1.5, 2.5], weight=[2.0, 3.0])
    index = distproc.io.write_histograms({"region": {"ht": h}, "n": 3}, tmp_path / "h.root")
    assert index["region/ht"]["categories"] == ["dataset", "variation"]
    with uproot.open(tmp_path / "h.root") as f:
        np.testing.assert_allclose(f["region/ht/tt/up"].values(), [0, 2, 3, 0, 0])
        np.testing.assert_allclose(f["region/ht/tt/up"].variances(), [0, 4, 9, 0, 0])
        assert f["region/ht/wj/nominal"].values().sum() == 0
        assert json.loads(f["_index"])["region/ht"]["written"][0] == "region/ht/tt/nominal"


@pytest.mark.cluster
def test_fileset_file_paths_resolve_against_the_fileset_file(tmp_path):
    """make-sample writes a relocatable fileset (paths relative to it); a run config elsewhere uses it."""
    made = cli("make-sample", "--process", "agc", "--events", "200", "--out", "data/agc", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "ttbar_0.root: Events" in (tmp_path / "data" / "agc" / "fileset.yaml").read_text()
    (tmp_path / "data").rename(tmp_path / "moved")  # samples and fileset move together
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "run.yaml"
    config.write_text(
        f'processor: "{PROCS}:MuonPt"\nfileset: ../moved/agc/fileset.yaml\ncache_dir: ../cache\n'
    )
    ran = cli("run", str(config), "--output", "out", "--workers", "1", cwd=tmp_path / "configs")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    report = json.loads((tmp_path / "configs" / "out" / "report.json").read_text())
    assert report["datasets"]["wjets"]["events"] == 200
    assert len(report["datasets"]) == 9
