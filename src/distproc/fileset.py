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
(``[[start, stop], ...]``) become its partitions, and the dataset's ``form``/``compressed_form`` is not
needed (the form is read from the files).
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

__all__ = ("Dataset", "FileSpec", "normalize_fileset")

#: ``form``, ``compressed_form``, ``format`` and ``did`` are what ``coffea.dataset_tools.preprocess`` adds.
_DATASET_KEYS = {"files", "metadata", "treename", "form", "compressed_form", "format", "did"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class FileSpec:
    """One input file: its path or URL, the tree to read and, if given, its partitions (``steps``)."""

    path: str
    treename: str
    steps: tuple[tuple[int, int], ...] | None = None

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


def _files_of(name: str, files: Any, treename: str) -> list[tuple[str, str, Any]]:
    if isinstance(files, str):
        return [(files, treename, None)]
    if isinstance(files, Mapping):
        triples = []
        for path, tree in files.items():
            steps = None
            if isinstance(tree, Mapping):
                steps = _steps_of(name, str(path), tree.get("steps"))
                tree = tree.get("object_path", treename)
            if tree is None:
                tree = treename
            if not isinstance(tree, str):
                msg = f"tree name for {path!r} must be a string, got {type(tree).__name__}"
                raise FilesetError(msg, dataset=name)
            triples.append((str(path), tree, steps))
        return triples
    if isinstance(files, Sequence):
        return [(str(path), treename, None) for path in files]
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
            FileSpec(path, tree, steps)
            for pattern, tree, steps in pairs
            for path in _expand(pattern, base, name, tree)
        )
        if not files:
            msg = "dataset has no files"
            raise FilesetError(msg, dataset=name)
        datasets[name] = Dataset(name, files, dict(metadata))
    return datasets
