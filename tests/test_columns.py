"""Column outputs: Parquet per partition, atomic and deterministic, a manifest, through distproc.run."""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

import distproc
from distproc import columns
from distproc.cli.main import main
from distproc.columns import (
    ColumnFile,
    ColumnFiles,
    ColumnWriter,
    bind_writers,
    read_columns,
    read_manifest,
    write_manifest,
    write_manifests,
)
from distproc.exceptions import ConfigError, ReadError
from distproc.samples import make_sample, sample_fileset

PROCS = Path(__file__).parent / "procs" / "agc_columns.py"
META = {"dataset": "tt", "filename": "/data/tt_0.root", "entrystart": 0, "entrystop": 100}


def parquet_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.parquet"))


def leftovers(directory: Path) -> list[str]:
    """Temporary files (dot files) anywhere below *directory*."""
    return [str(p) for p in directory.rglob(".*")]


# ---------------------------------------------------------------------------------------------------------
# The writer, the accumulator and the manifest, without a cluster


def test_write_is_deterministic_and_atomic(tmp_path: Path) -> None:
    writer = ColumnWriter("skim", tmp_path)
    table = ak.zip({"x": [1.0, 2.0, 3.0], "jets": [[1, 2], [], [3]]}, depth_limit=1)
    first = writer.write(table, META)
    again = writer.write(table, META)  # a retry of the same partition
    assert first == again
    assert parquet_files(tmp_path) == ["tt/tt_0-7f358956-0-100.parquet"]
    assert first.paths() == [str(writer.path_for(META))]
    assert not leftovers(tmp_path)
    assert ak.to_list(read_columns(write_manifest(first))) == ak.to_list(table)


def test_mapping_of_numpy_columns_and_matrix_slices(tmp_path: Path) -> None:
    matrix = np.arange(12.0).reshape(4, 3)  # columns of a matrix are strided views
    files = ColumnWriter("m", tmp_path).write({"a": matrix[:, 0], "b": matrix[:, 2]}, META)
    rows = read_columns(write_manifest(files))
    assert rows.a.tolist() == [0.0, 3.0, 6.0, 9.0]
    assert rows.b.tolist() == [2.0, 5.0, 8.0, 11.0]


def test_empty_partition_writes_no_file_and_removes_a_stale_one(tmp_path: Path) -> None:
    writer = ColumnWriter("skim", tmp_path)
    writer.write({"x": np.array([1.0])}, META)
    empty = writer.write({"x": np.array([], dtype=float)}, META)
    assert parquet_files(tmp_path) == []
    entry = next(iter(empty.entries.values()))
    assert (entry.path, entry.rows) == (None, 0)
    manifest = read_manifest(write_manifest(empty))
    assert manifest["rows"] == 0
    assert manifest["files"][0]["path"] is None
    assert len(read_columns(tmp_path)) == 0


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    writer = ColumnWriter("skim", tmp_path)
    union = ak.Array([{"x": 1} if i % 2 else 2 for i in range(4)])  # Arrow cannot store it in Parquet
    with pytest.raises(Exception, match="dense_union"):
        writer.write({"bad": union, "y": np.arange(4)}, META)
    assert parquet_files(tmp_path) == []
    assert not leftovers(tmp_path)


def test_accumulator_merges_by_partition() -> None:
    a = ColumnFiles("s", "/d", {"p0": ColumnFile("a.parquet", 3, 10, "tt", "f", 0, 5)}, ("x",))
    b = ColumnFiles("s", "/d", {"p1": ColumnFile("b.parquet", 4, 10, "tt", "f", 5, 9)}, ("x",))
    retried = ColumnFiles("s", "/d", {"p1": ColumnFile("b.parquet", 4, 10, "tt", "f", 5, 9)}, ("x",))
    total = a + b + retried
    assert total.rows == 7
    assert len(total.entries) == 2
    assert total.paths() == ["/d/a.parquet", "/d/b.parquet"]
    manifest = total.manifest()
    assert manifest["datasets"] == {"tt": {"rows": 7, "files": 2, "partitions": 2}}
    with pytest.raises(ConfigError, match="cannot add the column files of writer 'other'"):
        _ = a + ColumnFiles("other", "/e")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda w: w.write({"x": [1.0]}, {"dataset": "tt"}), r"missing \['filename', 'entrystart'"),
        (lambda w: w.write(ak.Array([1.0, 2.0]), META), "writes tables: give a record array"),
        (lambda w: w.write({}, META), "nothing to write"),
        (lambda w: ColumnWriter("a/b"), "file-name-safe"),
    ],
)
def test_bad_input(tmp_path: Path, call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call(ColumnWriter("skim", tmp_path))


def test_writer_without_directory_says_how_to_get_one() -> None:
    with pytest.raises(ConfigError, match=r"has no directory.*--output DIR.*DIR/skim"):
        ColumnWriter("skim").write({"x": [1.0]}, META)


def test_bind_writers(tmp_path: Path) -> None:
    class Proc:
        def __init__(self) -> None:
            self.unbound = ColumnWriter("a")
            self.nested = {"b": [ColumnWriter("b")]}
            self.bound = ColumnWriter("c", tmp_path / "elsewhere")

    proc = Proc()
    assert [w.name for w in bind_writers(proc, tmp_path / "out")] == ["a", "b"]
    assert proc.unbound.directory == str((tmp_path / "out" / "a").resolve())
    assert proc.bound.directory == str((tmp_path / "elsewhere").resolve())


def test_read_columns_checks_the_files(tmp_path: Path) -> None:
    writer = ColumnWriter("skim", tmp_path)
    files = writer.write({"x": np.arange(5.0)}, META)
    manifest = write_manifest(files)
    other = writer.write({"x": np.arange(3.0)}, META)  # another run rewrote the partition
    with pytest.raises(ReadError, match="holds 3 rows, the manifest says 5"):
        read_columns(manifest)
    Path(other.paths()[0]).unlink()
    with pytest.raises(ReadError, match="is missing"):
        read_columns(manifest)
    with pytest.raises(ReadError, match="column manifest not found"):
        read_columns(tmp_path / "nowhere")


def test_prune_removes_unlisted_files(tmp_path: Path) -> None:
    writer = ColumnWriter("skim", tmp_path)
    writer.write({"x": np.arange(5.0)}, META)  # an earlier run with another chunking
    files = writer.write({"x": np.arange(2.0)}, {**META, "entrystop": 50})
    write_manifest(files, prune=True)
    assert [Path(p).name for p in files.paths()] == [p.split("/")[-1] for p in parquet_files(tmp_path)]


def test_docstring_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(columns, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------------------------------------
# Through distproc.run on a real LocalCluster


@pytest.fixture(scope="module")
def fileset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("samples")
    infos = [
        make_sample("ttbar", 3000, directory, seed=1, events_per_file=1500),
        make_sample("wjets", 2000, directory, seed=2),
    ]
    return sample_fileset(infos)


def selected_events(fileset: dict, met_min: float) -> dict[str, np.ndarray]:
    """Independent reference: the event numbers with MET > met_min, with plain uproot."""
    out = {}
    for dataset, entry in fileset.items():
        numbers = []
        for path in entry["files"]:
            arrays = uproot.open(path)["Events"].arrays(["event", "MET_pt"], library="np")
            numbers.append(arrays["event"][arrays["MET_pt"] > met_min])
        out[dataset] = np.concatenate(numbers)
    return out


def run(client, fileset, tmp_path, **args):
    proc = distproc.load_processor(f"{PROCS}:MetSkim", {"directory": str(tmp_path / "met"), **args})
    return distproc.run(
        proc,
        fileset,
        cluster=client,
        chunksize=700,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
        allow_failures=True,
    )


@pytest.mark.cluster
def test_run_writes_one_file_per_partition_and_a_consistent_manifest(client, fileset, tmp_path) -> None:
    result = run(client, fileset, tmp_path)
    assert not result.partial
    manifests = write_manifests(result.output)
    assert list(manifests) == ["met"]
    manifest = read_manifest(manifests["met"])
    expected = selected_events(fileset, 40.0)
    assert manifest["rows"] == sum(len(v) for v in expected.values())
    for dataset, numbers in expected.items():
        assert manifest["datasets"][dataset]["rows"] == len(numbers) == result.output["selected"][dataset]
        assert manifest["datasets"][dataset]["partitions"] == result.report.datasets[dataset].partitions
        rows = read_columns(manifests["met"], datasets=[dataset])
        assert np.array_equal(np.sort(ak.to_numpy(rows.event)), np.sort(numbers))
    listed = sorted(e["path"] for e in manifest["files"] if e["path"])
    assert parquet_files(tmp_path / "met") == listed
    assert {e["rows"] for e in manifest["files"]} != {0}

    # A re-run (a retry) overwrites the same files: nothing is duplicated and the manifest is the same.
    again = run(client, fileset, tmp_path)
    assert parquet_files(tmp_path / "met") == listed
    assert read_manifest(write_manifests(again.output)["met"])["files"] == manifest["files"]
    assert not leftovers(tmp_path / "met")


@pytest.mark.cluster
def test_save_publishes_the_manifest_with_the_other_outputs(client, fileset, tmp_path) -> None:
    import threading

    out = tmp_path / "out"  # the column output is bound inside it: out/met
    first_datasets = sorted(fileset)[:1]
    first = run(client, {d: fileset[d] for d in first_datasets}, out)
    distproc.save(first, out)
    link = out / "met" / "manifest.json"
    assert link.is_symlink()
    assert link.resolve() == (out / ".outputs" / "current" / "met" / "manifest.json").resolve()
    assert sorted(read_manifest(link)["datasets"]) == first_datasets
    histograms = (out / "histograms.root").read_bytes()

    # The next run's outputs cannot be written (an output cloudpickle refuses): nothing of it is
    # published, the first run's manifest and histograms stay together.
    second = run(client, fileset, out)
    second.output["unpicklable"] = threading.Lock()
    with pytest.raises(TypeError, match="lock"):
        distproc.save(second, out)
    assert sorted(read_manifest(link)["datasets"]) == first_datasets
    assert (out / "histograms.root").read_bytes() == histograms
    assert len(read_columns(link)) == sum(first.output["selected"].values())

    del second.output["unpicklable"]
    distproc.save(second, out)
    assert sorted(read_manifest(link)["datasets"]) == sorted(fileset)
    assert len(read_columns(link)) == sum(second.output["selected"].values())
    assert [p.name for p in (out / ".outputs").iterdir() if p.name.startswith("run-")] == [
        os.readlink(out / ".outputs" / "current")
    ]


@pytest.mark.cluster
@pytest.mark.parametrize("when", ["before", "during", "after"])
def test_failing_partition(client, fileset, tmp_path, when: str) -> None:
    result = run(client, fileset, tmp_path, fail_dataset="wjets", when=when)
    assert result.partial
    assert len(result.report.failures) == 1
    manifest = read_manifest(write_manifests(result.output)["met"])
    failed = result.report.failures[0]
    assert (failed.dataset, failed.entry_start) == ("wjets", 0)
    assert all(not (e["dataset"] == "wjets" and e["entrystart"] == 0) for e in manifest["files"])
    assert not leftovers(tmp_path / "met")  # no partial or temporary file
    on_disk = parquet_files(tmp_path / "met")
    listed = sorted(e["path"] for e in manifest["files"] if e["path"])
    if when == "after":  # complete file of the failed partition: not in the manifest; a retry overwrites it
        assert len(on_disk) == len(listed) + 1
    else:
        assert on_disk == listed


@pytest.mark.cluster
def test_cli_run_binds_writers_to_the_output_and_writes_the_manifest(client, fileset, tmp_path) -> None:
    config = tmp_path / "skim.yaml"
    (tmp_path / "fileset.json").write_text(json.dumps(fileset))
    config.write_text(
        f"processor: {{class: '{PROCS}:MetSkim', args: {{met_min: 60.0}}}}\n"
        f"fileset: fileset.json\nchunksize: 1000\ncache_dir: {tmp_path / 'cache'}\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["run", str(config), "--output", str(out), "--scheduler", client.scheduler.address, "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out / "met" / "manifest.json")
    assert manifest["rows"] == sum(len(v) for v in selected_events(fileset, 60.0).values())
    assert "met:" in result.output
    assert "rows in" in result.output


@pytest.mark.cluster
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_outputs_honour_the_umask(fileset, tmp_path, umask: int, mode: int) -> None:
    """Every output file gets 0o666 less the umask, as ``open`` gives: a shared group can read them.

    The cluster starts under the umask, as a user's would, so the workers writing the column files
    have it too.
    """
    previous = os.umask(umask)
    try:
        out = tmp_path / "out"
        proc = distproc.load_processor(f"{PROCS}:MetSkim", {"directory": str(out / "met")})
        result = distproc.run(
            proc, fileset, workers=1, chunksize=2000, progress=False, cache_dir=str(tmp_path / "cache")
        )
        distproc.save(result, out)
        write_manifests(result.output)
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"histograms.root", "output.pkl", "report.json", "manifest.json"} <= names
    assert any(p.suffix == ".parquet" for p in files)
    assert any(p.parent.name == "cache" or "cache" in p.parts for p in files)  # the preprocessing cache
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} == {
        p.relative_to(tmp_path).as_posix(): oct(mode) for p in files
    }
