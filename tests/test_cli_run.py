"""`distproc run` without a YAML (--processor, --fileset, --schema, --treename) and `!path` in run YAMLs."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import awkward as ak
import pytest
import uproot
from _cli import cli as run_cli

import distproc
from distproc.config import load_config, run_config
from distproc.exceptions import ConfigError

PROCS = Path(__file__).parent / "procs" / "muon.py"


def cli(*args: str, cwd: Path):
    """``distproc ARGS`` in *cwd* with its own preprocessing cache."""
    return run_cli(*args, cwd=cwd, DISTPROC_CACHE_DIR=str(cwd / "cache"))


def test_run_help_lists_the_options_that_need_no_yaml(tmp_path):
    ran = cli("run", "--help", cwd=tmp_path)
    assert ran.returncode == 0
    for option in ("--processor FILE:CLASS", "--fileset FILE", "--schema", "--treename", "[CONFIG]"):
        assert option in ran.stdout


@pytest.mark.cluster
def test_run_with_processor_and_a_root_file(tmp_path, nano_dy):
    """--processor FILE:Class relative to the current directory, --fileset one ROOT file (the dataset is
    named after it)."""
    (tmp_path / "muon.py").write_text(PROCS.read_text())
    ran = cli(
        "run",
        *("--processor", "muon.py:MuonPt", "--fileset", str(nano_dy), "-o", "out"),
        *("--workers", "1", "--chunksize", "20", "--max-chunks", "2"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr + ran.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["datasets"]["nano_dy"]["events"] == 40
    assert report["partitions"] == 2


@pytest.mark.cluster
def test_run_with_schema_and_treename_flags(tmp_path, physlite):
    """A PHYSLITE file from a fileset file, with --schema physlite --treename CollectionTree."""
    (tmp_path / "fileset.yaml").write_text(f"atlas: ['{physlite}']\n")
    ran = cli(
        "run",
        *("--processor", f"{PROCS}:ElectronCount", "--fileset", "fileset.yaml", "-o", "out"),
        *("--schema", "physlite", "--treename", "CollectionTree", "--workers", "1"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr + ran.stdout
    pt = uproot.open(physlite)["CollectionTree"]["AnalysisElectronsAuxDyn.pt"].array()
    assert distproc.load(tmp_path / "out").output["n_electrons"] == int(ak.sum(ak.num(pt)))


def test_run_without_config_or_processor_is_a_usage_error(tmp_path):
    ran = cli("run", "--fileset", "x.root", "-o", "out", cwd=tmp_path)
    assert ran.returncode == 2
    assert "give a CONFIG file, or --processor FILE:CLASS and --fileset FILE" in ran.stderr
    bad = cli(
        "run", "--processor", "p.py:P", "--fileset", "x.root", "--schema", "nanoaodd", "-o", "o", cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "unknown schema 'nanoaodd'" in bad.stderr
    assert "Did you mean 'nanoaod'" in bad.stderr


PATH_PROCESSOR = textwrap.dedent("""\
    import json

    import awkward as ak

    import distproc


    class Threshold(distproc.Processor):
        def __init__(self, cuts_path):
            with open(cuts_path) as f:  # a plain open(), relative to wherever the process runs
                self.cut = json.load(f)["muon_pt"]

        def process(self, events):
            return {"n": int(ak.sum(events.Muon.pt > self.cut)), "cut": {self.cut}}
""")


@pytest.mark.cluster
def test_path_tag_resolves_against_the_yaml_from_another_cwd(tmp_path, nano_dy):
    """processor.args tagged !path resolve next to the YAML, so the config runs from any directory."""
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "threshold.py").write_text(PATH_PROCESSOR)
    (analysis / "cuts.json").write_text('{"muon_pt": 20.0}')
    (analysis / "run.yaml").write_text(
        "processor:\n  class: threshold.py:Threshold\n  args: {cuts_path: !path cuts.json}\n"
        f"fileset: {{dy: ['{nano_dy}']}}\nmax_chunks: 1\nchunksize: 30\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = cli("run", "../analysis/run.yaml", "-o", "out", "--workers", "1", cwd=elsewhere)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert distproc.load(elsewhere / "out").output["cut"] == {20.0}
    # without the tag the value is passed as written: from another directory the file is not found
    (analysis / "untagged.yaml").write_text((analysis / "run.yaml").read_text().replace("!path ", ""))
    untagged = cli("run", "../analysis/untagged.yaml", "-o", "out2", cwd=elsewhere)
    assert untagged.returncode == 2
    assert "could not create Threshold" in untagged.stderr
    assert "FileNotFoundError: [Errno 2] No such file or directory: 'cuts.json'" in untagged.stderr


def test_path_tag_values(tmp_path, monkeypatch):
    config = tmp_path / "conf" / "run.yaml"
    config.parent.mkdir()
    config.write_text(
        "processor:\n  class: a.py:A\n  args:\n"
        "    model: !path models/m.onnx\n    plain: models/m.onnx\n    home: !path ~/x.json\n"
        "    absolute: !path /data/sf.root\n    url: !path root://host//f.root\n"
        "fileset: {a: [a.root]}\n"
    )
    monkeypatch.chdir(tmp_path)
    args = load_config("conf/run.yaml").processor_args
    assert args["model"] == str(tmp_path / "conf" / "models" / "m.onnx")
    assert args["plain"] == "models/m.onnx"
    assert args["home"] == os.path.expanduser("~/x.json")
    assert args["absolute"] == "/data/sf.root"
    assert args["url"] == "root://host//f.root"


def test_path_tag_on_a_mapping_is_an_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("processor: {class: a.py:A, args: {model: !path {a: 1}}}\nfileset: {a: [a.root]}\n")
    with pytest.raises(ConfigError, match="!path takes one non-empty string"):
        load_config(config)


def test_run_config_from_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fs.yaml").write_text("tt: [data/tt.root]\n")
    cfg = run_config("a.py:A", "fs.yaml", schema="physlite", treename=None)
    assert cfg.fileset == {"tt": ["data/tt.root"]}
    assert cfg.fileset_dir == tmp_path
    assert cfg.options == {"schema": "physlite"}
    assert run_config("a.py:A", "skim/part.parquet").fileset == {
        "part": [str(tmp_path / "skim/part.parquet")]
    }
    with pytest.raises(ConfigError, match="chunksize must be int"):
        run_config("a.py:A", "x.root", chunksize="many")
