"""The default mode against coffea's own ``processor.Runner`` on the same files: partitioning,
``max_chunks``, empty files, ``events.metadata``, plain callables, ``skip_bad_files`` with exception
types, and filesets written by ``coffea.dataset_tools.preprocess``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import distproc
from distproc.exceptions import FilesetError
from distproc.fileset import normalize_fileset
from distproc.partitioning import _CACHE_NAME, plan_partitions

PROCS = Path(__file__).parent / "procs" / "parity.py"
pytestmark = pytest.mark.cluster
MUON = {"pt": "float32", "eta": "float32", "phi": "float32", "mass": "float32", "charge": "int32"}


def write_nano(path: Path, n: int, seed: int = 0) -> str:
    """A minimal NanoAOD-like file of *n* events (0 allowed: the tree exists and is empty)."""
    rng = np.random.default_rng(seed)
    types = {"run": "uint32", "luminosityBlock": "uint32", "event": "uint64", "genWeight": "float32"}
    types.update({f"Muon_{k}": f"var * {t}" for k, t in MUON.items()})
    with uproot.recreate(path) as f:
        f.mktree("Events", types, counter_name=lambda _: "nMuon")
        if n:
            counts = rng.integers(0, 4, n)
            data = {
                "run": np.ones(n, np.uint32),
                "luminosityBlock": np.ones(n, np.uint32),
                "event": np.arange(n, dtype=np.uint64),
                "genWeight": rng.normal(1.0, 0.1, n).astype(np.float32),
            }
            data.update(
                {
                    f"Muon_{k}": ak.unflatten(rng.exponential(30, counts.sum()).astype(t), counts)
                    for k, t in MUON.items()
                }
            )
            f["Events"].extend(data)
    return str(path)


def coffea_run(fileset, proc, **kwargs):
    runner = processor.Runner(
        executor=processor.IterativeExecutor(), schema=NanoAODSchema, savemetrics=False, **kwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cross-references missing in small files; retries of bad files
        return runner(fileset, proc, treename="Events")


def run(proc, fileset, tmp_path, client, **kwargs):
    kwargs.setdefault("progress", False)
    return distproc.run(proc, fileset, cluster=client, cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.fixture
def ranges():
    return distproc.load_processor(f"{PROCS}:Ranges")


@pytest.mark.parametrize(
    ("chunksize", "max_chunks"), [(15, None), (30, 3), (70, None), (130, 1), (1000, None)]
)
def test_partitions_and_max_chunks_match_runner(
    client, nano_dy, nano_tt, ranges, tmp_path, chunksize, max_chunks
):
    fileset = {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}
    theirs = coffea_run(fileset, ranges, chunksize=chunksize, maxchunks=max_chunks)
    ours = run(ranges, fileset, tmp_path, client, chunksize=chunksize, max_chunks=max_chunks).output
    assert ours["ranges"] == theirs["ranges"]
    assert ours["cutflow"] == theirs["cutflow"]


def test_split_rule():
    from distproc.partitioning import _split

    assert _split(200, 15) == [(i * 16, min((i + 1) * 16, 200)) for i in range(13)]  # round(13.3) = 13
    assert _split(140, 100) == [(0, 140)]  # round(1.4) = 1: one partition longer than chunksize
    assert _split(150, 100) == [(0, 75), (75, 150)]
    assert _split(0, 100) == [(0, 0)]


def test_empty_files_match_runner(client, ranges, tmp_path):
    full = write_nano(tmp_path / "full.root", 50)
    empty = write_nano(tmp_path / "empty.root", 0)
    empty2 = write_nano(tmp_path / "empty2.root", 0)
    fileset = {"mixed": [full, empty], "nothing": [empty, empty2]}
    theirs = coffea_run(fileset, ranges, chunksize=20)
    result = run(ranges, fileset, tmp_path, client, chunksize=20)
    assert result.output["ranges"] == theirs["ranges"]
    assert result.output["cutflow"] == theirs["cutflow"]
    assert result.output["cutflow"]["nothing"] == {"all": 0, "muons": 0}
    assert result.report.datasets["nothing"].partitions == 2


def test_fileuuid_in_metadata_matches_runner(client, nano_dy, nano_tt, ranges, tmp_path):
    fileset = {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}
    theirs = coffea_run(fileset, ranges, chunksize=100)
    ours = run(ranges, fileset, tmp_path, client, chunksize=100).output
    assert ours["uuids"] == theirs["uuids"]
    assert {u for _, u in ours["uuids"]} == {str(uproot.open(p).file.uuid) for p in (nano_dy, nano_tt)}


def test_plain_callable_matches_runner(client, nano_dy, tmp_path):
    module = sys.modules[type(distproc.load_processor(f"{PROCS}:Ranges")).__module__]
    fileset = {"dy": [str(nano_dy)]}
    theirs = coffea_run(fileset, module.count_muons, chunksize=15)
    ours = run(module.count_muons, fileset, tmp_path, client, chunksize=15).output
    assert ours == theirs
    assert ours["events"] == 40


def test_skip_bad_files_takes_exception_type_names(client, nano_dy, ranges, tmp_path):
    missing = str(tmp_path / "missing.root")
    fileset = {"dy": [str(nano_dy), missing]}
    theirs = coffea_run(fileset, ranges, chunksize=15, skipbadfiles=(OSError,))
    result = run(ranges, fileset, tmp_path, client, chunksize=15, skip_bad_files=["OSError"])
    assert result.output["cutflow"] == theirs["cutflow"]
    assert result.partial
    assert missing in result.report.skipped_files[0]
    with pytest.raises(FilesetError, match=r"missing\.root"):
        run(ranges, fileset, tmp_path, client, chunksize=15, skip_bad_files=["KeyError"])


def test_preprocessed_fileset_steps_are_the_partitions(nano_dy, nano_tt, tmp_path):
    from coffea.dataset_tools import preprocess

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        available, _ = preprocess(
            {"dy": {"files": {str(nano_dy): "Events"}}, "tt": {"files": {str(nano_tt): "Events"}}},
            step_size=30,
            save_form=True,
            scheduler="sync",
        )
    datasets = normalize_fileset(available)
    table, _ = plan_partitions(datasets, chunksize=7, cache_dir=tmp_path)  # chunksize is not used
    got = [(table[i].file, table[i].entry_start, table[i].entry_stop) for i in range(len(table))]
    want = [(p, a, b) for ds in available.values() for p, f in ds["files"].items() for a, b in f["steps"]]
    assert got == want
    assert not (tmp_path / _CACHE_NAME).exists() or "nano" not in (tmp_path / _CACHE_NAME).read_text()


@pytest.mark.parametrize("steps", [[[0, 10], [10]], [[5, 2]], "0-10", [[-1, 3]], [[0, True]], []])
def test_bad_steps_name_the_file(nano_dy, steps):
    with pytest.raises(FilesetError, match="'steps' must be a list of") as err:
        normalize_fileset({"dy": {"files": {str(nano_dy): {"object_path": "Events", "steps": steps}}}})
    assert err.value.file == str(nano_dy)


def test_a_processor_that_is_neither_is_refused(nano_dy):
    with pytest.raises(distproc.ConfigError, match="must have a process"):
        distproc.run(42, {"dy": [str(nano_dy)]})
