"""Each bad input of the engine issue: a clear error naming what is at fault, nothing computed lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import distproc
from distproc.config import load_config, resolve_run_options

PROCS = Path(__file__).parent / "procs" / "muon.py"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    from distproc.cluster import open_client

    with open_client(workers=2) as c:
        yield c


@pytest.fixture
def run(client):
    def run(fileset, tmp_path, proc=None, **kwargs):
        proc = proc or distproc.load_processor(f"{PROCS}:MuonPt")
        kwargs.setdefault("cluster", client)
        return distproc.run(proc, fileset, progress=False, cache_dir=str(tmp_path / "cache"), **kwargs)

    return run


def test_missing_file(run, tmp_path):
    missing = tmp_path / "nope.root"
    with pytest.raises(distproc.FilesetError, match="file not found") as info:
        run({"dy": [str(missing)]}, tmp_path)
    assert str(missing) in str(info.value)
    assert "'dy'" in str(info.value)


def test_file_without_the_named_tree(run, nano_dy, tmp_path):
    with pytest.raises(distproc.FilesetError, match="no tree named 'Event'") as info:
        run({"dy": {"files": {str(nano_dy): "Event"}}}, tmp_path)
    message = str(info.value)
    assert "Did you mean 'Events'" in message
    assert str(nano_dy) in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_file(run, nano_dy, tmp_path, damage):
    bad = tmp_path / f"{damage}.root"
    data = nano_dy.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a ROOT file" * 100)
    with pytest.raises(distproc.ReadError) as info:
        run({"dy": [str(bad)]}, tmp_path)
    assert str(bad) in str(info.value)


def test_bad_files_can_be_skipped_and_are_reported(run, nano_dy, tmp_path):
    missing = tmp_path / "missing.root"
    result = run({"dy": [str(nano_dy), str(missing)]}, tmp_path, skip_bad_files=True)
    assert result.output["events"] == 40
    assert result.partial
    assert any(str(missing) in s for s in result.report.skipped_files)


def test_glob_matching_nothing(run, tmp_path):
    with pytest.raises(distproc.FilesetError, match=r"glob '.*/\*\.root' matched no file"):
        run({"dy": [str(tmp_path / "empty" / "*.root")]}, tmp_path)


def test_processor_file_that_does_not_import(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import numpy as np\nraise RuntimeError('broken on purpose')\n")
    with pytest.raises(distproc.ProcessorLoadError, match="broken on purpose") as info:
        distproc.load_processor(f"{bad}:Anything")
    assert str(bad) in str(info.value)
    with pytest.raises(distproc.ProcessorLoadError, match="not found"):
        distproc.load_processor(f"{tmp_path / 'absent.py'}:X")


def test_processor_class_not_found():
    with pytest.raises(distproc.ProcessorLoadError, match="no class 'MuonPT'") as info:
        distproc.load_processor(f"{PROCS}:MuonPT")
    assert "Did you mean 'MuonPt'" in str(info.value)


def test_processor_raising_on_one_partition(run, nano_dy, nano_tt, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonPt", {"fail_dataset": "tt"})
    fileset = {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}
    with pytest.raises(distproc.PartitionError) as info:
        run(fileset, tmp_path, proc=proc, chunksize=50)
    assert (info.value.file, info.value.entry_start, info.value.entry_stop) == (str(nano_tt), 0, 50)
    assert "1 partition failed with ValueError: deliberate failure in tt" in str(info.value)
    assert "in process" in str(info.value)  # the worker's traceback is in the message
    assert info.value.report is info.value.result.report
    assert run(fileset, tmp_path, proc=proc, chunksize=50, allow_failures=True).partial
    result = info.value.result  # the partial result is not lost
    assert result.partial
    (failure,) = result.report.failures
    assert (failure.dataset, failure.file, failure.entry_start, failure.entry_stop) == (
        "tt",
        str(nano_tt),
        0,
        50,
    )
    assert "deliberate failure in tt" in failure.exception
    assert "Traceback" in failure.traceback
    assert "in process" in failure.traceback
    assert "ValueError: deliberate failure in tt" in failure.traceback
    # the other partitions were processed and kept
    assert result.output["events"] == 40 + 150
    assert result.report.datasets["tt"].partitions == 3
    assert result.report.datasets["tt"].partitions_failed == 1
    saved = distproc.load(distproc.save(result, tmp_path / "out"))
    assert saved.partial
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["partial"] is True
    assert report["failures"][0]["entry_start"] == 0


def test_cli_partial_run_exits_non_zero_and_saves(nano_tt, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        textwrap.dedent(f"""
        processor: {{class: "{PROCS}:MuonPt", args: {{fail_dataset: tt}}}}
        fileset: {{tt: ["{nano_tt}"]}}
        chunksize: 100
        cache_dir: "{tmp_path / "cache"}"
        """)
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "distproc.cli", "run", str(config), "--output", str(out), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAILED 1 partition failed with ValueError: deliberate failure in tt" in proc.stdout
    assert "PARTIAL" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True
    assert report["datasets"]["tt"]["events"] == 100
    assert (out / "histograms.root").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "processor: a.py:A\nfileset: {a: [x.root]}\nchunksise: 10\n",
            "unknown key 'chunksise'.*'chunksize'",
        ),
        ("processor: a.py:A\nfileset: {a: [x.root]}\nchunksize: ten\n", "chunksize must be int"),
        ("processor: a.py:A\nfileset: {a: [x.root]}\nprogress: 3\n", "progress must be bool or null"),
        ("processor: 12\nfileset: {a: [x.root]}\n", "processor must be"),
        ("fileset: {a: [x.root]}\n", "missing required key 'processor'"),
        ("processor: a.py:A\nfileset: [x.root]\n", "fileset must be a mapping"),
        ("processor: a.py:A\nfileset: {a: [x.root]}\ncluster: 5\n", "cluster must be"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("processor: [unclosed\n", "not valid YAML"),
        ("processor: a.py:A\nfileset: {a: [x.root]}\nmode: dsak\n", "not be 'dsak'. Did you mean 'dask'"),
        ("processor: a.py:A\nfileset: {a: [x.root]}\nskip_bad_files: [3]\n", "list of exception type names"),
    ],
)
def test_yaml_unknown_keys_and_wrong_types(tmp_path, text, match):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(distproc.ConfigError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("chunksize", [0, -5])
def test_chunksize_not_positive(run, nano_dy, tmp_path, chunksize):
    with pytest.raises(distproc.ConfigError, match="chunksize must be at least 1"):
        run({"dy": [str(nano_dy)]}, tmp_path, chunksize=chunksize)


def test_environment_variable_is_validated(monkeypatch):
    monkeypatch.setenv("DISTPROC_CHUNKSIZE", "many")
    with pytest.raises(distproc.ConfigError, match="DISTPROC_CHUNKSIZE"):
        resolve_run_options()
    monkeypatch.setenv("DISTPROC_CHUNKSIZE", "5000")
    assert resolve_run_options()["chunksize"] == 5000


def test_unknown_schema(run, nano_dy, tmp_path):
    with pytest.raises(distproc.ConfigError, match=r"unknown schema 'nanoaodd'.*'nanoaod'"):
        run({"dy": [str(nano_dy)]}, tmp_path, schema="nanoaodd")


def test_unreachable_scheduler_fails_within_timeout(run, nano_dy, tmp_path):
    start = time.monotonic()
    cluster = {"kind": "address", "address": "tcp://127.0.0.1:1", "timeout": 3}
    with pytest.raises(distproc.ClusterError, match=r"tcp://127\.0\.0\.1:1"):
        run({"dy": [str(nano_dy)]}, tmp_path, cluster=cluster)
    assert time.monotonic() - start < 30


def test_malformed_fileset(run, tmp_path):
    with pytest.raises(distproc.FilesetError, match="unknown key 'file'"):
        run({"dy": {"file": ["x.root"]}}, tmp_path)
    with pytest.raises(distproc.FilesetError, match="non-empty mapping"):
        run({}, tmp_path)


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A crash while writing leaves neither a half-written file nor a temporary file behind."""
    from distproc import _paths

    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(_paths.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"), _paths.atomic_write(target) as tmp:
        tmp.write_bytes(b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_copy_of_repo_processor_runs_from_another_directory(run, nano_dy, tmp_path):
    """A processor file outside sys.path (and its local helper module) reaches the workers."""
    (tmp_path / "helpers_mod.py").write_text("SCALE = 2\n")
    (tmp_path / "user_proc.py").write_text(
        textwrap.dedent("""
        import distproc, helpers_mod
        class Count(distproc.Processor):
            def process(self, events):
                return {"n": helpers_mod.SCALE * len(events)}
        """)
    )
    shutil.copy(nano_dy, tmp_path / "dy.root")
    proc = distproc.load_processor(f"{tmp_path / 'user_proc.py'}:Count")
    result = run({"dy": [str(tmp_path / "dy.root")]}, tmp_path, proc=proc, chunksize=10)
    assert result.output == {"n": 80}
