"""The shared path helpers: which paths are remote, atomic writes, categorical axes."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import hist
import pytest

from distproc import _paths, io
from distproc._paths import atomic_write, is_remote


@pytest.mark.parametrize(
    ("path", "remote"),
    [
        ("root://eospublic.cern.ch//eos/opendata/dy.root", True),
        ("roots://host:1094//data/tt.root", True),
        ("https://example.org/nano.root", True),
        ("file:///data/dy.root", False),
        ("/data/dy.root", False),
        ("samples/tt_*.root", False),
        (Path("samples/tt_0.root"), False),
    ],
)
def test_is_remote(path: str | Path, remote: bool) -> None:
    assert is_remote(path) is remote


def test_atomic_write_replaces_and_honours_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    previous = os.umask(0o077)
    try:
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path
            assert tmp.exists()
            assert target.read_bytes() == b"old"  # untouched until the block ends
            tmp.write_bytes(b"new")
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_leaves_nothing_when_the_block_raises(tmp_path: Path) -> None:
    def write_half(target: Path) -> None:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise ValueError("writer failed")

    with pytest.raises(ValueError, match="writer failed"):
        write_half(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_is_category() -> None:
    h = (
        hist.Hist.new.StrCat(["a"], name="dataset")
        .IntCat([1, 2], name="n")
        .Reg(2, 0, 1, name="x")
        .Variable([0, 1, 3], name="y")
        .Integer(0, 3, name="i")
        .Boolean(name="b")
        .Weight()
    )
    assert [io.is_category(axis) for axis in h.axes] == [True, True, False, False, False, False]


@pytest.mark.parametrize("module", [_paths, io], ids=lambda m: m.__name__)
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
