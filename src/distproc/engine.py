"""The run engine: from a fileset to one reduced accumulator on any Dask cluster.

The graph has one task per partition — it opens that partition's entries as NanoEvents in virtual mode
(so only the branches the processor touches are read), runs ``processor.process`` and records timing,
bytes read and any exception — followed by a tree reduction (``split_every`` inputs per node) that runs on
the workers. The processor and the partition table are single graph keys shipped once per worker, so the
graph is O(partitions) whatever the processor fills, and each task pickles to a few hundred bytes.

Big graphs are sent in two parts with their task priorities (:func:`submit_graph`): workers start on the
first partitions while the scheduler takes in the rest. A worker keeps the files it reads open for the
run's next partitions of them and tunes glibc's allocator once (:func:`_tune_malloc`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distproc.cluster import open_client
from distproc.config import resolve_run_options
from distproc.fileset import normalize_fileset
from distproc.partitioning import PartitionTable, plan_partitions
from distproc.progress import track
from distproc.report import PartitionFailure, PartitionStat, RunReport

__all__ = ("RunResult", "run")


@dataclass
class RunResult:
    """What :func:`run` returns: the reduced ``output`` and the run ``report``."""

    output: Any
    report: RunReport

    @property
    def partial(self) -> bool:
        """True when some partitions failed or files were skipped (their events are missing)."""
        return self.report.partial


@dataclass
class _Partial:
    """A partition's (or a subtree's) output plus the bookkeeping the report needs."""

    output: Any = None
    stats: list[PartitionStat] = field(default_factory=list)
    failures: list[PartitionFailure] = field(default_factory=list)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return "client"


#: Processors unpickled in this (worker) process, by run token: each is unpickled once per process.
_PROCESSORS: dict[str, Any] = {}


def _processor(token: str, payload: bytes) -> Any:
    """The processor of run *token*, unpickled from *payload* once per process.

    The processor travels as cloudpickle bytes because distributed pickles graph values with plain pickle
    when it can, which would reference a user's processor module by name instead of carrying it.
    """
    if token not in _PROCESSORS:
        import pickle

        _PROCESSORS.clear()  # one run at a time per worker: drop the previous run's processor
        _PROCESSORS[token] = pickle.loads(payload)
    return _PROCESSORS[token]


#: glibc ``mallopt`` parameters and the values the workers use (see :func:`_tune_malloc`).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 128 << 20


@functools.cache
def _tune_malloc() -> None:
    """Keep the few-MB arrays of a partition in the heap instead of fresh pages (glibc; once per process).

    glibc serves allocations above ``M_MMAP_THRESHOLD`` (dynamically 128 KiB to 32 MiB) with new ``mmap``
    pages and returns free heap above ``M_TRIM_THRESHOLD`` to the system, so every column of every
    partition was page-faulted in afresh: about a quarter of a worker's CPU time was system time (and
    6x more with distributed's default ``MALLOC_TRIM_THRESHOLD_=65536``, which this also overrides on
    clusters distproc did not start). Arrays up to 32 MiB now come from the heap and up to 128 MiB of
    free heap is kept. ``DISTPROC_MALLOC_TUNING=0`` in the workers' environment turns this off.
    """
    if os.environ.get("DISTPROC_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


#: Input files this (worker) process keeps open between partitions of one run, most recent last.
_OPEN_FILES: OrderedDict[str, Any] = OrderedDict()
_OPEN_FILES_RUN: list[str] = [""]
_OPEN_FILES_LOCK = threading.Lock()
#: At most this many files stay open per worker process.
_MAX_OPEN_FILES = 4


def _take_open_file(token: str, path: str) -> Any:
    """A file of run *token* left open by an earlier partition on this worker (or None); in use, it is
    out of the cache, so threads never share one. A new run closes the previous run's files (they may
    have been rewritten since)."""
    with _OPEN_FILES_LOCK:
        if _OPEN_FILES_RUN[0] != token:
            stale = list(_OPEN_FILES.values())
            _OPEN_FILES.clear()
            _OPEN_FILES_RUN[0] = token
        else:
            stale = []
        file = _OPEN_FILES.pop(path, None)
    for old in stale:
        _close_quietly(old)
    return file


def _keep_open_file(token: str, path: str, file: Any) -> None:
    """Put *file* back for the next partition of *path*; the least recently used beyond the limit close."""
    closing = []
    with _OPEN_FILES_LOCK:
        if _OPEN_FILES_RUN[0] != token or path in _OPEN_FILES:
            closing.append(file)
        else:
            _OPEN_FILES[path] = file
            while len(_OPEN_FILES) > _MAX_OPEN_FILES:
                closing.append(_OPEN_FILES.popitem(last=False)[1])
    for old in closing:
        _close_quietly(old)


def _close_quietly(file: Any) -> None:
    with contextlib.suppress(Exception):
        file.close()


def _process_partition(
    proc: tuple[str, bytes], table: PartitionTable, i: int, schema: str, retries: int
) -> _Partial:
    """Read partition *i* of *table*, run the processor on it, and never raise: failures are recorded.

    The file stays open on this worker for the run's next partition of it (opening a file and reading
    its tree's metadata again cost as much as a tenth of a partition); it is closed if anything fails.
    """
    from distproc.reading import partition_events

    _tune_malloc()
    part = table[i]
    start = time.perf_counter()
    file = None
    try:
        processor = _processor(*proc)
        file = _take_open_file(proc[0], part.file)
        before = 0 if file is None else int(file.file.source.num_requested_bytes)
        events, file = partition_events(
            part.file,
            part.treename,
            part.entry_start,
            part.entry_stop,
            schema=schema,
            metadata=table.dataset_metadata(i),
            retries=retries,
            file=file,
        )
        file.file.array_cache = None  # each partition's arrays are read once: do not keep them around
        output = processor.process(events)
        bytes_read = int(file.file.source.num_requested_bytes) - before
        del events
    except Exception as err:  # noqa: BLE001  (one bad partition must not lose the others)
        if file is not None:
            _close_quietly(file)
        failure = PartitionFailure(
            dataset=part.dataset,
            file=part.file,
            treename=part.treename,
            entry_start=part.entry_start,
            entry_stop=part.entry_stop,
            exception=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(),
            worker=_worker_name(),
        )
        return _Partial(failures=[failure])
    _keep_open_file(proc[0], part.file, file)
    stat = PartitionStat(
        index=i,
        dataset=part.dataset,
        events=part.num_entries,
        bytes_read=bytes_read,
        seconds=time.perf_counter() - start,
        worker=_worker_name(),
    )
    return _Partial(output=output, stats=[stat])


def _merge(parts: Sequence[_Partial]) -> _Partial:
    """Add the outputs of *parts* (without mutating them) and concatenate their bookkeeping."""
    from coffea.processor import accumulate

    return _Partial(
        output=accumulate(p.output for p in parts),
        stats=[s for p in parts for s in p.stats],
        failures=[f for p in parts for f in p.failures],
    )


def build_graph(
    processor: Any, table: PartitionTable, *, schema: str, retries: int, split_every: int
) -> tuple[dict[Any, Any], list[Any], Any]:
    """The task graph: partition tasks and a tree reduction. Returns ``(graph, partition_keys, final)``."""
    import cloudpickle

    token = uuid.uuid4().hex[:12]
    proc_key, table_key = f"distproc-processor-{token}", f"distproc-partitions-{token}"
    graph: dict[Any, Any] = {proc_key: (token, cloudpickle.dumps(processor)), table_key: table}
    name = f"distproc-process-{token}"
    level = [(name, i) for i in range(len(table))]
    for key in level:
        graph[key] = (_process_partition, proc_key, table_key, key[1], schema, retries)
    partition_keys = list(level)
    depth = 0
    while len(level) > 1 or depth == 0:
        reduce_name = f"distproc-reduce-{depth}-{token}"
        groups = [level[j : j + split_every] for j in range(0, len(level), split_every)] or [[]]
        level = []
        for j, group in enumerate(groups):
            graph[(reduce_name, j)] = (_merge, list(group))
            level.append((reduce_name, j))
        depth += 1
    return graph, partition_keys, level[0]


#: The first graph sent holds this many partitions per worker thread (at least :data:`_FIRST_BATCH_MIN`),
#: so workers start on them while the scheduler takes in the rest of a big job.
_FIRST_BATCH_PER_THREAD = 4
_FIRST_BATCH_MIN = 16


def _post_order(graph: Mapping[Any, Any], final_key: Any) -> dict[Any, int]:
    """Task priorities (lower runs first): the shared keys, then each reduction right after its inputs.

    This is the order ``dask.order`` finds for a tree reduction; giving it to the scheduler saves it from
    ordering every graph (about a second per 10^4 partitions).
    """
    priority = {k: i for i, k in enumerate(k for k in graph if isinstance(k, str))}
    stack: list[tuple[Any, bool]] = [(final_key, False)]
    while stack:
        key, expanded = stack.pop()
        task = graph[key]
        if expanded or task[0] is not _merge:
            priority[key] = len(priority)
            continue
        stack.append((key, True))
        stack.extend((child, False) for child in reversed(task[1]))
    return priority


def _send_graph(
    client: Any, graph: dict[Any, Any], keys: list[Any], priority: Mapping[Any, int]
) -> list[Any]:
    """``client.get(graph, keys, sync=False)`` with the task priorities given (no ``dask.order`` then)."""
    import inspect

    send = getattr(client, "_graph_to_futures", None)
    if send is None or "internal_priority" not in inspect.signature(send).parameters:
        return list(client.get(graph, keys, sync=False))  # another distributed: let the scheduler order
    from distributed.spans import SpanMetadata

    futures = send(
        graph,
        keys=set(keys),
        span_metadata=SpanMetadata(collections=[{"type": "low-level-graph"}]),
        internal_priority={k: priority[k] for k in graph},
        fifo_timeout="60s",  # what client.get passes: both graphs of a run share one generation
    )
    return [futures[k] for k in keys]


def submit_graph(
    client: Any, graph: dict[Any, Any], partition_keys: list[Any], final_key: Any, *, keep_partitions: bool
) -> tuple[Any, list[Any]]:
    """Send a :func:`build_graph` graph to the scheduler; returns the final future and, with
    *keep_partitions*, one future per partition (for progress; release each once done).

    A big job goes as two graphs: the shared keys and the first few partitions, which workers start on at
    once, then the rest (partitions and the reduction, which refers to the first graph's keys). The
    scheduler takes in one client's messages in order, so the second graph is in before any of the first
    graph's futures is released. Without *keep_partitions* the client holds no partition futures at all:
    each partition's output is dropped by the scheduler as soon as its reduction has consumed it, and
    10^4 futures are neither created nor tracked.
    """
    from dask._task_spec import TaskRef

    priority = _post_order(graph, final_key)
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
    first = max(_FIRST_BATCH_MIN, _FIRST_BATCH_PER_THREAD * threads)
    if len(partition_keys) <= 2 * first:
        futures = _send_graph(
            client, graph, [final_key, *(partition_keys if keep_partitions else ())], priority
        )
        return futures[0], futures[1:]
    shared = [k for k in graph if isinstance(k, str)]
    head = partition_keys[:first]
    sent = {*shared, *head}
    head_futures = _send_graph(client, {k: graph[k] for k in sent}, [*shared, *head], priority)

    refs = {k: TaskRef(k) for k in sent}  # one reference object per key, shared by all tasks
    rest = {}
    for key, task in graph.items():
        if key in sent:
            continue
        if task[0] is _merge:
            rest[key] = (_merge, [refs.get(k, k) for k in task[1]])
        else:
            rest[key] = (task[0], *[refs.get(a, a) if type(a) is str else a for a in task[1:]])
    tail = partition_keys[first:] if keep_partitions else []
    futures = _send_graph(client, rest, [final_key, *tail], priority)
    for future in head_futures[: len(shared)] if keep_partitions else head_futures:
        future.release()
    return futures[0], [*head_futures[len(shared) :], *futures[1:]] if keep_partitions else []


def run(
    processor: Any,
    fileset: Mapping[str, Any],
    *,
    cluster: Any = None,
    workers: int | None = None,
    chunksize: int | None = None,
    max_chunks: int | None = None,
    schema: str | None = None,
    treename: str | None = None,
    split_every: int | None = None,
    retries: int | None = None,
    skip_bad_files: bool | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    base_dir: str | None = None,
) -> RunResult:
    """Run *processor* over *fileset* on a Dask cluster and return the reduced output and a report.

    Parameters
    ----------
    processor
        A :class:`distproc.Processor` or any coffea ``ProcessorABC``.
    fileset
        Coffea-format fileset (see :func:`distproc.fileset.normalize_fileset`).
    cluster
        ``None`` (a LocalCluster with *workers* processes, default one per core), a scheduler address
        (``tcp://…``/``tls://…``), a :class:`distributed.Client`, a cluster kind name or a mapping
        ``{"kind": ..., **options}`` (see :mod:`distproc.cluster`).
    chunksize
        Events per partition (default 100 000).
    max_chunks
        At most this many partitions per dataset (quick tests).
    schema
        ``"nanoaod"`` (default), ``"physlite"`` or ``"base"`` (flat ntuples).
    split_every
        Fan-in of the tree reduction on the workers (default 8).
    skip_bad_files
        Skip unreadable files (listed in the report, result marked partial) instead of raising.

    Unset options fall back to ``DISTPROC_*`` environment variables, then to the shipped defaults
    (see :mod:`distproc.config`).

    Returns
    -------
    RunResult
        ``output`` (after ``processor.postprocess``) and ``report``. If a partition raised, the others
        still ran: the failure is in ``report.failures`` and ``result.partial`` is true.

    Examples
    --------
    >>> import distproc
    >>> result = distproc.run(MyProcessor(), {"dy": ["dy.root"]}, workers=2)  # doctest: +SKIP
    >>> result.report.events_per_second  # doctest: +SKIP
    """
    opts = resolve_run_options(
        chunksize=chunksize,
        max_chunks=max_chunks,
        schema=schema,
        treename=treename,
        split_every=split_every,
        retries=retries,
        skip_bad_files=skip_bad_files,
        cache_dir=cache_dir,
        progress=progress,
    )
    datasets = normalize_fileset(fileset, treename=opts["treename"], base_dir=base_dir)
    from distproc.reading import schema_class

    schema_class(opts["schema"])  # fail on a bad schema name before starting anything
    start = time.perf_counter()
    with open_client(cluster, workers=workers) as client:
        dashboard = str(getattr(client, "dashboard_link", "") or "")
        table, bad_files = plan_partitions(
            datasets,
            chunksize=opts["chunksize"],
            client=client,
            max_chunks=opts["max_chunks"],
            cache_dir=opts["cache_dir"],
            skip_bad_files=opts["skip_bad_files"],
            retries=opts["retries"],
        )
        preprocess_seconds = time.perf_counter() - start
        graph, partition_keys, final_key = build_graph(
            processor, table, schema=opts["schema"], retries=opts["retries"], split_every=opts["split_every"]
        )
        final, partition_futures = submit_graph(
            client, graph, partition_keys, final_key, keep_partitions=bool(opts["progress"])
        )
        if partition_futures:
            track(
                partition_futures,
                [table.stops[i] - table.starts[i] for i in range(len(table))],
                enabled=True,
                dashboard=dashboard,
            )
        reduced: _Partial = final.result()
        cluster_repr = repr(client.cluster) if client.cluster is not None else str(client.scheduler.address)
    wall = time.perf_counter() - start
    output = reduced.output
    if output is not None and hasattr(processor, "postprocess"):
        post = processor.postprocess(output)
        output = output if post is None else post
    report = RunReport.build(
        stats=reduced.stats,
        failures=reduced.failures,
        planned=table.events_per_dataset(),
        planned_partitions=len(table),
        wall_seconds=wall,
        preprocess_seconds=preprocess_seconds,
        skipped_files=[str(e) for e in bad_files],
        cluster=cluster_repr,
        dashboard=dashboard,
    )
    return RunResult(output=output if output is not None else {}, report=report)
