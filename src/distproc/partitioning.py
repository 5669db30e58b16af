"""Preprocessing: count each file's entries on the cluster and split files into partitions.

Entry counts are cached on disk, keyed by file identity (path, size, modification time), so a re-run
does not reopen every file. The cache is one JSON file per cache directory, written atomically.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distproc._paths import atomic_write
from distproc.exceptions import ConfigError, FilesetError
from distproc.fileset import Dataset
from distproc.reading import count_entries, file_identity

__all__ = ("Partition", "PartitionTable", "default_cache_dir", "plan_partitions")

_CACHE_NAME = "entries-v1.json"


def default_cache_dir() -> Path:
    """``$DISTPROC_CACHE_DIR``, else ``$XDG_CACHE_HOME/distproc``, else ``~/.cache/distproc``."""
    env = os.environ.get("DISTPROC_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distproc"


@dataclass(frozen=True)
class Partition:
    """One unit of work: entries ``[entry_start, entry_stop)`` of one tree in one file."""

    dataset: str
    file: str
    treename: str
    entry_start: int
    entry_stop: int

    @property
    def num_entries(self) -> int:
        """Events in this partition."""
        return self.entry_stop - self.entry_start


@dataclass(frozen=True)
class PartitionTable:
    """Every partition of a run, stored column-wise so that it pickles small for 10^4 to 10^6 partitions.

    ``file_index[i]`` points into ``files``; ``files[j]`` is ``(dataset index, path, tree name)``.
    """

    datasets: tuple[str, ...]
    metadata: tuple[Mapping[str, Any], ...]
    files: tuple[tuple[int, str, str], ...]
    file_index: tuple[int, ...]
    starts: tuple[int, ...]
    stops: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.file_index)

    def __getitem__(self, i: int) -> Partition:
        d, path, tree = self.files[self.file_index[i]]
        return Partition(self.datasets[d], path, tree, self.starts[i], self.stops[i])

    def dataset_metadata(self, i: int) -> dict[str, Any]:
        """The metadata reaching ``events.metadata`` for partition *i*."""
        d, path, tree = self.files[self.file_index[i]]
        return {
            **self.metadata[d],
            "dataset": self.datasets[d],
            "filename": path,
            "treename": tree,
            "entrystart": self.starts[i],
            "entrystop": self.stops[i],
        }

    def events_per_dataset(self) -> dict[str, int]:
        """Planned events per dataset."""
        out = dict.fromkeys(self.datasets, 0)
        for f, a, b in zip(self.file_index, self.starts, self.stops, strict=True):
            out[self.datasets[self.files[f][0]]] += b - a
        return out


def _load_cache(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _exception_types(err: BaseException) -> frozenset[str]:
    """The names of the types (with their bases) of *err* and of the exceptions that led to it."""
    names: set[str] = set()
    seen: BaseException | None = err
    while seen is not None:
        names.update(cls.__name__ for cls in type(seen).__mro__)
        seen = seen.__cause__ or seen.__context__
    return frozenset(names)


def _count(path: str, treename: str, dataset: str, retries: int) -> int | tuple[FilesetError, frozenset[str]]:
    """Entries of one file, or the error naming what is wrong with it and the names of its exception
    types and causes' (returned, not raised: the causes do not survive pickling)."""
    try:
        return count_entries(path, treename, dataset, retries)
    except FilesetError as err:
        return err, _exception_types(err)


def _count_all(
    client: Any, todo: Sequence[tuple[str, str, str]], retries: int
) -> list[int | tuple[FilesetError, frozenset[str]]]:
    """Count entries of *todo* ``(dataset, path, tree)``: on the cluster in one graph, or here without
    *client*. A file that cannot be read gives its :class:`FilesetError` (and exception types) instead."""
    if client is None:
        return [_count(path, tree, ds, retries) for ds, path, tree in todo]
    token = uuid.uuid4().hex[:12]  # unique per call: a reused key would return an earlier run's count
    datasets, paths, trees = zip(*todo, strict=True)
    futures = client.map(
        _count,
        paths,
        trees,
        datasets,
        [retries] * len(todo),
        pure=False,
        key=[f"distproc-count-{token}-{i}" for i in range(len(todo))],
    )
    return client.gather(futures)


def _split(num_entries: int, chunksize: int) -> list[tuple[int, int]]:
    """coffea's rule for splitting a file: ``n = max(round(N / chunksize), 1)`` partitions of
    ``ceil(N / n)`` entries (the last one shorter), so a partition holds up to 1.5 times *chunksize* entries
    and ``max_chunks`` selects the same events as coffea's ``maxchunks``. A file with no entries gives one
    empty partition: the processor still runs on it (its cutflow keys exist, with 0), as in coffea."""
    if num_entries == 0:
        return [(0, 0)]
    n = max(round(num_entries / chunksize), 1)
    size = math.ceil(num_entries / n)
    return [(start, min(start + size, num_entries)) for start in range(0, num_entries, size)]


def plan_partitions(
    datasets: Mapping[str, Dataset],
    *,
    chunksize: int,
    client: Any = None,
    max_chunks: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad_files: bool | Sequence[str] = False,
    retries: int = 3,
) -> tuple[PartitionTable, list[FilesetError]]:
    """Count entries (cached) and split every file into partitions of about *chunksize* events.

    Files are split by coffea's rule (:func:`_split`); a file given with ``steps`` (a fileset from
    ``coffea.dataset_tools.preprocess``) is split at its steps and not opened here. Files missing from
    the cache are opened on the cluster through *client* (or here when it is None). Every unreadable
    file is collected; unless *skip_bad_files* (true, or a list of exception type names that the file's
    error or one of its causes is an instance of, as coffea's ``skipbadfiles`` takes exception types),
    one :class:`FilesetError` listing them is raised before anything is computed. *max_chunks* limits
    partitions per dataset (taken in file order, as coffea's ``maxchunks``).

    Returns the partition table and the list of skipped-file errors.

    Examples
    --------
    >>> from distproc.fileset import normalize_fileset
    >>> from distproc.partitioning import plan_partitions
    >>> table, bad = plan_partitions(normalize_fileset({"dy": ["dy.root"]}), chunksize=1000)  # doctest: +SKIP
    """
    if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize <= 0:
        msg = f"chunksize must be a positive integer number of events, got {chunksize!r}"
        raise ConfigError(msg, key="chunksize")
    if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks <= 0):
        msg = f"max_chunks must be a positive integer or None, got {max_chunks!r}"
        raise ConfigError(msg, key="max_chunks")
    cache_path = Path(cache_dir or default_cache_dir()) / _CACHE_NAME
    cache = _load_cache(cache_path)

    names = tuple(datasets)
    files = [(d, f.path, f.treename) for d, ds in enumerate(datasets.values()) for f in ds.files]
    steps = [f.steps for ds in datasets.values() for f in ds.files]
    # a file with steps is neither counted nor looked up (no stat: it may be remote)
    keys = [None if s is not None else file_identity(p) for (_, p, _), s in zip(files, steps, strict=True)]
    keys = [None if k is None else f"{k}|{tree}" for k, (_, _, tree) in zip(keys, files, strict=True)]
    todo = [i for i, k in enumerate(keys) if steps[i] is None and (k is None or k not in cache)]
    if todo:
        jobs = [(names[files[i][0]], files[i][1], files[i][2]) for i in todo]
        counted = _count_all(client, jobs, retries)
        for i, n in zip(todo, counted, strict=True):
            if keys[i] is not None and isinstance(n, int):
                cache[keys[i]] = n
        entries = dict(zip(todo, counted, strict=True))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_path) as tmp:
            tmp.write_text(json.dumps(cache))
    else:
        entries = {}

    bad = [n for n in entries.values() if isinstance(n, tuple)]
    errors = [err for err, _ in bad]
    skip = set(skip_bad_files) if isinstance(skip_bad_files, list | tuple) else None
    fatal = [err for err, types in bad if not (skip_bad_files is True or (skip and skip & types))]
    if len(fatal) == 1:
        raise fatal[0]
    if fatal:
        listing = "\n".join(f"  - {e}".replace("\n", "\n    ") for e in fatal)
        msg = (
            f"{len(fatal)} input file(s) cannot be read:\n{listing}\n"
            "Fix or remove them from the fileset, or pass skip_bad_files=True (or a list of the "
            "exception type names to skip)."
        )
        raise FilesetError(msg, file=fatal[0].file, dataset=fatal[0].dataset, treename=fatal[0].treename)

    file_index: list[int] = []
    starts: list[int] = []
    stops: list[int] = []
    per_dataset = dict.fromkeys(range(len(names)), 0)
    for i, (d, _, _) in enumerate(files):
        n = entries.get(i, cache.get(keys[i]) if keys[i] is not None else None)
        if steps[i] is None and not isinstance(n, int):
            continue
        for a, b in _split(n, chunksize) if steps[i] is None else steps[i]:
            if max_chunks is not None and per_dataset[d] >= max_chunks:
                break
            per_dataset[d] += 1
            file_index.append(i)
            starts.append(a)
            stops.append(b)
    table = PartitionTable(
        datasets=names,
        metadata=tuple(dict(ds.metadata) for ds in datasets.values()),
        files=tuple(files),
        file_index=tuple(file_index),
        starts=tuple(starts),
        stops=tuple(stops),
    )
    return table, errors
