"""Input integrity: what preprocessing recorded of each file, checked again before its partitions are read.

Preprocessing (:func:`distproc.partitioning.plan_partitions`) records a :class:`FileRecord` per input
file: its UUID and entry count (from the file, when it counts the entries, or from a preprocessed coffea
fileset's ``uuid``/``num_entries``), its size and modification time (``os.stat`` locally, fsspec's
``info()`` for URLs) and the checksum the fileset gives. When a worker starts a partition it compares:

- size and modification time, stat-ed once per file per worker and run (kept in the run's
  :class:`~distproc.engine.state.RunState`), before the file is opened;
- UUID and entry count of the open file (free: the file is open anyway).

A difference fails the partition with :class:`~distproc.exceptions.FileChangedError`, ``file changed
since preprocessing: PATH (size 61344 -> 59018, entries 40 -> 38)``: a replaced file is never read
silently (with ``skip_bad_files`` it is skipped and reported instead, :func:`skip_changed`).

**Checksums.** A fileset may give a file's checksum as Rucio records it (``checksum: adler32:0a1b2c3d``,
:func:`parse_checksum`). With ``verify_checksums`` each such file's checksum is computed once per run,
during preprocessing, on a worker (:func:`verify_checksum`): a local file is read through
(``zlib.adler32``), a ``root://`` file is asked of its XRootD server (``kXR_Qcksum``: the server computes
it, nothing crosses the network), other URLs are streamed through fsspec. A mismatch (or a checksum that
cannot be obtained) fails the file's partitions with :class:`~distproc.exceptions.ChecksumError` naming
both checksums. The identity check above then guarantees that the file read is the one verified.
"""

from __future__ import annotations

import datetime
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from distproc._paths import is_remote, is_xrootd
from distproc.exceptions import ChecksumError, FileChangedError, FilesetError, format_options
from distproc.parquet_input import is_parquet
from distproc.remote import RETRIES, XROOTD_TIMEOUT, configure_xrootd, remote_options, with_retries

__all__ = (
    "CHECKSUM_ALGORITHMS",
    "FileRecord",
    "check_open_file",
    "check_unchanged",
    "compute_checksum",
    "file_identity",
    "file_stat",
    "parse_checksum",
    "skip_changed",
    "verify_checksum",
)

#: Checksum algorithms a fileset may give (as ``NAME:HEX``) → digits of the hexadecimal value.
CHECKSUM_ALGORITHMS = {"adler32": 8}
#: Bytes read at a time when a file's checksum is computed by reading it.
_BLOCK = 4 << 20
#: Stat results one run keeps per worker (one per input file it reads; small tuples).
_STAT_ENTRIES = 4096


@dataclass(frozen=True)
class FileRecord:
    """What preprocessing recorded of one input file; ``None`` where it is not known.

    ``mtime`` is in seconds since the epoch; ``checksum`` is the fileset's (``adler32:0a1b2c3d``);
    ``checksum_error`` says why ``verify_checksums`` does not trust the file (set in preprocessing).

    Examples
    --------
    >>> from distproc.integrity import FileRecord
    >>> FileRecord(uuid="5b1e...", size=61344, entries=40).checksum is None
    True
    """

    uuid: str | None = None
    size: int | None = None
    mtime: float | None = None
    entries: int | None = None
    checksum: str | None = None
    checksum_error: str | None = None


def parse_checksum(value: Any, *, dataset: str | None = None, file: str | None = None) -> str:
    """A fileset's checksum ``ALGORITHM:HEX`` normalised (lower case, zero-padded), else a
    :class:`~distproc.exceptions.FilesetError` naming the file.

    Examples
    --------
    >>> parse_checksum("ADLER32:A1B2C3D")
    'adler32:0a1b2c3d'
    """
    example = "'adler32:0a1b2c3d' (the algorithm, a colon, 8 hexadecimal digits; as Rucio records it)"
    if not isinstance(value, str) or ":" not in value:
        msg = f"checksum must be a string like {example}, got {value!r:.60}"
        raise FilesetError(msg, dataset=dataset, file=file)
    algorithm, _, digits = value.strip().partition(":")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        msg = (
            f"unsupported checksum algorithm {algorithm!r} in {value!r}. "
            f"{format_options(algorithm, CHECKSUM_ALGORITHMS, 'algorithms')}"
        )
        raise FilesetError(msg, dataset=dataset, file=file)
    width = CHECKSUM_ALGORITHMS[algorithm]
    if not re.fullmatch(rf"[0-9a-fA-F]{{1,{width}}}", digits):
        what = f"{algorithm}: up to {width} hexadecimal digits"
        msg = f"checksum {value!r} is not {what}; expected e.g. {example}"
        raise FilesetError(msg, dataset=dataset, file=file)
    return f"{algorithm}:{int(digits, 16):0{width}x}"


def _remote_fs(path: str) -> tuple[Any, str]:
    """The fsspec file system of URL *path* (XRootD with bounded timeouts) and the path on it."""
    import fsspec

    return fsspec.core.url_to_fs(path, **remote_options(path))


def _seconds(value: Any) -> float | None:
    """A modification time as fsspec's ``info()`` gives it (number or datetime), in epoch seconds."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def file_stat(path: str) -> tuple[int, float | None] | None:
    """``(size, modification time)`` of *path* (``os.stat``, or fsspec's ``info()`` for URLs), or None
    when it cannot be stat-ed. The time is in epoch seconds (None where the storage gives none).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"1234")
    ...     f.flush()
    ...     file_stat(f.name)[0]
    4
    """
    if not is_remote(path):
        try:
            st = os.stat(path.removeprefix("file://"))
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns / 1e9
    try:
        fs, fspath = _remote_fs(path)
        info = fs.info(fspath)
        return int(info["size"]), _seconds(info.get("mtime", info.get("modified")))
    except Exception:  # noqa: BLE001  (any failure just means: not known)
        return None


def file_identity(path: str, stat: tuple[int, float | None] | None = None) -> str | None:
    """A cheap identity of a file's content (path, size, mtime) without opening it as ROOT: the key of
    the preprocessing cache. *stat* is :func:`file_stat`'s (stat-ed here when not given).

    Returns ``None`` when the file cannot be stat-ed (it then gets no cache entry).
    """
    stat = stat if stat is not None else file_stat(path)
    if stat is None:
        return None
    name = path if is_remote(path) else os.path.abspath(path.removeprefix("file://"))
    return f"{name}|{stat[0]}|{stat[1]!r}"


def _xrootd_checksum(url: str, algorithm: str) -> str:
    """The checksum the XRootD server of *url* computes (``kXR_Qcksum``; the server needs
    ``xrootd.chksum adler32`` in its configuration)."""
    from urllib.parse import urlsplit

    from XRootD.client import FileSystem
    from XRootD.client.flags import QueryCode

    configure_xrootd()
    parts = urlsplit(url)
    status, response = FileSystem(f"{parts.scheme}://{parts.netloc}").query(
        QueryCode.CHECKSUM, parts.path, timeout=XROOTD_TIMEOUT
    )
    if not status.ok:
        error = FileNotFoundError if status.errno == 3011 else OSError
        msg = f"the XRootD server gave no checksum: {status.message.strip()}"
        raise error(msg)
    name, _, value = response.decode(errors="replace").strip("\x00 \n").partition(" ")
    if name.lower() != algorithm:
        msg = f"the XRootD server gave a {name} checksum ({response!r}), not {algorithm}"
        raise OSError(msg)
    return value


def compute_checksum(path: str, algorithm: str = "adler32", *, retries: int = RETRIES) -> str:
    """The checksum of *path* as ``ALGORITHM:HEX``: a ``root://`` file's from its XRootD server, any
    other file's by reading it through (remote reads with *retries*).

    Examples
    --------
    >>> import tempfile, zlib
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"Wikipedia")
    ...     f.flush()
    ...     compute_checksum(f.name)
    'adler32:11e60398'
    """
    if algorithm not in CHECKSUM_ALGORITHMS:
        msg = (
            f"unsupported checksum algorithm {algorithm!r}. {format_options(algorithm, CHECKSUM_ALGORITHMS)}"
        )
        raise ValueError(msg)
    if is_xrootd(path):
        value = with_retries(lambda: _xrootd_checksum(path, algorithm), what=path, retries=retries)
        return parse_checksum(f"{algorithm}:{value}", file=path)

    def read() -> int:
        if is_remote(path):
            fs, fspath = _remote_fs(path)
            handle = fs.open(fspath, "rb")
        else:
            handle = open(path.removeprefix("file://"), "rb")  # noqa: SIM115  (closed below)
        value = 1  # adler32 of nothing
        with handle:
            while block := handle.read(_BLOCK):
                value = zlib.adler32(block, value)
        return value

    return f"{algorithm}:{with_retries(read, what=path, retries=retries):08x}"


def verify_checksum(path: str, expected: str, retries: int = RETRIES) -> str | None:
    """Why *path* is not trusted: its checksum differs from *expected* (or cannot be computed); None
    when it matches. Runs on a worker, once per file and run, during preprocessing."""
    algorithm = expected.split(":", 1)[0]
    try:
        found = compute_checksum(path, algorithm, retries=retries)
    except Exception as err:  # noqa: BLE001  (reported as the file's failure, naming the cause)
        cause = f"{type(err).__name__}: {err}"
        return f"checksum of {path} could not be computed ({cause}); the fileset gives {expected}"
    if found != expected:
        return f"checksum mismatch: {path}: the fileset gives {expected}, the file has {found}"
    return None


def _shown(name: str, value: Any) -> str:
    if name == "mtime":
        return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat(timespec="microseconds")
    return str(value)


def _compare(path: str, record: FileRecord, found: dict[str, Any], part: Any) -> None:
    """Raise :class:`FileChangedError` naming every field of *found* that differs from *record*."""
    differ = [
        f"{name} {_shown(name, getattr(record, name))} -> {_shown(name, value)}"
        for name, value in found.items()
        if value is not None and getattr(record, name) is not None and value != getattr(record, name)
    ]
    if differ:
        msg = f"file changed since preprocessing: {path} ({', '.join(differ)})"
        raise FileChangedError(msg, dataset=part.dataset, file=path, treename=part.treename)


def check_unchanged(state: Any, part: Any, record: FileRecord) -> None:
    """Before partition *part* opens its file: raise :class:`ChecksumError` when checksum verification
    failed in preprocessing, :class:`FileChangedError` when the file's size or modification time differ
    from *record*. The file is stat-ed once per worker and run (kept in the run's *state*)."""
    if record.checksum_error is not None:
        raise ChecksumError(
            record.checksum_error, dataset=part.dataset, file=part.file, treename=part.treename
        )
    if record.size is None and record.mtime is None:
        return
    stat = state.cached("file-stat", part.file, lambda: file_stat(part.file) or (), limit=_STAT_ENTRIES)
    if stat:
        _compare(part.file, record, {"size": stat[0], "mtime": stat[1]}, part)


def check_open_file(file: Any, part: Any, record: FileRecord) -> None:
    """After partition *part* opened its file *file* (uproot's, or a Parquet input): raise
    :class:`FileChangedError` when its UUID or entry count differ from *record*."""
    if is_parquet(part.file):
        found = {"uuid": file.uuid, "entries": file.parquet.metadata.num_rows}
    else:
        found = {"uuid": str(file.file.uuid), "entries": file[part.treename].num_entries}
    _compare(part.file, record, found, part)


#: The prefix of a partition failure's ``exception`` that :func:`skip_changed` skips.
_CHANGED = f"{FileChangedError.__name__}: "


def skip_changed(
    failures: Sequence[Any], skip_bad_files: bool | Iterable[str]
) -> tuple[list[Any], list[str]]:
    """Split partition *failures* into those that stay failures and the skipped files' lines: with
    *skip_bad_files* (true, or a list of exception type names matching :class:`FileChangedError` or one
    of its bases), a file changed since preprocessing is skipped and reported, one line per file.

    Examples
    --------
    >>> from distproc.report import PartitionFailure
    >>> changed = "FileChangedError: file changed since preprocessing: a.root (size 10 -> 9)"
    >>> kept, skipped = skip_changed([PartitionFailure("dy", "a.root", "Events", 0, 5, changed, "")], True)
    >>> kept, skipped
    ([], ['file changed since preprocessing: a.root (size 10 -> 9) — skipped (1 partition)'])
    """
    names = {cls.__name__ for cls in FileChangedError.__mro__}
    skip = skip_bad_files is True or (
        not isinstance(skip_bad_files, bool) and bool(names & set(skip_bad_files))
    )
    if not skip:
        return list(failures), []
    kept, changed = [], {}
    for failure in failures:
        if failure.exception.startswith(_CHANGED):
            first = failure.exception.removeprefix(_CHANGED).split("\n", 1)[0]
            changed.setdefault(first, []).append(failure)
        else:
            kept.append(failure)
    lines = [
        f"{first} — skipped ({len(parts)} partition{'s' if len(parts) > 1 else ''})"
        for first, parts in changed.items()
    ]
    return kept, lines
