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
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distproc._paths import is_remote
from distproc.columns import MANIFEST_NAME, read_manifest
from distproc.exceptions import FilesetError

__all__ = ("Dataset", "FileSpec", "normalize_fileset")

_DATASET_KEYS = {"files", "metadata", "treename"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class FileSpec:
    """One input file: its path or URL and the tree to read."""

    path: str
    treename: str

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


def _files_of(name: str, files: Any, treename: str) -> list[tuple[str, str]]:
    if isinstance(files, str):
        return [(files, treename)]
    if isinstance(files, Mapping):
        pairs = []
        for path, tree in files.items():
            if isinstance(tree, Mapping):
                tree = tree.get("object_path", treename)
            if tree is None:
                tree = treename
            if not isinstance(tree, str):
                msg = f"tree name for {path!r} must be a string, got {type(tree).__name__}"
                raise FilesetError(msg, dataset=name)
            pairs.append((str(path), tree))
        return pairs
    if isinstance(files, Sequence):
        return [(str(path), treename) for path in files]
    msg = f"'files' must be a mapping path → tree name or a list of paths, got {type(files).__name__}"
    raise FilesetError(msg, dataset=name)


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
        ``{dataset: {"files": ..., "metadata": {...}}}`` or ``{dataset: [paths]}``.
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
            FileSpec(path, tree) for pattern, tree in pairs for path in _expand(pattern, base, name, tree)
        )
        if not files:
            msg = "dataset has no files"
            raise FilesetError(msg, dataset=name)
        datasets[name] = Dataset(name, files, dict(metadata))
    return datasets
