"""The Python API writes what the CLI writes: column manifests, every dataset on the dataset axis, and the
console summary shows counters and cutflows."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import uproot
from _cli import cli

import distproc
from distproc.columns import bind_writers, read_columns

COLUMNS = Path(__file__).parent / "procs" / "agc_columns.py"

CUT_AWAY = textwrap.dedent("""\
    import awkward as ak
    import hist

    import distproc


    class CutAway(distproc.Processor):
        \"\"\"Muon pT of events with a muon; the dataset 'none' loses every event to its cut.\"\"\"

        def process(self, events):
            dataset = events.metadata["dataset"]
            cut = 1e9 if dataset == "none" else 0.0
            selected = events[ak.max(events.Muon.pt, axis=1, mask_identity=False) > cut]
            h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(10, 0, 100, name="pt").Weight()
            h.fill(dataset=dataset, pt=ak.flatten(selected.Muon.pt))
            cutflow = {"all": len(events), "muon": len(selected)}
            return {"pt": h, "cutflow": {dataset: cutflow}}
""")


def _run(processor, fileset, tmp_path, **options):
    return distproc.run(processor, fileset, progress=False, cache_dir=str(tmp_path / "cache"), **options)


def test_save_writes_the_column_manifests(nano_dy, tmp_path):
    """distproc.save from Python: read_columns reads what the run wrote (as after `distproc run`)."""
    processor = distproc.load_processor(f"{COLUMNS}:MetSkim", {"met_min": 0.0})
    bind_writers(processor, tmp_path / "out")
    result = _run(processor, {"dy": [str(nano_dy)]}, tmp_path, cluster="inline", chunksize=15)
    distproc.save(result, tmp_path / "out")
    rows = read_columns(tmp_path / "out" / "met")
    assert len(rows) == result.output["selected"]["dy"] == 40
    assert (tmp_path / "out" / "met" / "manifest.json").exists()


def test_column_writer_without_directory_fails_before_the_run(nano_dy, tmp_path):
    processor = distproc.load_processor(f"{COLUMNS}:MetSkim")
    with pytest.raises(distproc.ConfigError, match="ColumnWriter 'met' has no directory") as info:
        _run(processor, {"dy": [str(nano_dy)]}, tmp_path, cluster="inline")
    assert "bind_writers(processor, 'out')" in str(info.value)


def test_dataset_cut_away_stays_on_the_dataset_axis(nano_dy, tmp_path):
    (tmp_path / "cut.py").write_text(CUT_AWAY)
    processor = distproc.load_processor(f"{tmp_path / 'cut.py'}:CutAway")
    fileset = {"dy": [str(nano_dy)], "none": [str(nano_dy)]}
    result = _run(processor, fileset, tmp_path, cluster="inline")
    h = result.output["pt"]
    assert list(h.axes["dataset"]) == ["dy", "none"]
    assert h[{"dataset": "none"}].sum().value == 0
    assert h[{"dataset": "dy"}].sum().value > 0
    assert result.output["cutflow"]["none"] == {"all": 40, "muon": 0}
    distproc.save(result, tmp_path / "out")
    with uproot.open(tmp_path / "out" / "histograms.root") as file:
        assert file["pt/none"].values().sum() == 0
        assert file["pt/dy"].values().sum() > 0


def test_cli_summary_shows_counters_and_cutflows(nano_dy, tmp_path):
    (tmp_path / "cut.py").write_text(CUT_AWAY)
    (tmp_path / "run.yaml").write_text(
        f"processor: {{class: cut.py:CutAway}}\nfileset: {{dy: [{nano_dy}], none: [{nano_dy}]}}\n"
        "cluster: {kind: inline}\n"
    )
    ran = cli("run", "run.yaml", "--output", "out", cwd=tmp_path, DISTPROC_CACHE_DIR=str(tmp_path / "cache"))
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert "counters:" in ran.stdout
    assert "cutflow/none/all: 40" in ran.stdout
    assert "cutflow/none/muon: 0" in ran.stdout
    assert "dataset={dy, none}" in ran.stdout  # the histogram's axis lists the cut-away dataset
