"""Filesets: datasets → files → tree name, with per-dataset metadata.

Accepts coffea's fileset dictionary unchanged::

    {"ttbar": {"files": {"a.root": "Events", "b/*.root": "Events"},
               "metadata": {"xsec": 729.8, "is_data": False}},
     "data": ["run2018/*.root"]}

A dataset's ``files`` is a mapping path → tree name (or → ``{"object_path": name, ...}`` as written by
coffea's dataset tools), or a list of paths using the default tree name. Paths are local paths, globs
(``*``, ``?``, ``[...]``, ``**``) or remote URLs such as ``root://host:port//path``. Relative paths resolve
against ``base_dir`` (the directory of the YAML file that named them). Inputs may be ROOT files, Parquet
files, or a distproc column manifest (``manifest.json`` or its directory, written by a
:class:`~distproc.columns.ColumnWriter`), which stands for the files it lists.

A fileset written by ``coffea.dataset_tools.preprocess`` is accepted as it is: each file's ``steps``
(``[[start, stop], ...]``) become its partitions, its ``uuid`` and ``num_entries`` are what the file is
checked against when it is read (:mod:`distproc.integrity`), and the dataset's ``form``/
``compressed_form`` is not needed (the form is read from the files).

A file given as a mapping may also carry its ``checksum`` as grid catalogues such as Rucio record it,
``{"object_path": "Events", "checksum": "adler32:0a1b2c3d"}``, which the run option ``verify_checksums``
checks before the file's partitions are trusted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

from distproc._paths import is_remote
from distproc.columns import MANIFEST_NAME, read_manifest
from distproc.exceptions import FilesetError
from distproc.integrity import parse_checksum

__all__ = ("Dataset", "FileSpec", "normalize_fileset")

#: ``form``, ``compressed_form``, ``format`` and ``did`` are what ``coffea.dataset_tools.preprocess`` adds.
_DATASET_KEYS = {"files", "metadata", "treename", "form", "compressed_form", "format", "did"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class FileSpec:
    """One input file: its path or URL, the tree to read and, if the fileset gives them, its partitions
    (``steps``), UUID and entries (``uuid``, ``num_entries``, as coffea's preprocessing writes them) and
    checksum (``checksum``, ``adler32:0a1b2c3d``)."""

    path: str
    treename: str
    steps: tuple[tuple[int, int], ...] | None = None
    uuid: str | None = None
    num_entries: int | None = None
    checksum: str | None = None

    @property
    def is_remote(self) -> bool:
        """True for URLs (``root://``, ``https://``, ...), false for local paths."""
        return is_remote(self.path)


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its files and the metadata that reaches ``events.metadata``."""

    name: str
    files: tuple[FileSpec, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _expand(pattern: str, base_dir: Path | None, dataset: str, treename: str) -> list[str]:
    if is_remote(pattern):
        return [pattern]
    path = pattern.removeprefix("file://")
    path = os.path.expanduser(path)
    if base_dir is not None and not os.path.isabs(path):
        path = str(base_dir / path)
    if _GLOB_CHARS & set(path):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            msg = f"glob {pattern!r} matched no file"
            raise FilesetError(msg, dataset=dataset, treename=treename)
        return matches
    if path.endswith(MANIFEST_NAME) or os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        manifest = read_manifest(path)
        listed = [e["path"] for e in manifest["files"] if e["path"] is not None]
        return [os.path.join(manifest["directory"], p) for p in listed]
    return [path]


def _is_step(step: Any) -> bool:
    return (
        isinstance(step, Sequence)
        and len(step) == 2
        and all(isinstance(x, Integral) and not isinstance(x, bool) for x in step)
        and 0 <= step[0] <= step[1]
    )


def _steps_of(name: str, path: str, steps: Any) -> tuple[tuple[int, int], ...] | None:
    """A file's ``steps`` (coffea's preprocessed partitions) validated: ``[[start, stop], ...]``."""
    if steps is None:
        return None
    listed = isinstance(steps, Sequence) and not isinstance(steps, str) and len(steps) > 0
    if not listed or not all(map(_is_step, steps)):
        msg = f"'steps' must be a list of [start, stop] entry pairs, 0 <= start <= stop; got {steps!r:.80}"
        raise FilesetError(msg, dataset=name, file=path)
    return tuple((int(a), int(b)) for a, b in steps)


def _recorded(name: str, path: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """A file entry's ``steps``, ``uuid``, ``num_entries`` and ``checksum``, validated."""
    found: dict[str, Any] = {"steps": _steps_of(name, path, entry.get("steps"))}
    uuid, entries, checksum = entry.get("uuid"), entry.get("num_entries"), entry.get("checksum")
    if uuid is not None and not isinstance(uuid, str):
        msg = f"'uuid' must be a string, got {uuid!r:.60}"
        raise FilesetError(msg, dataset=name, file=path)
    if entries is not None and not (
        isinstance(entries, Integral) and not isinstance(entries, bool) and entries >= 0
    ):
        msg = f"'num_entries' must be a non-negative integer, got {entries!r:.60}"
        raise FilesetError(msg, dataset=name, file=path)
    found["uuid"] = uuid
    found["num_entries"] = None if entries is None else int(entries)
    found["checksum"] = None if checksum is None else parse_checksum(checksum, dataset=name, file=path)
    return found


def _files_of(name: str, files: Any, treename: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(path or pattern, tree, what the fileset records of it)`` for a dataset's ``files``."""
    if isinstance(files, str):
        return [(files, treename, {})]
    if isinstance(files, Mapping):
        triples = []
        for path, tree in files.items():
            recorded: dict[str, Any] = {}
            if isinstance(tree, Mapping):
                recorded = _recorded(name, str(path), tree)
                tree = tree.get("object_path", treename)
            if tree is None:
                tree = treename
            if not isinstance(tree, str):
                msg = f"tree name for {path!r} must be a string, got {type(tree).__name__}"
                raise FilesetError(msg, dataset=name)
            triples.append((str(path), tree, recorded))
        return triples
    if isinstance(files, Sequence):
        return [(str(path), treename, {}) for path in files]
    msg = f"'files' must be a mapping path → tree name or a list of paths, got {type(files).__name__}"
    raise FilesetError(msg, dataset=name)


def _one_if_recorded(paths: list[str], pattern: str, recorded: Mapping[str, Any], name: str) -> list[str]:
    """*paths* (what *pattern* expands to), refused when the fileset records a UUID, entry count or
    checksum for a pattern naming several files: those belong to one file."""
    given = [key for key in ("uuid", "num_entries", "checksum") if recorded.get(key) is not None]
    if given and len(paths) != 1:
        msg = (
            f"{given[0]!r} belongs to one file, but {pattern!r} names {len(paths)}: list the files one by one"
        )
        raise FilesetError(msg, dataset=name, file=pattern)
    return paths


def normalize_fileset(
    fileset: Mapping[str, Any],
    *,
    treename: str = "Events",
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Dataset]:
    """Validate a coffea-style fileset and expand its globs.

    Parameters
    ----------
    fileset
        ``{dataset: {"files": ..., "metadata": {...}}}`` or ``{dataset: [paths]}``, or what
        ``coffea.dataset_tools.preprocess`` returns (a dict or a ``DataGroupSpec``).
    treename
        Tree read where the fileset gives none.
    base_dir
        Directory against which relative paths resolve (default: the working directory).

    Returns
    -------
    dict
        Dataset name → :class:`Dataset`, in the fileset's order.

    Raises
    ------
    FilesetError
        For a malformed entry, an unknown key, a glob matching nothing, or an empty dataset.

    Examples
    --------
    >>> from distproc.fileset import normalize_fileset
    >>> fs = normalize_fileset({"dy": {"files": {"root://host//dy.root": "Events"},
    ...                                "metadata": {"xsec": 6077.2}}})
    >>> fs["dy"].files[0].path, dict(fs["dy"].metadata)
    ('root://host//dy.root', {'xsec': 6077.2})
    """
    if hasattr(fileset, "model_dump"):  # coffea's pydantic DataGroupSpec
        fileset = fileset.model_dump()
    if not isinstance(fileset, Mapping) or not fileset:
        msg = f"a fileset must be a non-empty mapping dataset → files, got {fileset!r:.80}"
        raise FilesetError(msg)
    base = Path(base_dir) if base_dir is not None else None
    datasets: dict[str, Dataset] = {}
    for name, entry in fileset.items():
        name = str(name)
        if isinstance(entry, Mapping):
            unknown = set(entry) - _DATASET_KEYS
            if unknown:
                msg = (
                    f"unknown key {sorted(unknown)[0]!r} in dataset entry; expected keys: "
                    f"{', '.join(sorted(_DATASET_KEYS))}"
                )
                raise FilesetError(msg, dataset=name)
            if "files" not in entry:
                msg = "dataset entry has no 'files'"
                raise FilesetError(msg, dataset=name)
            tree = entry.get("treename", treename)
            pairs = _files_of(name, entry["files"], tree)
            metadata = entry.get("metadata") or {}
            if not isinstance(metadata, Mapping):
                msg = f"'metadata' must be a mapping, got {type(metadata).__name__}"
                raise FilesetError(msg, dataset=name)
        else:
            pairs = _files_of(name, entry, treename)
            metadata = {}
        files = tuple(
            FileSpec(path, tree, **recorded)
            for pattern, tree, recorded in pairs
            for path in _one_if_recorded(_expand(pattern, base, name, tree), pattern, recorded, name)
        )
        if not files:
            msg = "dataset has no files"
            raise FilesetError(msg, dataset=name)
        datasets[name] = Dataset(name, files, dict(metadata))
    return datasets
