"""Parquet input: a derived dataset (a :class:`~distproc.columns.ColumnWriter` output) read as events.

A fileset entry may name ``.parquet`` files, or a distproc column manifest (``manifest.json`` or the
directory holding it; see :func:`distproc.fileset.normalize_fileset`). Each Parquet file is counted
from its footer and read partition by partition through coffea's Parquet NanoEvents path
(``NanoEventsFactory.from_parquet``, virtual mode: only the columns the processor touches are read), in
the same task as a ROOT partition, so it runs on every back-end. The tree name is not used.

A Parquet file has no UUID; its identity for :mod:`distproc.integrity` is a digest of its footer
(:attr:`ParquetInput.uuid`): the offsets, sizes and statistics of every column chunk, so a file replaced
by another with the same size, rows and modification time is still told apart.
"""

from __future__ import annotations

import functools
import hashlib
import io
import pickle
from typing import Any

from distproc._paths import is_parquet, is_remote
from distproc.exceptions import ReadError

__all__ = (
    "ParquetInput",
    "count_rows_and_uuid",
    "is_parquet",
    "open_parquet",
    "parquet_events",
)


class _CountingFile(io.FileIO):
    """A local file that counts the bytes read from it (the run report's "bytes read")."""

    num_requested_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.num_requested_bytes += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer) or 0
        self.num_requested_bytes += n
        return n


class ParquetInput:
    """An open Parquet file with the attributes the engine uses of an uproot file.

    ``file.source.num_requested_bytes`` counts the bytes read (local files; 0 for remote ones),
    ``file.array_cache`` is accepted and unused, ``close()`` closes it.
    """

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self.path = path
        if is_remote(path):
            import fsspec

            self._handle: Any = fsspec.open(path, "rb").open()
            self.source: Any = _NoCount()
        else:
            self._handle = _CountingFile(path.removeprefix("file://"), "r")
            self.source = self._handle
        self.parquet = pq.ParquetFile(self._handle)
        self.array_cache = None

    @functools.cached_property
    def uuid(self) -> str:
        """``footer-sha256:`` and the first 16 hex digits of the SHA-256 of the file's footer (its
        metadata: schema, row groups, and each column chunk's offsets, sizes and statistics), as pyarrow
        read it when the file was opened (its pickle holds the footer serialised: nothing is read again)."""
        return f"footer-sha256:{hashlib.sha256(pickle.dumps(self.parquet.metadata)).hexdigest()[:16]}"

    @property
    def file(self) -> ParquetInput:
        """Itself (an uproot ``ReadOnlyDirectory`` has ``.file``; the engine reads counters there)."""
        return self

    def close(self) -> None:
        """Close the file."""
        self.parquet.close()
        self._handle.close()


class _NoCount:
    num_requested_bytes = 0


def open_parquet(path: str, dataset: str | None = None) -> ParquetInput:
    """Open *path* as Parquet; an unreadable file raises :class:`~distproc.exceptions.ReadError`."""
    try:
        return ParquetInput(path)
    except FileNotFoundError as err:
        msg = "file not found"
        raise ReadError(msg, dataset=dataset, file=path) from err
    except Exception as err:
        msg = f"file is not a readable Parquet file: {type(err).__name__}: {err}"
        raise ReadError(msg, dataset=dataset, file=path) from err


def count_rows_and_uuid(path: str, dataset: str | None = None) -> tuple[int, str]:
    """Rows of a Parquet file and its identity (:attr:`ParquetInput.uuid`), from its footer.

    Examples
    --------
    >>> count_rows_and_uuid("skim/ttbar/ttbar_0-1a2b3c4d-0-50000.parquet")  # doctest: +SKIP
    (1234, 'footer-sha256:3f0c9a1e5b7d2c48')
    """
    file = open_parquet(path, dataset)
    try:
        return int(file.parquet.metadata.num_rows), file.uuid
    finally:
        file.close()


def parquet_events(
    file: ParquetInput, entry_start: int, entry_stop: int, schema_cls: type, metadata: Any
) -> Any:
    """Rows ``[entry_start, entry_stop)`` of *file* as NanoEvents (``NanoEventsFactory.from_parquet``)."""
    from coffea.nanoevents import NanoEventsFactory

    return NanoEventsFactory.from_parquet(
        file.parquet,
        mode="virtual",
        entry_start=entry_start,
        entry_stop=entry_stop,
        schemaclass=schema_cls,
        metadata=dict(metadata or {}),
    ).events()
