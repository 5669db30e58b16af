"""``run()``: from a fileset to one reduced accumulator on any Dask cluster.

Plans the partitions (:mod:`distproc.partitioning`), builds the graph (:mod:`distproc.engine.graph`:
one task per partition, or per few partitions of one file in a big run, which opens each partition's
entries as NanoEvents in virtual mode, runs ``processor.process`` and records timing, bytes read and any
exception per partition, followed by a tree reduction on the workers), sends it
(:mod:`distproc.engine.submit`), shows progress, and assembles the report.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError
from typing import Any

from distproc._paths import where_in_file
from distproc.cluster import open_client
from distproc.columns import check_writers_bound
from distproc.config import resolve_run_options
from distproc.engine.checkpoint import open_checkpoint
from distproc.engine.dask_mode import DaskModeProcessor, trace_on_client
from distproc.engine.failures import RepeatWatch, raise_failed
from distproc.engine.graph import build_graph, checkpoint_nodes, choose_per_task, graph_token
from distproc.engine.inline import run_inline
from distproc.engine.killed import wait_for_result
from distproc.engine.ledger import follow, read, watch
from distproc.engine.merge import pop_conflicts
from distproc.engine.submit import submit_graph
from distproc.engine.worker import Partial, merge
from distproc.exceptions import ConfigError, DaskModeError, RunInterrupted
from distproc.fileset import normalize_fileset
from distproc.integrity import skip_changed
from distproc.io import add_missing_datasets
from distproc.partitioning import PartitionTable, plan_partitions
from distproc.processor import keep_script_file_names
from distproc.progress import track, track_polled
from distproc.reading import format_skipped, skipped_branches
from distproc.report import PartitionFailure, RunReport, RunResult

__all__ = ("run",)


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
    partitions_per_task: int | None = None,
    retries: int | None = None,
    skip_bad_files: bool | None = None,
    verify_checksums: bool | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    base_dir: str | None = None,
    open_files: int | None = None,
    local_reads: str | None = None,
    mode: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    allow_failures: bool = False,
    max_attempts: int | None = None,
    no_workers_timeout: float | None = None,
) -> RunResult:
    """Run *processor* over *fileset* on a Dask cluster and return the reduced output and a report.

    Parameters
    ----------
    processor
        A :class:`distproc.Processor`, any coffea ``ProcessorABC``, or a function of the events (as
        coffea's ``Runner`` and ``apply_to_fileset`` take).
    fileset
        Coffea-format fileset (see :func:`distproc.fileset.normalize_fileset`).
    cluster
        ``None`` (a LocalCluster with *workers* processes, default one per core), a scheduler address
        (``tcp://…``/``tls://…``), a :class:`distributed.Client`, a cluster kind name or a mapping
        ``{"kind": ..., **options}`` (see :mod:`distproc.cluster`). ``"inline"`` runs the partitions one
        after another in this process and thread, so ``breakpoint()`` in ``process()`` works (no
        checkpoint is kept).
    workers
        Worker processes of the local cluster (default one per core; other kinds ignore it).
    chunksize
        Events per partition (default 100 000).
    max_chunks
        At most this many partitions per dataset (quick tests).
    schema
        ``"nanoaod"`` (default), ``"physlite"`` or ``"base"`` (flat ntuples).
    treename
        The tree read where the fileset names none (default ``"Events"``).
    split_every
        Fan-in of the tree reduction on the workers (default 8).
    partitions_per_task
        Consecutive partitions of one file processed by one Dask task (each partition still on its own:
        its failure, statistics and checkpoint entry are its own). Default ``None``: 1 below 5,000
        partitions, so small runs stay evenly spread over the workers, then up to 4 from 10,000
        (:func:`~distproc.engine.graph.choose_per_task`): the scheduler's cost is per task.
    retries
        Retries of each remote read that fails with a transient error, reopening the file, with
        exponential back-off from 0.5 s (default 5: a server back within about 15 s goes unnoticed).
    skip_bad_files
        Skip unreadable files (listed in the report, result marked partial) instead of raising; or a list
        of exception type names (``["OSError"]``): skip only files whose error is one of them. A file
        found changed since preprocessing (:class:`~distproc.exceptions.FileChangedError`: its UUID,
        size, modification time or entries differ; see :mod:`distproc.integrity`) fails its partitions
        unless skipped so.
    verify_checksums
        Compute the checksum of every file whose fileset entry gives one (``checksum:
        adler32:0a1b2c3d``), once per run, before its partitions are trusted: a local file by reading it,
        a ``root://`` one by the XRootD server's checksum query. A mismatch fails the file's partitions
        with :class:`~distproc.exceptions.ChecksumError` naming both checksums (default false).
    cache_dir
        Where the preprocessing cache (entries per file) lives (default ``$DISTPROC_CACHE_DIR`` or
        ``~/.cache/distproc``).
    progress
        Show a progress bar on stderr (default: when stderr is a terminal).
    base_dir
        Where the fileset's relative file paths resolve (default the current directory).
    open_files
        Input files each worker process keeps open for the run's next partitions of them (default 4;
        0: reopen the file for every partition).
    local_reads
        How local files are read: ``"thread"`` (default; plain reads in the task's thread) or
        ``"fsspec"`` (uproot's default source, which reads in fsspec's event-loop thread).
    mode
        ``"partition"`` (default): ``process`` receives each partition's NanoEvents. ``"dask"``: a coffea
        dask-awkward processor, unchanged (:mod:`distproc.engine.dask_mode`); the output is then
        ``{dataset: output}`` as ``apply_to_fileset`` + ``dask.compute`` give, and ``postprocess`` is not
        called.
    checkpoint
        A directory (local path or fsspec URL the workers can write) where every finished partition's
        output is kept; a rerun after an interruption processes only the partitions not in it (see
        :mod:`distproc.engine.checkpoint`). A checkpoint made by another processor or other
        result-changing options raises :class:`~distproc.engine.checkpoint.CheckpointError`.
    fresh
        Discard what *checkpoint* holds and start over.
    allow_failures
        ``False`` (default): when a partition failed, raise :class:`~distproc.exceptions.PartitionError`
        after the run, with the partial result as its ``result``. ``True``: return the partial result
        (``result.partial`` is true, the failures are in ``report.failures``).
    max_attempts
        A partition whose worker dies (memory, a crash in a library, killed) is retried alone, and
        recorded as failed (with the reason) after this many deaths (default 3); the run goes on.
    no_workers_timeout
        Seconds without any worker before the run stops with :class:`~distproc.exceptions.RunStopped`
        (default 300).

    Unset run options (all but *cluster*, *workers*, *base_dir*, *checkpoint*, *fresh* and
    *allow_failures*) fall back to ``DISTPROC_*`` environment variables, then to the shipped defaults
    (see :mod:`distproc.config`).

    When the first partitions to finish all fail with the same exception (a typo in ``process()``), the
    run stops early: the other partitions are cancelled and ``report.stopped_early`` says so. Branches
    the schema left out of ``events`` are summarised once on stderr and listed in
    ``report.skipped_branches``.

    Returns
    -------
    RunResult
        ``output`` (after ``processor.postprocess``) and ``report``. Histograms with a growable
        ``dataset`` category axis list every dataset of *fileset*, also one whose events were all cut
        away (an empty category). An output that cannot be added across partitions is left out and
        named in ``report.output_conflicts``.

    Raises
    ------
    DaskModeError
        A processor written for dask-awkward run in the partition mode, or a dask-mode output that
        cannot be evaluated partition by partition.
    RunInterrupted
        The connection to the scheduler was lost before the run finished (with a *checkpoint*, a rerun
        resumes).
    PartitionError
        A partition failed (unless *allow_failures*); it names the first failure's file and entries and
        groups identical failures. In ``"inline"`` mode its cause is the processor's own exception.

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
        partitions_per_task=partitions_per_task,
        retries=retries,
        skip_bad_files=skip_bad_files,
        verify_checksums=verify_checksums,
        cache_dir=cache_dir,
        progress=progress,
        open_files=open_files,
        local_reads=local_reads,
        mode=mode,
        max_attempts=max_attempts,
        no_workers_timeout=no_workers_timeout,
    )
    if not callable(getattr(processor, "process", processor)):
        msg = f"a processor must have a process(events) method or be callable, got {processor!r:.80}"
        raise ConfigError(msg, key="processor")
    user_processor = processor  # what the checkpoint's fingerprint describes
    keep_script_file_names(processor)
    if opts["mode"] == "dask":
        processor = DaskModeProcessor(processor)
    datasets = normalize_fileset(fileset, treename=opts["treename"], base_dir=base_dir)
    from distproc.reading import schema_class

    schema_class(opts["schema"])  # fail on a bad schema name before starting anything
    check_writers_bound(processor)
    ckpt = None
    if checkpoint is not None:
        options = {k: opts[k] for k in _RESULT_OPTIONS}
        ckpt = open_checkpoint(checkpoint, user_processor, options, fresh=fresh)
    start, since = time.perf_counter(), time.time()
    error: Exception | None = None
    with open_client(cluster, workers=workers) as client:
        if client is None:
            ckpt = None  # ``inline``, for debugging: no checkpoint
        dashboard = str(getattr(client, "dashboard_link", "") or "")
        table, bad_files = plan_partitions(
            datasets,
            chunksize=opts["chunksize"],
            client=client,
            max_chunks=opts["max_chunks"],
            cache_dir=opts["cache_dir"],
            skip_bad_files=opts["skip_bad_files"],
            retries=opts["retries"],
            verify_checksums=opts["verify_checksums"],
        )
        preprocess_seconds = time.perf_counter() - start
        check = None
        if isinstance(processor, DaskModeProcessor):
            check = functools.partial(
                trace_on_client, processor, table, schema=opts["schema"], retries=opts["retries"]
            )
        per_task = choose_per_task(len(table), opts["partitions_per_task"])
        done = []
        if ckpt is not None:
            ckpt = ckpt.plan(table)
            done = ckpt.covering(checkpoint_nodes(table, per_task, opts["split_every"]))
        graph, task_keys, final_key = build_graph(
            processor,
            table,
            split_every=opts["split_every"],
            per_task=per_task,
            schema=opts["schema"],
            retries=opts["retries"],
            open_files=opts["open_files"],
            local_reads=opts["local_reads"],
            checkpoint=ckpt,
            done=done,
        )
        repeats = RepeatWatch(len(table) - sum(hi - lo for lo, hi in done))
        if client is None:
            if check is not None:
                check()
            reduced, error = run_inline(
                processor, graph, task_keys, repeats, stop_at_first=not allow_failures
            )
            counts: dict[str, Any] = {"workers_lost": 0, "reexecuted": {}}
            cluster_repr = "inline (this process)"
        else:
            with watch(client) as counts:
                reduced = _compute(
                    client, graph, task_keys, final_key, table, repeats, opts, checkpoint, counts, check
                )
                read(client, counts)
            cluster_repr = (
                repr(client.cluster) if client.cluster is not None else str(client.scheduler.address)
            )
        skipped = skipped_branches(client, since=since)
    wall = time.perf_counter() - start
    _raise_dask_mode_error(reduced.failures)
    output, conflicts = pop_conflicts(reduced.output)
    failures, changed = skip_changed(reduced.failures, opts["skip_bad_files"])
    output = add_missing_datasets(output, datasets)  # a dataset all cut away stays on the axis
    if output is not None and hasattr(processor, "postprocess"):
        post = processor.postprocess(output)
        output = output if post is None else post
    report = RunReport.build(
        stats=reduced.stats,
        failures=failures,
        planned=table.events_per_dataset(),
        planned_partitions=len(table),
        wall_seconds=wall,
        preprocess_seconds=preprocess_seconds,
        skipped_files=[str(e) for e in bad_files] + changed,
        cluster=cluster_repr,
        dashboard=dashboard,
        output_conflicts=[c.describe(lambda i: _name(table, i)) for c in conflicts],
        resumed_partitions=sum(hi - lo for lo, hi in done),
        workers_lost=counts["workers_lost"],
        reexecuted_partitions=None
        if counts["reexecuted"] is None
        else {_label(table[i]): n for key, n in counts["reexecuted"].items() for i in range(key[1], key[2])},
        stopped_early=repeats.reason(),
        skipped_branches=skipped,
    )
    note = format_skipped(skipped)
    if note:
        sys.stderr.write(f"{note}\n")
    if reduced.unsaved:
        msg = (
            f"{len(reduced.unsaved)} checkpoint entries could not be written to {os.fspath(checkpoint)} "
            f"(first: {reduced.unsaved[0]}); the outputs are complete, but a resumed run would process "
            "those partitions again"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    result = RunResult(output=output if output is not None else {}, report=report)
    if not allow_failures:
        raise_failed(result, cause=error)
    return result


def _compute(
    client: Any,
    graph: dict[Any, Any],
    task_keys: list[Any],
    final_key: Any,
    table: PartitionTable,
    repeats: RepeatWatch,
    opts: Mapping[str, Any],
    checkpoint: str | os.PathLike[str] | None,
    ledger: dict[str, Any],
    check: Callable[[], None] | None = None,
) -> Partial:
    """Run *graph* on *client*'s cluster: the reduced output, or, when *repeats* stops the run, the
    merged partitions it saw (the rest is cancelled).

    The progress bar follows the tasks the scheduler's *ledger* (:func:`~distproc.engine.ledger.watch`)
    saw finish, so the client holds no future per task; where the scheduler has no ledger, one future
    per task.

    *check* runs here once the graph is submitted, while the workers start on it (dask mode's trace on
    the client: an output that cannot be evaluated is one error, before the workers' own traces fail);
    a :class:`DaskModeError` it raises cancels the run.
    """

    def see(future: Any) -> bool:
        if future.status != "finished":  # its worker died: wait_for_result below deals with it
            return False
        stop = repeats.watching and repeats.see(future.result())
        if stop:
            final.cancel()  # the scheduler forgets every task nothing else wants, running ones included
        return stop

    progress = bool(opts["progress"])
    polled = progress and ledger["name"] is not None
    final, task_futures = submit_graph(
        client, graph, task_keys, final_key, keep_tasks=progress and not polled, watch=repeats.threshold
    )

    def size(key: Any) -> tuple[int, int]:
        lo, hi = key[1], key[2]
        return hi - lo, sum(table.stops[lo:hi]) - sum(table.starts[lo:hi])

    sizes = [size(f.key) for f in task_futures]
    dashboard = str(getattr(client, "dashboard_link", "") or "")
    # progress (and the repeated-failure watch) from threads: the wait below watches for dead workers
    tracker = threading.Thread(
        target=track,
        args=(task_futures, sizes),
        kwargs={"enabled": progress and not polled, "dashboard": dashboard, "on_done": see},
        daemon=True,
    )
    tracker.start()
    ended = threading.Event()
    if polled:
        poller = threading.Thread(
            target=track_polled,
            args=(follow(client, ledger), {k: size(k) for k in task_keys}),
            kwargs={"until": ended, "dashboard": dashboard},
            daemon=True,
        )
        poller.start()
    try:
        if check is not None:
            check()
        reduced = wait_for_result(
            client,
            final,
            token=graph_token(final_key),
            task_keys=task_keys,
            max_attempts=opts["max_attempts"],
            no_workers_timeout=opts["no_workers_timeout"],
        )
    except DaskModeError:
        client.cancel([final, *task_futures])
        tracker.join()
        raise
    except (CancelledError, OSError) as err:
        tracker.join()
        if repeats.stop:
            for future in task_futures:  # released already when done: release is idempotent
                future.release()
            return merge(repeats.seen)
        raise RunInterrupted(_stopped(err, checkpoint)) from err
    finally:
        ended.set()
        if polled:
            poller.join(timeout=_POLLER_JOIN_SECONDS)  # its last look fails at once if the scheduler is gone
    tracker.join()
    return reduced


def _name(table: PartitionTable, i: int) -> str:
    part = table[i]
    return f"{part.dataset}: {part.file} [{part.entry_start}-{part.entry_stop}]"


def _raise_dask_mode_error(failures: list[PartitionFailure]) -> None:
    """Raise the first :class:`DaskModeError` a partition recorded: it is the processor's, not the
    partition's (every partition would fail alike), and says how to run the processor. It is the
    worker's error, with its attributes (``output``), and the message names the partition."""
    for failure in failures:
        if isinstance(failure.error, DaskModeError):
            err = copy.copy(failure.error)  # the same type and attributes (the pickling rule)
            err.args = (f"{failure.error}\n    first raised in {_label(failure)}",)
            raise err


#: Seconds the run waits for the progress bar's last look at the scheduler.
_POLLER_JOIN_SECONDS = 10.0
#: The run options that change a partition's output (the others change only how it is computed).
_RESULT_OPTIONS = ("schema", "chunksize", "mode")


def _label(part: Any) -> str:
    """A partition as the report names it: dataset, file, tree and entry range."""
    where = where_in_file(part.file, part.treename)
    return f"{part.dataset}: {where} entries {part.entry_start}-{part.entry_stop}"


def _stopped(err: BaseException, checkpoint: str | os.PathLike[str] | None) -> str:
    """The message of a run that lost its scheduler: what happened and how to resume."""
    what = f"the run stopped before it finished ({type(err).__name__}: {err})"
    if checkpoint is None:
        return f"{what}; no checkpoint was kept, so a rerun starts over"
    return f"{what}; finished partitions are in the checkpoint {os.fspath(checkpoint)}: rerun to resume"
