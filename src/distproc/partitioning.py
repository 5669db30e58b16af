"""Preprocessing: count each file's entries on the cluster and split files into partitions.

Entry counts (and file UUIDs) are cached on disk, keyed by file identity (path, size, modification
time), so a re-run does not reopen every file. The cache is one JSON file per cache directory, written
atomically. What preprocessing learns of each file is its :class:`~distproc.integrity.FileRecord`,
checked again when the file's partitions are read (:mod:`distproc.integrity`).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from distproc._paths import atomic_write
from distproc.exceptions import ChecksumError, ConfigError, FilesetError
from distproc.fileset import Dataset
from distproc.integrity import FileRecord, file_identity, file_stat, verify_checksum
from distproc.reading import count_entries_and_uuid
from distproc.remote import RETRIES

__all__ = ("Partition", "PartitionTable", "default_cache_dir", "plan_partitions")

T = TypeVar("T")

_CACHE_NAME = "entries-v2.json"  # identity → [entries, uuid]


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

    ``file_index[i]`` points into ``files``; ``files[j]`` is ``(dataset index, path, tree name)`` and
    ``records[j]`` what preprocessing recorded of that file (empty: nothing is checked).
    """

    datasets: tuple[str, ...]
    metadata: tuple[Mapping[str, Any], ...]
    files: tuple[tuple[int, str, str], ...]
    file_index: tuple[int, ...]
    starts: tuple[int, ...]
    stops: tuple[int, ...]
    records: tuple[FileRecord, ...] = ()

    def __len__(self) -> int:
        return len(self.file_index)

    def record(self, i: int) -> FileRecord | None:
        """What preprocessing recorded of the file of partition *i* (None: nothing)."""
        return self.records[self.file_index[i]] if self.records else None

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


def _load_cache(path: Path) -> dict[str, list[Any]]:
    """The preprocessing cache, identity → ``[entries, uuid]``; a malformed entry is left out."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: v
        for k, v in data.items()
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str | None)
    }


def _exception_types(err: BaseException) -> frozenset[str]:
    """The names of the types (with their bases) of *err* and of the exceptions that led to it."""
    names: set[str] = set()
    seen: BaseException | None = err
    while seen is not None:
        names.update(cls.__name__ for cls in type(seen).__mro__)
        seen = seen.__cause__ or seen.__context__
    return frozenset(names)


def _count(
    path: str, treename: str, dataset: str, retries: int
) -> tuple[int, str | None] | tuple[FilesetError, frozenset[str]]:
    """``(entries, uuid)`` of one file, or the error naming what is wrong with it and the names of its
    exception types and causes' (returned, not raised: the causes do not survive pickling)."""
    try:
        return count_entries_and_uuid(path, treename, dataset, retries)
    except FilesetError as err:
        return err, _exception_types(err)


def _on_cluster(client: Any, fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], name: str) -> list[T]:
    """``fn(*job)`` for every job: on the cluster in one graph, or here without *client*."""
    if client is None or not jobs:
        return [fn(*job) for job in jobs]
    token = uuid.uuid4().hex[:12]  # unique per call: a reused key would return an earlier run's result
    keys = [f"distproc-{name}-{token}-{i}" for i in range(len(jobs))]
    return client.gather(client.map(fn, *zip(*jobs, strict=True), pure=False, key=keys))


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


def _skips(skip_bad_files: bool | Sequence[str], types: frozenset[str]) -> bool:
    """Whether *skip_bad_files* skips a file whose error (and causes) have the type names *types*."""
    if isinstance(skip_bad_files, bool):
        return skip_bad_files
    return bool(set(skip_bad_files) & types)


def plan_partitions(
    datasets: Mapping[str, Dataset],
    *,
    chunksize: int,
    client: Any = None,
    max_chunks: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad_files: bool | Sequence[str] = False,
    retries: int = RETRIES,
    verify_checksums: bool = False,
) -> tuple[PartitionTable, list[FilesetError]]:
    """Count entries (cached) and split every file into partitions of about *chunksize* events.

    Files are split by coffea's rule (:func:`_split`); a file given with ``steps`` (a fileset from
    ``coffea.dataset_tools.preprocess``) is split at its steps and not opened here. Files missing from
    the cache are opened on the cluster through *client* (or here when it is None). Every unreadable
    file is collected; unless *skip_bad_files* (true, or a list of exception type names that the file's
    error or one of its causes is an instance of, as coffea's ``skipbadfiles`` takes exception types),
    one :class:`FilesetError` listing them is raised before anything is computed. *max_chunks* limits
    partitions per dataset (taken in file order, as coffea's ``maxchunks``).

    Each file's :class:`~distproc.integrity.FileRecord` (UUID, size, modification time, entries, the
    fileset's checksum) goes into the table, for the workers to check before reading it. With
    *verify_checksums*, the checksum of every file that has partitions and a checksum in the fileset is
    computed on the cluster (once per run); a mismatch fails the file's partitions, or, when
    *skip_bad_files* skips a :class:`~distproc.exceptions.ChecksumError`, skips the file.

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
    specs = [f for ds in datasets.values() for f in ds.files]
    files = [(d, f.path, f.treename) for d, ds in enumerate(datasets.values()) for f in ds.files]
    # a file with steps is neither counted nor looked up (no stat: it may be remote)
    stats = [None if f.steps is not None else file_stat(f.path) for f in specs]
    keys = [None if st is None else file_identity(f.path, st) for f, st in zip(specs, stats, strict=True)]
    keys = [None if k is None else f"{k}|{f.treename}" for k, f in zip(keys, specs, strict=True)]
    todo = [i for i, k in enumerate(keys) if specs[i].steps is None and (k is None or k not in cache)]
    counted = _on_cluster(
        client, _count, [(*files[i][1:], names[files[i][0]], retries) for i in todo], "count"
    )
    entries = dict(zip(todo, counted, strict=True))
    for i, found in entries.items():
        if keys[i] is not None and isinstance(found[0], int):
            cache[keys[i]] = list(found)
    if todo:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_path) as tmp:
            tmp.write_text(json.dumps(cache))

    bad = [n for n in entries.values() if isinstance(n[0], FilesetError)]
    errors = [err for err, _ in bad]
    fatal = [err for err, types in bad if not _skips(skip_bad_files, types)]
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

    records: list[FileRecord] = []
    file_index: list[int] = []
    starts: list[int] = []
    stops: list[int] = []
    per_dataset = dict.fromkeys(range(len(names)), 0)
    for i, ((d, _, _), spec) in enumerate(zip(files, specs, strict=True)):
        found = entries.get(i, cache.get(keys[i]) if keys[i] is not None else None)
        n, file_uuid = found if found is not None and isinstance(found[0], int) else (None, None)
        records.append(
            FileRecord(
                uuid=spec.uuid if spec.uuid is not None else file_uuid,
                size=None if stats[i] is None else stats[i][0],
                mtime=None if stats[i] is None else stats[i][1],
                entries=spec.num_entries if spec.num_entries is not None else n,
                checksum=spec.checksum,
            )
        )
        if spec.steps is None and not isinstance(n, int):
            continue
        for a, b in _split(n, chunksize) if spec.steps is None else spec.steps:
            if max_chunks is not None and per_dataset[d] >= max_chunks:
                break
            per_dataset[d] += 1
            file_index.append(i)
            starts.append(a)
            stops.append(b)
    if verify_checksums:
        skipped = _verify_checksums(client, records, files, names, set(file_index), skip_bad_files, retries)
        errors.extend(skipped.values())
        kept = [k for k, i in enumerate(file_index) if i not in skipped]
        file_index, starts, stops = ([v[k] for k in kept] for v in (file_index, starts, stops))
    table = PartitionTable(
        datasets=names,
        metadata=tuple(dict(ds.metadata) for ds in datasets.values()),
        files=tuple(files),
        file_index=tuple(file_index),
        starts=tuple(starts),
        stops=tuple(stops),
        records=tuple(records),
    )
    return table, errors


def _verify_checksums(
    client: Any,
    records: list[FileRecord],
    files: Sequence[tuple[int, str, str]],
    names: Sequence[str],
    used: set[int],
    skip_bad_files: bool | Sequence[str],
    retries: int,
) -> dict[int, ChecksumError]:
    """Compute the checksum of every file in *used* whose record has one, on the cluster (one task per
    file). A mismatch goes into the file's record (its partitions fail), or, when *skip_bad_files*
    skips a :class:`ChecksumError`, into the returned file index → error (the file is skipped)."""
    check = [i for i in sorted(used) if records[i].checksum is not None]
    jobs = [(files[i][1], records[i].checksum, retries) for i in check]
    skipped: dict[int, ChecksumError] = {}
    for i, problem in zip(check, _on_cluster(client, verify_checksum, jobs, "checksum"), strict=True):
        if problem is None:
            continue
        d, path, tree = files[i]
        err = ChecksumError(problem, dataset=names[d], file=path, treename=tree)
        if _skips(skip_bad_files, _exception_types(err)):
            skipped[i] = err
        else:
            records[i] = replace(records[i], checksum_error=problem)
    return skipped
