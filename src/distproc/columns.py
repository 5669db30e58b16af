"""Column outputs: derived datasets (skims, training data) written as Parquet or ROOT from ``process``.

A processor that produces rows rather than histograms holds a :class:`ColumnWriter` and returns what it
writes as part of its output::

    class Skim(distproc.Processor):
        def __init__(self):
            self.writer = ColumnWriter("skim")

        def process(self, events):
            selected = events[events.MET.pt > 50]
            table = ak.zip({"met": selected.MET.pt, "njet": ak.num(selected.Jet)})
            return {"skim": self.writer.write(table, events.metadata)}

:meth:`ColumnWriter.write` writes one Parquet file (or, with ``format="root"``, one ROOT file with a
TTree named ``Events``, written by uproot) per partition, first to a temporary name and then
renamed into place, so a partition that fails leaves no partial file. The name is a pure function of
the partition (dataset, input file, entry range): a retried or re-run partition overwrites its file
instead of adding a duplicate. It returns a :class:`ColumnFiles`, an addable accumulator listing the
files and their row counts, which the engine reduces like any histogram. After the run,
:func:`write_manifest` writes ``manifest.json`` next to the files (atomically): the list of files, rows
and source partitions that belong to the run. ``distproc run --output DIR`` binds writers created
without a directory to ``DIR/<name>`` (:func:`bind_writers`) and writes their manifests
(:func:`write_manifests`). Readers go through the manifest (:func:`read_columns`), never a glob, so
files of an earlier run with another chunking are never mixed in.

Partitions that select no row write no file (and remove the file of an earlier run, if any); they are
listed in the manifest with ``"path": null``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distproc._paths import atomic_write
from distproc.exceptions import ConfigError, ReadError

__all__ = (
    "MANIFEST_NAME",
    "ColumnFile",
    "ColumnFiles",
    "ColumnWriter",
    "bind_writers",
    "check_writers_bound",
    "iter_column_files",
    "read_columns",
    "read_manifest",
    "write_manifest",
    "write_manifests",
)

#: File name of the manifest written next to the Parquet files.
MANIFEST_NAME = "manifest.json"
_FORMAT = "distproc-columns-1"
#: File formats a :class:`ColumnWriter` writes: suffix of the files.
FORMATS = {"parquet": ".parquet", "root": ".root"}
#: Name of the TTree in the ROOT files a ``format="root"`` writer writes.
ROOT_TREENAME = "Events"
_METADATA_KEYS = ("dataset", "filename", "entrystart", "entrystop")


@dataclass(frozen=True)
class ColumnFile:
    """One partition's Parquet file: where it is, how many rows it holds and what it was made from.

    ``path`` is relative to the writer's directory, or ``None`` when the partition selected no row.
    """

    path: str | None
    rows: int
    bytes: int
    dataset: str
    source: str
    entrystart: int
    entrystop: int

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry."""
        return {
            "path": self.path,
            "rows": self.rows,
            "bytes": self.bytes,
            "dataset": self.dataset,
            "source": self.source,
            "entrystart": self.entrystart,
            "entrystop": self.entrystop,
        }


@dataclass
class ColumnFiles:
    """The files a :class:`ColumnWriter` wrote: an addable accumulator (``a + b`` merges the lists).

    Entries are keyed by partition, so adding the result of a retried partition replaces its entry.

    Examples
    --------
    >>> a = ColumnFiles("skim", "/out/skim", {"p0": ColumnFile("x.parquet", 3, 100, "tt", "f.root", 0, 10)})
    >>> b = ColumnFiles("skim", "/out/skim", {"p1": ColumnFile(None, 0, 0, "tt", "f.root", 10, 20)})
    >>> (a + b).rows, len((a + b).entries), (a + b).paths()
    (3, 2, ['/out/skim/x.parquet'])
    """

    name: str
    directory: str
    entries: dict[str, ColumnFile] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    format: str = "parquet"

    def __add__(self, other: ColumnFiles) -> ColumnFiles:
        if not isinstance(other, ColumnFiles):
            return NotImplemented
        if (other.name, other.directory) != (self.name, self.directory):
            msg = (
                f"cannot add the column files of writer {other.name!r} ({other.directory}) to those of "
                f"{self.name!r} ({self.directory}); return each writer's files under its own output key"
            )
            raise ConfigError(msg, key="columns")
        return replace(self, entries={**self.entries, **other.entries}, fields=self.fields or other.fields)

    @property
    def rows(self) -> int:
        """Rows in all files together."""
        return sum(entry.rows for entry in self.entries.values())

    def paths(self) -> list[str]:
        """Absolute paths of the files (partitions without rows have none), in manifest order."""
        return [str(Path(self.directory) / e.path) for e in self._ordered() if e.path is not None]

    def _ordered(self) -> list[ColumnFile]:
        return sorted(self.entries.values(), key=lambda e: (e.dataset, e.source, e.entrystart))

    def manifest(self) -> dict[str, Any]:
        """The content of ``manifest.json`` (see :func:`write_manifest`)."""
        ordered = self._ordered()
        datasets: dict[str, dict[str, int]] = {}
        for entry in ordered:
            ds = datasets.setdefault(entry.dataset, {"rows": 0, "files": 0, "partitions": 0})
            ds["rows"] += entry.rows
            ds["files"] += entry.path is not None
            ds["partitions"] += 1
        return {
            "format": _FORMAT,
            "file_format": self.format,
            **({"treename": ROOT_TREENAME} if self.format == "root" else {}),
            "name": self.name,
            "rows": self.rows,
            "fields": list(self.fields),
            "datasets": datasets,
            "files": [entry.to_dict() for entry in ordered],
        }


def _partition_key(metadata: Mapping[str, Any]) -> tuple[str, str, int, int]:
    missing = [key for key in _METADATA_KEYS if key not in metadata]
    if missing:
        msg = (
            f"ColumnWriter.write needs the partition's events.metadata with keys {list(_METADATA_KEYS)}; "
            f"missing {missing}. Pass events.metadata (distproc and coffea fill it for every partition)"
        )
        raise ConfigError(msg, key=missing[0])
    return (
        str(metadata["dataset"]),
        str(metadata["filename"]),
        int(metadata["entrystart"]),
        int(metadata["entrystop"]),
    )


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip(".") or "_"


class ColumnWriter:
    """Writes a table per partition as a Parquet file, atomically, under a deterministic name.

    Parameters
    ----------
    name
        The output's name: the manifest's ``name`` and, for a writer bound to a run's output directory,
        the sub-directory (``DIR/<name>``).
    directory
        Where the files go (``<directory>/<dataset>/<file>-<hash>-<start>-<stop>.parquet``). ``None``:
        set later by :func:`bind_writers` (``distproc run --output DIR`` does it). Workers must see the
        directory at the same path (a local cluster or a shared filesystem).
    compression
        Parquet compression (``"zstd"``, ``"lz4"``, ``"snappy"``, ``"gzip"`` or ``None``); for ROOT
        files, uproot's default (zlib) is used.
    format
        ``"parquet"`` (default) or ``"root"``: a ROOT file per partition holding a TTree ``Events``
        (jagged fields become ``std::vector`` branches with an ``n<field>`` counter), for training
        frameworks and ROOT users.

    Examples
    --------
    >>> import tempfile, awkward as ak
    >>> writer = ColumnWriter("skim", tempfile.mkdtemp())
    >>> meta = {"dataset": "tt", "filename": "/data/tt_0.root", "entrystart": 0, "entrystop": 4}
    >>> files = writer.write(ak.zip({"ht": [120.0, 340.5], "njet": [4, 6]}), meta)
    >>> files.rows, Path(files.paths()[0]).name
    (2, 'tt_0-7f358956-0-4.parquet')
    >>> read_columns(write_manifest(files)).ht.tolist()
    [120.0, 340.5]
    """

    def __init__(
        self,
        name: str = "columns",
        directory: str | os.PathLike[str] | None = None,
        *,
        compression: Any = "zstd",
        format: str = "parquet",
    ) -> None:
        if not isinstance(name, str) or not name or _safe(name) != name:
            msg = (
                "ColumnWriter name must be a non-empty file-name-safe string (letters, digits, -_.), "
                f"got {name!r}"
            )
            raise ConfigError(msg, key="name")
        self.name = name
        self.directory = None if directory is None else str(Path(directory).resolve())
        self.compression = compression
        if format not in FORMATS:
            msg = f"ColumnWriter format must be one of {sorted(FORMATS)}, got {format!r}"
            raise ConfigError(msg, key="format")
        self.format = format

    def path_for(self, metadata: Mapping[str, Any]) -> Path:
        """The Parquet file of the partition described by *metadata* (``events.metadata``).

        Examples
        --------
        >>> w = ColumnWriter("skim", "/out/skim")
        >>> meta = {"dataset": "tt", "filename": "/data/tt_0.root", "entrystart": 0, "entrystop": 4}
        >>> str(w.path_for(meta))
        '/out/skim/tt/tt_0-7f358956-0-4.parquet'
        """
        dataset, filename, start, stop = _partition_key(metadata)
        if self.directory is None:
            msg = (
                f"ColumnWriter {self.name!r} has no directory: create it with ColumnWriter({self.name!r}, "
                "directory=...), or run through `distproc run CONFIG --output DIR`, which writes to "
                f"DIR/{self.name}"
            )
            raise ConfigError(msg, key="directory")
        stem = _safe(Path(filename.rsplit("?", 1)[0]).name.removesuffix(".root")) or "file"
        digest = hashlib.blake2b(filename.encode(), digest_size=4).hexdigest()
        suffix = FORMATS[self.format]
        return Path(self.directory) / _safe(dataset) / f"{stem}-{digest}-{start}-{stop}{suffix}"

    def write(self, data: Any, metadata: Mapping[str, Any]) -> ColumnFiles:
        """Write *data* (one row per entry) for the partition of *metadata*; return the accumulator.

        Parameters
        ----------
        data
            An awkward record array, or a mapping of field name to equally long arrays. Fields may be
            jagged (lists per row).
        metadata
            The partition's ``events.metadata`` (``dataset``, ``filename``, ``entrystart``,
            ``entrystop``), which names the file.

        Returns
        -------
        ColumnFiles
            One entry: this partition's file (or ``path=None`` without rows).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> writer = ColumnWriter("skim", tempfile.mkdtemp())
        >>> meta = {"dataset": "tt", "filename": "tt.root", "entrystart": 0, "entrystop": 3}
        >>> files = writer.write({"ht": np.array([210.0, 305.5]), "njet": np.array([4, 5])}, meta)
        >>> [(e.path, e.rows) for e in files.entries.values()]
        [('tt/tt-de9e2f16-0-3.parquet', 2)]
        """
        import awkward as ak

        dataset, filename, start, stop = _partition_key(metadata)
        path = self.path_for(metadata)
        array = _as_records(data, self.name)
        rows = len(array)
        relative: str | None = None
        size = 0
        if rows:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as tmp:
                _write_columns(array, tmp, self.compression, self.format)
            relative = path.relative_to(self.directory).as_posix()  # type: ignore[arg-type]
            size = path.stat().st_size
        else:
            path.unlink(missing_ok=True)  # an earlier run's file for this partition is stale now
        entry = ColumnFile(relative, rows, size, dataset, filename, start, stop)
        key = f"{dataset}|{filename}|{start}|{stop}"
        return ColumnFiles(self.name, str(self.directory), {key: entry}, tuple(ak.fields(array)), self.format)

    def __repr__(self) -> str:
        return f"ColumnWriter({self.name!r}, directory={self.directory!r})"


def _as_records(data: Any, name: str) -> Any:
    import awkward as ak
    import numpy as np

    if isinstance(data, Mapping):
        if not data:
            msg = f"ColumnWriter {name!r}: nothing to write (an empty mapping of columns)"
            raise ConfigError(msg, key="data")
        columns = {k: np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}
        return ak.to_packed(ak.zip(columns, depth_limit=1))
    array = ak.Array(data) if not isinstance(data, ak.Array) else data
    if not ak.fields(array):
        msg = (
            f"ColumnWriter {name!r} writes tables: give a record array or a mapping of column name to "
            f"array, got an array of type {array.type}"
        )
        raise ConfigError(msg, key="data")
    return ak.to_packed(array)  # Arrow needs contiguous buffers (column slices of a matrix are not)


def _write_columns(array: Any, path: Path, compression: Any, file_format: str) -> None:
    """Write *array* to *path* as Parquet or as a ROOT TTree (``file_format`` ``"parquet"``/``"root"``)."""
    import awkward as ak

    if file_format == "root":
        import uproot

        with uproot.recreate(path) as file:
            file[ROOT_TREENAME] = {name: array[name] for name in ak.fields(array)}
    else:
        ak.to_parquet(array, path, compression=compression, extensionarray=False)


def iter_column_files(output: Any, prefix: str = "") -> Iterator[tuple[str, ColumnFiles]]:
    """Yield ``(key, ColumnFiles)`` for every column output in a nested accumulator.

    Examples
    --------
    >>> output = {"skim": ColumnFiles("skim", "/out/skim"), "hists": {}, "n": 3}
    >>> [key for key, _ in iter_column_files(output)]
    ['skim']
    """
    if isinstance(output, ColumnFiles):
        yield prefix, output
    elif isinstance(output, Mapping):
        for key, value in output.items():
            yield from iter_column_files(value, f"{prefix}/{key}" if prefix else str(key))


def write_manifest(
    files: ColumnFiles, *, prune: bool = False, into: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``manifest.json`` for *files* into their directory (atomically); return its path.

    Parameters
    ----------
    files
        The reduced :class:`ColumnFiles` of a run.
    prune
        Also delete Parquet files in the directory that the manifest does not list (files of an
        earlier run with another chunking, or of partitions that failed after writing).
    into
        Write the manifest into this directory instead (a set of outputs being prepared:
        :func:`distproc.save` publishes it at the column directory). Its paths stay relative to the
        column directory.

    Examples
    --------
    >>> import tempfile, awkward as ak
    >>> writer = ColumnWriter("skim", tempfile.mkdtemp())
    >>> meta = {"dataset": "tt", "filename": "tt.root", "entrystart": 0, "entrystop": 2}
    >>> path = write_manifest(writer.write({"x": [1.0, 2.0]}, meta))
    >>> path.name, read_manifest(path)["rows"]
    ('manifest.json', 2)
    """
    directory = Path(files.directory)
    directory.mkdir(parents=True, exist_ok=True)
    content = files.manifest()
    if prune:
        listed = {directory / entry["path"] for entry in content["files"] if entry["path"]}
        for stale in directory.rglob(f"*{FORMATS[files.format]}"):
            if stale not in listed:
                stale.unlink()
    path = (directory if into is None else Path(into)) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1) + "\n")
    return path


def write_manifests(output: Any, *, prune: bool = False) -> dict[str, Path]:
    """Write the manifest of every :class:`ColumnFiles` in a run's *output*; ``{output key: path}``.

    Examples
    --------
    >>> import distproc
    >>> result = distproc.run(Skim(), fileset)  # doctest: +SKIP
    >>> write_manifests(result.output)  # doctest: +SKIP
    {'skim': PosixPath('/out/skim/manifest.json')}
    """
    return {key: write_manifest(files, prune=prune) for key, files in iter_column_files(output)}


def bind_writers(processor: Any, directory: str | os.PathLike[str]) -> list[ColumnWriter]:
    """Give every :class:`ColumnWriter` of *processor* without a directory ``<directory>/<name>``.

    Looks at the processor's attributes, and inside lists, tuples and dicts held by them. Returns the
    writers that were bound.

    Examples
    --------
    >>> class P:
    ...     def __init__(self):
    ...         self.writer = ColumnWriter("skim")
    >>> p = P()
    >>> [w.name for w in bind_writers(p, "/out")], p.writer.directory
    (['skim'], '/out/skim')
    """
    bound = []
    for writer in _writers(vars(processor).values() if hasattr(processor, "__dict__") else ()):
        if writer.directory is None:
            writer.directory = str((Path(directory) / writer.name).resolve())
            bound.append(writer)
    return bound


def check_writers_bound(processor: Any) -> None:
    """Raise :class:`~distproc.exceptions.ConfigError` before a run if a :class:`ColumnWriter` of
    *processor* has no directory (each partition would fail on it).

    Examples
    --------
    >>> class P:
    ...     def __init__(self):
    ...         self.writer = ColumnWriter("skim")
    >>> check_writers_bound(P())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    distproc.exceptions.ConfigError: ColumnWriter 'skim' has no directory: ...
    """
    for writer in _writers(vars(processor).values() if hasattr(processor, "__dict__") else ()):
        if writer.directory is None:
            msg = (
                f"ColumnWriter {writer.name!r} has no directory: create it with "
                f"ColumnWriter({writer.name!r}, directory=...), or bind it to the output directory you "
                f"will save to with distproc.columns.bind_writers(processor, 'out') (files in "
                f"out/{writer.name}, as `distproc run --output out` does)"
            )
            raise ConfigError(msg, key="directory")


def _writers(values: Iterable[Any]) -> Iterator[ColumnWriter]:
    for value in values:
        if isinstance(value, ColumnWriter):
            yield value
        elif isinstance(value, Mapping):
            yield from _writers(value.values())
        elif isinstance(value, list | tuple):
            yield from _writers(value)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a ``manifest.json`` (or the directory holding one).

    Raises
    ------
    ReadError
        The manifest is missing, unreadable or not a distproc column manifest.

    Examples
    --------
    >>> import tempfile
    >>> writer = ColumnWriter("skim", tempfile.mkdtemp())
    >>> meta = {"dataset": "tt", "filename": "tt.root", "entrystart": 0, "entrystop": 2}
    >>> manifest = read_manifest(write_manifest(writer.write({"x": [1.0, 2.0]}, meta)))
    >>> manifest["name"], manifest["rows"], manifest["files"][0]["path"]
    ('skim', 2, 'tt/tt-de9e2f16-0-2.parquet')
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError as err:
        msg = "column manifest not found; run the processor that writes these columns first"
        raise ReadError(msg, file=str(path)) from err
    except (OSError, ValueError) as err:
        msg = f"cannot read the column manifest: {err}"
        raise ReadError(msg, file=str(path)) from err
    if not isinstance(content, dict) or content.get("format") != _FORMAT:
        msg = f"not a distproc column manifest (expected 'format': {_FORMAT!r})"
        raise ReadError(msg, file=str(path))
    content["directory"] = str(path.parent.resolve())
    return content


def read_columns(
    manifest: str | os.PathLike[str],
    *,
    columns: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
) -> Any:
    """Read the rows listed by a manifest as one awkward array, checking every file's row count.

    Parameters
    ----------
    manifest
        ``manifest.json`` or the directory holding it.
    columns
        Fields to read (default: all).
    datasets
        Only these datasets (default: all).

    Raises
    ------
    ReadError
        A listed file is missing, or holds another number of rows than the manifest says.

    Examples
    --------
    >>> import tempfile, awkward as ak
    >>> writer = ColumnWriter("skim", tempfile.mkdtemp())
    >>> meta = {"dataset": "tt", "filename": "tt.root", "entrystart": 0, "entrystop": 3}
    >>> files = writer.write(ak.zip({"x": [1.0, 2.0, 3.0], "n": [1, 2, 3]}), meta)
    >>> read_columns(write_manifest(files), columns=["n"]).tolist()
    [{'n': 1}, {'n': 2}, {'n': 3}]
    """
    import awkward as ak

    content = read_manifest(manifest)
    root = content.get("file_format") == "root"
    directory = Path(content["directory"])
    wanted = None if datasets is None else set(datasets)
    paths = []
    for entry in content["files"]:
        if entry["path"] is None or (wanted is not None and entry["dataset"] not in wanted):
            continue
        path = directory / entry["path"]
        try:
            rows = _num_rows(path, root)
        except FileNotFoundError as err:
            msg = f"file listed in {directory / MANIFEST_NAME} is missing"
            raise ReadError(msg, file=str(path), dataset=entry["dataset"]) from err
        if rows != entry["rows"]:
            msg = (
                f"file holds {rows} rows, the manifest says {entry['rows']}: another run overwrote it; "
                "re-run the processor that writes these columns"
            )
            raise ReadError(msg, file=str(path), dataset=entry["dataset"])
        paths.append(str(path))
    fields = None if columns is None else list(columns)
    if not paths:
        return ak.Array([])
    if root:
        import uproot

        return uproot.concatenate([f"{p}:{content['treename']}" for p in paths], fields, library="ak")
    return ak.from_parquet(paths, columns=fields)


def _num_rows(path: Path, root: bool) -> int:
    if not root:
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    if not path.exists():
        raise FileNotFoundError(path)
    import uproot

    with uproot.open(path) as file:
        return int(file[ROOT_TREENAME].num_entries)
