"""ATLAS PHYSLITE end to end (processors/physlite.py) against plain uproot + numpy, on a LocalCluster; the
derived dataset (Parquet, ROOT) and an RNTuple read back as the next step's input; schema mismatches."""

from __future__ import annotations

import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from _cli import cli

import distproc
from distproc.columns import bind_writers, read_columns, write_manifests
from distproc.exceptions import FilesetError
from distproc.reading import count_entries, partition_events

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
PROCESSORS = REPO / "processors"
DERIVED = Path(__file__).parent / "procs" / "derived_proc.py"
sys.path.insert(0, str(PROCESSORS))
import physlite  # noqa: E402  (the reference's constants: the same cuts and tables, computed independently)

VARIATIONS = ("nominal", "ele_sf_up", "ele_sf_down", "jes_up", "jes_down")
WORKERS = ("--workers", "2", "--no-progress")
HT_BINS = np.linspace(0.0, 1000.0, 21)
LT_BINS = np.linspace(0.0, 400.0, 21)


def _lookup(x: np.ndarray, edges, table) -> np.ndarray:
    """``table[np.digitize(x, edges) - 1]``, clamped to the first and last bin."""
    return np.asarray(table)[np.clip(np.digitize(x, edges) - 1, 0, len(table) - 1)]


def reference(path: Path) -> dict:
    """The analysis in plain numpy on uproot's arrays, event by event: per variation the HT and LT of
    the selected events, and the nominal derived rows keyed by event number."""
    branches = {
        "ele_pt": "AnalysisElectronsAuxDyn.pt",
        "ele_eta": "AnalysisElectronsAuxDyn.eta",
        "mu_pt": "AnalysisMuonsAuxDyn.pt",
        "mu_eta": "AnalysisMuonsAuxDyn.eta",
        "jet_pt": "AnalysisJetsAuxDyn.pt",
        "jet_eta": "AnalysisJetsAuxDyn.eta",
        "event": "EventInfoAuxDyn.eventNumber",
    }
    with uproot.open(path) as file:
        arrays = file["CollectionTree"].arrays(list(branches.values()), library="np")
    data = {k: arrays[v] for k, v in branches.items()}
    sf_values = np.array(physlite.ELECTRON_SF_VALUES)
    sf_errors = np.array(physlite.ELECTRON_SF_ERRORS)
    sf_tables = {"ele_sf_up": sf_values + sf_errors, "ele_sf_down": sf_values - sf_errors}
    jes_edges = [0.0, 0.8, 1.5, 2.5, np.inf]
    jes_tables = {"jes_up": [1.015, 1.02, 1.03, 1.05], "jes_down": [0.985, 0.98, 0.97, 0.95]}
    out = {v: {"ht": [], "lt": []} for v in VARIATIONS}
    rows = {}
    for i in range(len(data["event"])):
        e_pt32 = np.asarray(data["ele_pt"][i], dtype=np.float32) / np.float32(1000)
        e_eta = np.asarray(data["ele_eta"][i], dtype=np.float32)
        m_pt = np.asarray(data["mu_pt"][i], dtype=np.float32) / np.float32(1000)
        m_eta = np.asarray(data["mu_eta"][i], dtype=np.float32)
        j_pt32 = np.asarray(data["jet_pt"][i], dtype=np.float32) / np.float32(1000)
        j_eta = np.asarray(data["jet_eta"][i], dtype=np.float32)
        for variation in VARIATIONS:
            sf = sf_tables.get(variation, sf_values)
            e_pt = e_pt32 * _lookup(e_pt32, physlite.ELECTRON_SF_EDGES, sf)
            jes = jes_tables.get(variation, [1.0, 1.0, 1.0, 1.0])
            j_pt = j_pt32 * _lookup(np.abs(j_eta), jes_edges, jes)
            good_e = (e_pt > 25) & (np.abs(e_eta) < 2.47)
            good_m = (m_pt > 25) & (np.abs(m_eta) < 2.5)
            good_j = (j_pt > 30) & (np.abs(j_eta) < 2.5)
            if good_e.sum() + good_m.sum() < 1 or good_j.sum() < 2:
                continue
            out[variation]["ht"].append(j_pt[good_j].sum())
            out[variation]["lt"].append(e_pt[good_e].sum() + m_pt[good_m].sum())
            if variation == "nominal":
                rows[int(data["event"][i])] = {
                    "jet_pt": j_pt[good_j],
                    "jet_eta": j_eta[good_j],
                    "ele_pt": e_pt[good_e],
                    "mu_pt": m_pt[good_m],
                    "ht": j_pt[good_j].sum(),
                    "n_jets": int(good_j.sum()),
                }
    return {"hists": out, "rows": rows}


@pytest.fixture(scope="module")
def analysis(client, physlite, tmp_path_factory):
    """processors/physlite.py run with distproc on a LocalCluster, 4 partitions, SF from the ROOT file."""
    out = tmp_path_factory.mktemp("physlite")
    proc = distproc.load_processor(
        f"{PROCESSORS / 'physlite.py'}:PhysliteAnalysis",
        {"sf_file": str(PROCESSORS / "data/electron_sf.root")},
    )
    bind_writers(proc, out)
    result = distproc.run(
        proc,
        {"ttbar": {"files": {str(physlite): "CollectionTree"}}},
        cluster=client,
        schema="physlite",
        chunksize=25,
        cache_dir=str(out / "cache"),
    )
    assert not result.partial, [f.describe() for f in result.report.failures]
    return result, write_manifests(result.output), reference(physlite)


def test_histograms_equal_the_uproot_numpy_computation(analysis):
    result, _, ref = analysis
    assert result.report.partitions == 4
    for name, bins in (("ht", HT_BINS), ("lt", LT_BINS)):
        h = result.output[name]
        assert set(h.axes["variation"]) == set(VARIATIONS)
        for variation in VARIATIONS:
            expected, _ = np.histogram(np.array(ref["hists"][variation][name]), bins=bins)
            got = h[{"dataset": "ttbar", "variation": variation}].values()
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} {variation}")
    nominal = result.output["ht"][{"dataset": "ttbar", "variation": "nominal"}]
    up = result.output["ht"][{"dataset": "ttbar", "variation": "jes_up"}]
    assert not np.array_equal(nominal.values(), up.values())  # the variation moves events between bins
    assert result.output["cutflow"]["ttbar"] == {"all": 100, "selected": len(ref["rows"])}


@pytest.mark.parametrize("name", ["derived", "derived_root"])
def test_derived_columns_equal_the_uproot_numpy_computation(analysis, name):
    """The Parquet and the ROOT TTree outputs hold the selected events' nominal rows."""
    _, manifests, ref = analysis
    table = read_columns(manifests[name])
    assert manifests[name].parent.name == name
    by_event = {int(e): i for i, e in enumerate(table.event_number)}
    assert set(by_event) == set(ref["rows"])
    for event, row in ref["rows"].items():
        got = table[by_event[event]]
        assert got.n_jets == row["n_jets"]
        # float32 inputs times float64 factors: both sides compute the same operations
        np.testing.assert_allclose(ak.to_numpy(got.jet_pt), row["jet_pt"], rtol=1e-12)
        np.testing.assert_allclose(ak.to_numpy(got.jet_eta), row["jet_eta"], rtol=1e-7)
        np.testing.assert_allclose(ak.to_numpy(got.ele_pt), row["ele_pt"], rtol=1e-12)
        np.testing.assert_allclose(ak.to_numpy(got.mu_pt), row["mu_pt"], rtol=1e-7)
        np.testing.assert_allclose(float(got.ht), row["ht"], rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "by"), [("derived", "manifest"), ("derived_root", "manifest"), ("derived", "files")]
)
def test_derived_dataset_is_the_next_steps_input(client, analysis, tmp_path, name, by):
    """A fileset entry naming the manifest's directory (or the Parquet files) reads the derived dataset
    back through distproc.run on the LocalCluster (coffea's Parquet NanoEvents path for Parquet)."""
    _, manifests, ref = analysis
    directory = manifests[name].parent
    files = [str(directory)] if by == "manifest" else sorted(str(p) for p in directory.rglob("*.parquet"))
    proc = distproc.load_processor(f"{DERIVED}:FieldSum", {"field": "ht", "key": "event_number"})
    result = distproc.run(
        proc, {"next": files}, cluster=client, schema="base", chunksize=20, cache_dir=str(tmp_path / "c")
    )
    assert not result.partial, [f.describe() for f in result.report.failures]
    assert result.output["rows"]["next"] == len(ref["rows"])
    assert result.output["keys"]["next"] == set(ref["rows"])
    assert result.output["sum"]["next"] == pytest.approx(
        sum(r["ht"] for r in ref["rows"].values()), rel=1e-12
    )
    assert result.report.partitions >= 4  # at least one per file: the analysis wrote one per partition


def test_rntuple_input(client, tmp_path):
    """An RNTuple (written by uproot) is read as events, partition by partition."""
    path = tmp_path / "rn.root"
    x = np.arange(50, dtype=np.float64)
    with uproot.recreate(path) as file:
        file.mkrntuple("Events", ak.Array({"x": x, "jets": ak.Array([[1.0, 2.0]] * 50)}))
    proc = distproc.load_processor(f"{DERIVED}:FieldSum", {"field": "x"})
    result = distproc.run(
        proc, {"rn": [str(path)]}, cluster=client, schema="base", chunksize=20, cache_dir=str(tmp_path / "c")
    )
    assert not result.partial
    assert result.report.partitions == 2  # coffea's rule: max(round(50 / 20), 1) = 2 chunks of 25
    assert result.output["rows"]["rn"] == 50
    assert result.output["sum"]["rn"] == float(x.sum())


def test_physlite_run_through_the_cli_summarises_skipped_branches_once(tmp_path):
    """The YAML of the README, through the CLI on two workers: coffea's ~250 "Skipping ..." warnings
    per file and worker become one summary; the sf_file tagged !path resolves next to the YAML."""
    cache = {"DISTPROC_CACHE_DIR": str(tmp_path / "cache")}
    ran = cli("run", str(PROCESSORS / "physlite.yaml"), "-o", "out", *WORKERS, cwd=tmp_path, **cache)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert (ran.stdout + ran.stderr).count("coffea's schema left out") == 1  # printed by run(), on stderr
    assert "cannot be represented as an Awkward array: AnalysisElectrons" in ran.stderr
    assert "Skipping" not in ran.stderr + ran.stdout
    assert "derived_root: 73 rows in" in ran.stdout
    with uproot.open(tmp_path / "out" / "histograms.root") as file:
        assert file["ht/ttbar/jes_up"].values().sum() > 0


def test_schema_that_does_not_match_the_file(physlite, nano_dy):
    with pytest.raises(FilesetError, match=r"looks like PHYSLITE \(CollectionTree\); schema is nanoaod"):
        partition_events(str(physlite), "CollectionTree", 0, 10, schema="nanoaod")
    with pytest.raises(FilesetError, match=r"looks like NanoAOD \(Events\); schema is physlite"):
        partition_events(str(nano_dy), "Events", 0, 10, schema="physlite")
    with pytest.raises(FilesetError, match=r"looks like PHYSLITE \(CollectionTree\): set treename"):
        count_entries(str(physlite), "Events")


def test_bad_parquet_input_names_the_file(tmp_path):
    """A file that is not Parquet, and a missing one, stop preprocessing with the file named."""
    from distproc.fileset import normalize_fileset
    from distproc.partitioning import plan_partitions

    (tmp_path / "bad.parquet").write_text("not parquet")
    for name, message in (("bad.parquet", "not a readable Parquet file"), ("gone.parquet", "file not found")):
        datasets = normalize_fileset({"next": [str(tmp_path / name)]})
        with pytest.raises(FilesetError, match=message) as info:
            plan_partitions(datasets, chunksize=10, cache_dir=tmp_path / "cache")
        assert info.value.file == str(tmp_path / name)


def test_missing_manifest_in_a_fileset(tmp_path):
    from distproc.fileset import normalize_fileset

    with pytest.raises(FilesetError, match="column manifest not found; run the processor"):
        normalize_fileset({"next": [str(tmp_path / "skim" / "manifest.json")]})


def test_column_writer_format_is_checked():
    from distproc.columns import ColumnWriter
    from distproc.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"format must be one of \['parquet', 'root'\], got 'csv'"):
        ColumnWriter("skim", format="csv")


class _Count(distproc.Processor):
    def process(self, events):
        return {"events": len(events)}


def test_an_in_process_run_reports_only_its_own_files_skipped_branches(physlite, nano_dy, tmp_path):
    """Runs in this process share the record of skipped branches: a later run on other files must not
    report the branches an earlier run's files left out."""
    options = {"cluster": "inline", "cache_dir": str(tmp_path / "cache"), "progress": False}
    first = distproc.run(
        _Count(), {"ttbar": [str(physlite)]}, schema="physlite", treename="CollectionTree", **options
    )
    assert list(first.report.skipped_branches) == [str(physlite)]
    second = distproc.run(_Count(), {"dy": [str(nano_dy)]}, **options)
    assert second.output["events"] == second.report.events > 0
    assert second.report.skipped_branches == {}
