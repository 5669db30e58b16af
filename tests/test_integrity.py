"""Changed input is detected, never read silently (issue 14, item 6): a file replaced between preprocessing
and processing, and end-to-end adler32 checksums (a basket with flipped bytes), on a real LocalCluster
with real ROOT files, and over the real XRootD server."""

from __future__ import annotations

import json
import shutil
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
from _cli import cli

import distproc
from distproc.engine.state import WORKER
from distproc.exceptions import FilesetError
from distproc.fileset import normalize_fileset
from distproc.integrity import compute_checksum, file_stat, parse_checksum, verify_checksum
from distproc.samples import make_sample

PROC = f"{Path(__file__).parent / 'procs' / 'integrity.py'}:EventsPerFile"
CHANGED = "file changed since preprocessing"


def _adler32(path: Path) -> str:
    return f"adler32:{zlib.adler32(path.read_bytes()):08x}"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three 100-event files ``dy_0..2.root`` and a different 80-event one, ``other.root``."""
    base = tmp_path_factory.mktemp("samples")
    make_sample("dy", 300, base / "three", events_per_file=100)
    make_sample("dy", 80, base / "other", seed=2)
    return {"three": base / "three", "other": base / "other" / "dy_0.root"}


@pytest.fixture
def inputs(samples: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of the three files (a test replaces one) and of the other file."""
    directory = tmp_path / "in"
    shutil.copytree(samples["three"], directory)
    other = tmp_path / "other.root"
    shutil.copy(samples["other"], other)
    return directory, other


def _run(client: Any, fileset: Any, tmp_path: Path, **options: Any) -> distproc.RunResult:
    args = {k: options.pop(k) for k in ("replace", "total_of") if k in options}
    processor = distproc.load_processor(PROC, args)
    options.setdefault("chunksize", 25)
    return distproc.run(
        processor, fileset, cluster=client, progress=False, cache_dir=str(tmp_path / "cache"), **options
    )


def _replaced_run(
    client: Any, fileset: Any, tmp_path: Path, other: Path, target: Path, **options: Any
) -> Any:
    """A run whose processor moves *other* over *target* after preprocessing: the PartitionError of the
    replaced file's four partitions."""
    with pytest.raises(
        distproc.PartitionError, match=f"4 partitions failed with FileChangedError: {CHANGED}"
    ) as info:
        _run(client, fileset, tmp_path, replace=(str(other), str(target)), **options)
    return info.value


def test_file_replaced_between_preprocessing_and_processing_fails_its_partitions(client, inputs, tmp_path):
    """The issue's table row: today the replaced file's partitions read the new content unflagged and the
    report counts the planned events; now they fail naming the file and what differs, the others are
    kept, and the report counts what the processor saw."""
    directory, other = inputs
    target = directory / "dy_1.root"
    before = target.stat().st_size
    fileset = {"dy": [str(directory / "dy_*.root")]}
    result = _replaced_run(client, fileset, tmp_path, other, target).result

    assert not other.exists()  # the processor's hook moved it over dy_1.root (after preprocessing)
    failures = result.report.failures
    assert [(f.file, f.entry_start, f.entry_stop) for f in failures] == [
        (str(target), a, a + 25) for a in range(0, 100, 25)
    ]
    for failure in failures:
        assert failure.exception.startswith(f"FileChangedError: {CHANGED}: {target} (size {before} -> ")
        assert ", mtime " in failure.exception
    assert result.output["per_file"] == {"dy_0.root": 100, "dy_2.root": 100}
    assert result.report.events == result.output["events"]["dy"] == 200  # the report tells the truth
    assert result.partial
    assert not result.report.stopped_early  # a changed file is not a processor's repeated failure


def test_parquet_input_replaced_between_preprocessing_and_processing_fails_its_partitions(client, tmp_path):
    """The same for Parquet input (a skim read back): the replaced file's partitions fail naming it and
    its size and mtime; the other file's are kept."""
    import awkward as ak

    directory = tmp_path / "skim"
    directory.mkdir()
    for i in range(2):
        ak.to_parquet(ak.Array({"x": np.arange(100.0) + i}), directory / f"part_{i}.parquet")
    other = tmp_path / "other.parquet"
    ak.to_parquet(ak.Array({"x": np.arange(80.0)}), other)
    target = directory / "part_1.parquet"
    before = target.stat().st_size
    fileset = {"skim": [str(directory / "part_*.parquet")]}
    error = _replaced_run(client, fileset, tmp_path, other, target, schema="base")
    result = error.result
    assert [(f.file, f.entry_start) for f in result.report.failures] == [
        (str(target), a) for a in range(0, 100, 25)
    ]
    assert all(
        f.exception.startswith(f"FileChangedError: {CHANGED}: {target} (size {before} -> ")
        for f in result.report.failures
    )
    assert result.output["per_file"] == {"part_0.parquet": 100}
    # a Parquet file has no tree: the messages do not name one
    message = str(error).split("traceback of the failure:")[0]
    assert "tree" not in message, message
    assert "[Events]" not in message, message
    assert result.report.failures[0].describe().startswith(f"skim: {target} entries 0-25: FileChangedError")


def test_parquet_input_replaced_with_same_size_rows_and_mtime_fails_by_its_footer(client, tmp_path):
    """A Parquet file has no UUID: one replaced by another of the same size and rows, its modification
    time put back, is told apart by the digest of its footer (column chunk statistics) and fails."""
    import os

    import awkward as ak

    from distproc.parquet_input import count_rows_and_uuid

    plain = {"compression": "none", "parquet_dictionary_encoding": False}  # equal sizes for equal rows
    directory = tmp_path / "skim"
    directory.mkdir()
    for i in range(2):
        ak.to_parquet(ak.Array({"x": np.arange(100.0) + i}), directory / f"part_{i}.parquet", **plain)
    target, other = directory / "part_1.parquet", tmp_path / "other.parquet"
    ak.to_parquet(ak.Array({"x": np.arange(100.0) + 1000}), other, **plain)
    stat = target.stat()
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the move keeps this time
    assert other.stat().st_size == stat.st_size
    recorded, found = count_rows_and_uuid(str(target))[1], count_rows_and_uuid(str(other))[1]
    assert recorded != found

    fileset = {"skim": [str(directory / "part_*.parquet")]}
    error = _replaced_run(client, fileset, tmp_path, other, target, schema="base")
    assert (target.stat().st_mtime_ns, target.stat().st_size) == (stat.st_mtime_ns, stat.st_size)
    failures = error.result.report.failures
    assert [(f.file, f.entry_start) for f in failures] == [(str(target), a) for a in range(0, 100, 25)]
    assert all(f"{CHANGED}: {target} (uuid {recorded} -> {found})" in f.exception for f in failures)
    assert error.result.output["per_file"] == {"part_0.parquet": 100}


@pytest.mark.parametrize("skip", [True, ["OSError"]], ids=["true", "by-type"])
def test_changed_file_is_skipped_and_reported_with_skip_bad_files(client, inputs, tmp_path, skip):
    directory, other = inputs
    target = directory / "dy_1.root"
    fileset = {"dy": [str(directory / "dy_*.root")]}
    result = _run(client, fileset, tmp_path, replace=(str(other), str(target)), skip_bad_files=skip)

    assert not result.report.failures
    [skipped] = result.report.skipped_files
    assert skipped.startswith(f"{CHANGED}: {target} (size ")
    assert skipped.endswith("— skipped (4 partitions)")
    assert result.partial
    assert result.output["per_file"] == {"dy_0.root": 100, "dy_2.root": 100}
    assert result.report.events == 200


def test_changed_file_of_a_preprocessed_coffea_fileset_fails_by_uuid_and_entries(client, inputs, tmp_path):
    """A coffea fileset records each file's uuid and entries; a file overwritten in place since then (a
    different ROOT file under the same name) fails naming both."""
    from coffea.dataset_tools import preprocess

    directory, other = inputs
    target = directory / "dy_1.root"
    files = {str(directory / f"dy_{i}.root"): "Events" for i in range(3)}
    with warnings.catch_warnings():  # coffea's deprecation of dict input (the dict is what users hold)
        warnings.simplefilter("ignore", DeprecationWarning)
        available, _ = preprocess({"dy": {"files": files}}, step_size=50, scheduler=client)
    recorded = available["dy"]["files"][str(target)]
    want_uuid = str(uproot.open(other).file.uuid)
    target.write_bytes(other.read_bytes())  # same name, same inode, different content

    result = _run(client, available, tmp_path, allow_failures=True)
    assert [(f.entry_start, f.entry_stop) for f in result.report.failures] == [(0, 50), (50, 100)]
    message = result.report.failures[0].exception
    assert f"{CHANGED}: {target} (uuid {recorded['uuid']} -> {want_uuid}, entries 100 -> 80)" in message
    assert result.output["per_file"] == {"dy_0.root": 100, "dy_2.root": 100}
    assert result.report.events == 200


def test_unchanged_files_are_stat_ed_once_per_file_and_worker(inputs, tmp_path):
    """The identity check costs one stat per file and run on a worker, not one per partition."""
    directory, _ = inputs
    before = WORKER.built("file-stat")
    result = _run("inline", {"dy": [str(directory / "dy_*.root")]}, tmp_path, chunksize=10)
    assert result.report.partitions == 30
    assert not result.partial
    assert WORKER.built("file-stat") - before == 3


@pytest.fixture
def flat_file(tmp_path: Path) -> tuple[Path, float]:
    """A flat ntuple with uncompressed baskets, branch ``x`` = 1000, 1001, ... and its sum."""
    path = tmp_path / "flat.root"
    x = np.arange(1000, 1400, dtype=np.float64)
    with uproot.recreate(path, compression=None) as file:
        file.mktree("Events", {"x": np.float64}).extend({"x": x})  # a TTree (a dict would be an RNTuple)
    return path, float(x.sum())


def _flip_basket_bytes(path: Path) -> float:
    """Overwrite the stored value 1037.0 of ``x`` (inside its basket) with 5000.0; the sum's change."""
    data = bytearray(path.read_bytes())
    old, new = np.array([1037.0], ">f8").tobytes(), np.array([5000.0], ">f8").tobytes()
    assert data.count(old) == 1
    at = data.index(old)
    data[at : at + 8] = new
    path.write_bytes(bytes(data))
    return 5000.0 - 1037.0


def _flat_fileset(path: Path, checksum: str, *others: Path) -> dict[str, Any]:
    files = {str(path): {"object_path": "Events", "checksum": checksum}}
    files.update({str(o): "Events" for o in others})
    return {"flat": {"files": files}}


def test_flipped_basket_bytes_fail_the_file_with_verify_checksums(client, flat_file, tmp_path):
    path, total = flat_file
    good = tmp_path / "good.root"
    shutil.copy(path, good)
    checksum = _adler32(path)
    shift = _flip_basket_bytes(path)
    fileset = _flat_fileset(path, checksum, good)
    options = {"schema": "base", "total_of": "x", "chunksize": 100}

    # Without verification the damage is invisible: no error, a wrong sum.
    silent = _run(client, fileset, tmp_path, **options)
    assert not silent.partial
    assert silent.output["total"] == pytest.approx(2 * total + shift)

    result = _run(client, fileset, tmp_path, verify_checksums=True, allow_failures=True, **options)
    assert [(f.file, f.entry_start) for f in result.report.failures] == [
        (str(path), a) for a in range(0, 400, 100)
    ]
    message = result.report.failures[0].exception
    found = _adler32(path)
    assert message.startswith(
        f"ChecksumError: checksum mismatch: {path}: the fileset gives {checksum}, the file has {found}"
    )
    assert result.output["total"] == total  # the intact copy only
    assert result.output["per_file"] == {"good.root": 400}
    assert result.report.events == 400
    assert not result.report.stopped_early


def test_matching_checksum_gives_the_normal_result(client, flat_file, tmp_path):
    path, total = flat_file
    fileset = _flat_fileset(path, _adler32(path).upper().replace("ADLER32", "adler32"))
    options = {"schema": "base", "total_of": "x", "chunksize": 100}
    verified = _run(client, fileset, tmp_path, verify_checksums=True, **options)
    plain = _run(client, {"flat": [str(path)]}, tmp_path, **options)
    assert not verified.partial
    assert verified.output == plain.output
    assert verified.output["total"] == total
    assert verified.report.events == plain.report.events == 400


def test_checksum_mismatch_with_skip_bad_files_skips_the_file(client, flat_file, tmp_path):
    path, total = flat_file
    good = tmp_path / "good.root"
    shutil.copy(path, good)
    checksum = _adler32(path)
    _flip_basket_bytes(path)
    options = {"schema": "base", "total_of": "x", "chunksize": 100, "verify_checksums": True}
    result = _run(
        client, _flat_fileset(path, checksum, good), tmp_path, skip_bad_files=["ChecksumError"], **options
    )
    assert not result.report.failures
    [skipped] = result.report.skipped_files
    assert f"checksum mismatch: {path}: the fileset gives {checksum}" in skipped
    assert result.partial
    assert result.output["total"] == total
    assert result.report.partitions == 4  # the damaged file's partitions are not planned


def test_local_checksum_is_adler32_of_the_file(nano_dy):
    assert compute_checksum(str(nano_dy)) == _adler32(nano_dy)


@pytest.mark.parametrize(
    ("checksum", "expected"),
    [
        ("adler32:", "is not adler32: up to 8 hexadecimal digits"),
        ("adler32:0a1b2c3d9", "is not adler32: up to 8 hexadecimal digits"),
        ("adler32:xyz", "is not adler32: up to 8 hexadecimal digits"),
        ("adler23:0a1b2c3d", "unsupported checksum algorithm 'adler23'.*Did you mean 'adler32'"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported checksum algorithm 'md5'"),
        ("0a1b2c3d", "checksum must be a string like 'adler32:0a1b2c3d'"),
        (12345, "checksum must be a string like"),
    ],
)
def test_bad_checksum_syntax_names_the_file(nano_dy, checksum, expected):
    fileset = {"dy": {"files": {str(nano_dy): {"object_path": "Events", "checksum": checksum}}}}
    with pytest.raises(FilesetError, match=expected) as info:
        normalize_fileset(fileset)
    assert f"in file {nano_dy}" in str(info.value)
    assert "'dy'" in str(info.value)


def test_checksum_of_a_glob_is_refused(inputs):
    directory, _ = inputs
    fileset = {"dy": {"files": {str(directory / "*.root"): {"checksum": "adler32:0a1b2c3d"}}}}
    with pytest.raises(FilesetError, match=r"'checksum' belongs to one file, but .* names 3"):
        normalize_fileset(fileset)


def test_checksums_are_normalised():
    assert parse_checksum("ADLER32:A1B2C3D") == "adler32:0a1b2c3d"


def test_cli_bad_checksum_syntax_exits_2_naming_the_file(nano_dy, tmp_path):
    fileset = tmp_path / "fileset.json"
    fileset.write_text(
        json.dumps(
            {"dy": {"files": {str(nano_dy): {"object_path": "Events", "checksum": "adler32:nothex!"}}}}
        )
    )
    done = cli(
        "run", "--processor", PROC, "--fileset", str(fileset), "--output", str(tmp_path / "out"),
        "--verify-checksums", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    bad = "'adler32:nothex!' is not adler32: up to 8 hexadecimal digits"
    assert lines == [f"error: checksum {bad}; expected e.g. {_EXAMPLE}"]
    assert f"in file {nano_dy}" in done.stderr


_EXAMPLE = "'adler32:0a1b2c3d' (the algorithm, a colon, 8 hexadecimal digits; as Rucio records it)"


@pytest.mark.xrootd
def test_xrootd_checksum_query_verifies_remote_files(xrootd_server, client, nano_dy, nano_tt, tmp_path):
    """The server computes the checksum (``xrootd.chksum adler32``): equal to the local file's; a wrong
    one in the fileset fails the remote file's partitions naming the URL and both checksums."""
    dy_url, tt_url = xrootd_server.url(nano_dy.name), xrootd_server.url(nano_tt.name)
    assert compute_checksum(dy_url) == _adler32(nano_dy)
    wrong = "adler32:00000001"
    fileset = {
        "dy": {"files": {dy_url: {"object_path": "Events", "checksum": _adler32(nano_dy)}}},
        "tt": {"files": {tt_url: {"object_path": "Events", "checksum": wrong}}},
    }
    result = _run(client, fileset, tmp_path, verify_checksums=True, allow_failures=True, chunksize=50)
    assert {f.file for f in result.report.failures} == {tt_url}
    assert len(result.report.failures) == 4
    message = result.report.failures[0].exception
    assert (
        f"checksum mismatch: {tt_url}: the fileset gives {wrong}, the file has {_adler32(nano_tt)}" in message
    )
    assert result.output["events"] == {"dy": 40}  # the remote file's identity (size, mtime) checked too
    assert result.report.events == 40

    problem = verify_checksum(xrootd_server.url("no_such_file.root"), wrong, retries=0)
    assert "could not be computed" in problem
    assert "no such file" in problem


@pytest.mark.xrootd
def test_remote_file_replaced_on_the_server_fails_its_partitions(
    xrootd_server, client, nano_dy, nano_tt, tmp_path
):
    """A ``root://`` file's identity comes from the server (fsspec ``info()``: size, mtime) and the open
    file (uuid, entries): a file replaced on the server after preprocessing fails its partitions."""
    served = xrootd_server.data / f"integrity-{tmp_path.name}.root"
    replacement = xrootd_server.data / f"integrity-{tmp_path.name}-new.root"
    shutil.copy(nano_dy, served)
    shutil.copy(nano_tt, replacement)
    served.chmod(0o644)
    replacement.chmod(0o644)
    url = xrootd_server.url(served.name)
    try:
        assert file_stat(url)[0] == nano_dy.stat().st_size
        assert file_stat(url)[1] is not None
        result = _run(
            client,
            {"dy": [url]},
            tmp_path,
            replace=(str(replacement), str(served)),
            allow_failures=True,
            chunksize=20,
        )
    finally:
        served.unlink(missing_ok=True)
        replacement.unlink(missing_ok=True)
    assert [(f.entry_start, f.entry_stop) for f in result.report.failures] == [(0, 20), (20, 40)]
    size = f"size {nano_dy.stat().st_size} -> {nano_tt.stat().st_size}"
    assert f"{CHANGED}: {url} ({size}" in result.report.failures[0].exception
    assert result.report.events == 0
