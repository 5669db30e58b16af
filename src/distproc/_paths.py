"""Paths and URLs: which are remote, and how every output file is written (atomically).

Every file distproc writes (``histograms.root``, ``output.pkl``, ``report.json``, column files and their
manifest, the preprocessing cache, generated samples, fit results) goes through :func:`atomic_write`, so
a crash never leaves a half-written file under the final name, and the file gets the permissions a plain
``open`` would give it (``0o666`` less the umask).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ("atomic_write", "is_parquet", "is_remote", "is_xrootd", "where_in_file")


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for URLs (``root://``, ``https://``, ...), false for local paths and ``file://`` URLs.

    Examples
    --------
    >>> is_remote("root://eospublic.cern.ch//eos/dy.root"), is_remote("file:///data/dy.root")
    (True, False)
    >>> is_remote("data/dy.root")
    False
    """
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def is_xrootd(path: str) -> bool:
    """True for an XRootD URL (``root://``, ``roots://``).

    Examples
    --------
    >>> is_xrootd("root://eospublic.cern.ch//eos/dy.root"), is_xrootd("https://host/dy.root")
    (True, False)
    """
    return path.startswith(("root://", "roots://"))


def is_parquet(path: str) -> bool:
    """True for a path or URL naming a Parquet file (``.parquet``, ``.parq``, ``.pq``).

    Examples
    --------
    >>> is_parquet("skim/part-0.parquet"), is_parquet("root://host//dy.root")
    (True, False)
    """
    return path.split("?", 1)[0].lower().endswith((".parquet", ".parq", ".pq"))


def where_in_file(file: str, treename: str | None) -> str:
    """``file [tree]`` for a ROOT file, the file alone for Parquet input (which has no tree).

    Examples
    --------
    >>> where_in_file("dy.root", "Events"), where_in_file("skim/part-0.parquet", "Events")
    ('dy.root [Events]', 'skim/part-0.parquet')
    """
    return file if treename is None or is_parquet(file) else f"{file} [{treename}]"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside *path*; when the block ends, the file there replaces *path*.

    The temporary file exists (empty) when the block starts, created as ``open(path, "w")`` would create
    it (mode ``0o666`` less the umask). Write it by name (``tmp.write_bytes(...)``,
    ``uproot.recreate(tmp)``, ``ak.to_parquet(array, tmp)``): the file is then flushed to disk
    (``fsync``) and renamed onto *path* (``os.replace``, atomic on POSIX). If the block raises, the
    temporary file is removed and *path* is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "report.json"
    >>> with atomic_write(target) as tmp:
    ...     _ = tmp.write_text("{}")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('{}', ['report.json'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
