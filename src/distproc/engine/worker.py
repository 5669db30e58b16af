"""The worker side of a run: a task's partitions read and processed, and the merge of partial outputs.

A partition task never raises: each of its partitions runs on its own, and a failure is recorded with the
partition it happened in (its neighbours in the task are kept). Between the
run's partitions the worker keeps the processor and the files it reads in the run's
:class:`~distproc.engine.state.RunState`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distproc.allocator import tune_malloc
from distproc.engine.killed import failure, intercept
from distproc.engine.merge import add_outputs
from distproc.engine.state import WORKER, active, close_quietly
from distproc.exceptions import DistprocError
from distproc.missing_field import missing_field_message
from distproc.partitioning import PartitionTable
from distproc.remote import RETRIES
from distproc.report import PartitionFailure, PartitionStat

__all__ = ("WorkerOptions", "merge", "process_partition", "process_partitions")


@dataclass(frozen=True)
class WorkerOptions:
    """The run options the workers apply (``open_files``, ``local_reads``: see :mod:`distproc.config`)."""

    schema: str = "nanoaod"
    retries: int = RETRIES
    open_files: int = 4
    local_reads: str = "thread"


@dataclass
class Partial:
    """A partition's (or a subtree's) output plus the bookkeeping the report needs."""

    output: Any = None
    stats: list[PartitionStat] = field(default_factory=list)
    failures: list[PartitionFailure] = field(default_factory=list)
    #: Why checkpoint entries of these partitions could not be written (the run goes on without them).
    unsaved: list[str] = field(default_factory=list)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return "client"


def _message(err: Exception, events: Any) -> str:
    """*err*'s message, with the collection and near misses of a misspelled field."""
    try:
        return missing_field_message(err, events) or str(err)
    except Exception:  # noqa: BLE001  (a better message is a bonus: never lose the failure for it)
        return str(err)


def process_partitions(
    proc: tuple[str, bytes, WorkerOptions],
    table: PartitionTable,
    lo: int,
    hi: int,
    errors: list[Exception] | None = None,
) -> Partial:
    """A partition task: partitions ``lo`` to ``hi - 1`` of *table*, each by :func:`process_partition`
    (so a failure is recorded with its own partition and the others' outputs are kept), merged in order.

    Examples
    --------
    >>> partial = process_partitions(proc, table, 0, 4)  # doctest: +SKIP
    >>> [s.index for s in partial.stats]  # doctest: +SKIP
    [0, 1, 2, 3]
    """
    return merge([process_partition(proc, table, i, errors) for i in range(lo, hi)])


def process_partition(
    proc: tuple[str, bytes, WorkerOptions],
    table: PartitionTable,
    i: int,
    errors: list[Exception] | None = None,
) -> Partial:
    """Read partition *i* of *table*, run the processor on it, and never raise: failures are recorded.

    *proc* is ``(run token, cloudpickled processor, options)``, one graph key shipped once per worker.
    A run in this process (:mod:`~distproc.engine.inline`) passes *errors* to get the exception itself
    too, with its traceback for a debugger. A misspelled field's message names the collection and the
    near misses (:func:`~distproc.missing_field.missing_field_message`).
    Before reading, the file is checked against what preprocessing recorded of it
    (:mod:`distproc.integrity`): a changed file fails the partition, never is read silently.
    The file stays open on this worker for the run's next partition of it (opening a file and reading
    its tree's metadata again cost as much as a tenth of a partition); it is closed if anything fails.
    """
    from distproc.integrity import check_open_file, check_unchanged
    from distproc.reading import partition_events

    tune_malloc()
    decided = intercept(proc, table, i)
    if decided is not None:
        return decided
    part = table[i]
    start = time.perf_counter()
    token, payload, options = proc
    state = WORKER.run_state(token, open_files=options.open_files)
    file = events = None
    with active(state):
        try:
            processor = state.processor(payload)
            record = table.record(i)
            if record is not None:  # the file is what preprocessing saw (size, mtime, checksum)
                check_unchanged(state, part, record)
            file = state.take_file(part.file)
            before = 0 if file is None else int(file.file.source.num_requested_bytes)
            events, file = partition_events(
                part.file,
                part.treename,
                part.entry_start,
                part.entry_stop,
                schema=options.schema,
                metadata=table.dataset_metadata(i),
                retries=options.retries,
                file=file,
                local_reads=options.local_reads,
            )
            if record is not None:  # ... and so are its UUID and entries
                check_open_file(file, part, record)
            file.file.array_cache = None  # each partition's arrays are read once: do not keep them around
            output = _call(processor, events)
            bytes_read = int(file.file.source.num_requested_bytes) - before
            events = None  # free the partition's arrays now
        except Exception as err:  # noqa: BLE001  (one bad partition must not lose the others)
            if file is not None:
                close_quietly(file)
            if errors is not None:
                errors.append(err)
            exception = f"{type(err).__name__}: {_message(err, events)}"
            kept = err if isinstance(err, DistprocError) else None  # comes back with its attributes
            return failure(table, i, exception, traceback.format_exc(), _worker_name(), kept)
    state.keep_file(part.file, file)
    stat = PartitionStat(
        index=i,
        dataset=part.dataset,
        events=part.num_entries,
        bytes_read=bytes_read,
        seconds=time.perf_counter() - start,
        worker=_worker_name(),
    )
    return Partial(output=output, stats=[stat])


def _call(processor: Any, events: Any) -> Any:
    """``processor.process(events)`` (or ``processor(events)`` for a function), refusing dask collections.

    A processor written for dask-awkward gives a silently wrong answer on concrete events (its fills
    stay lazy) or fails inside dask-awkward: either is a :class:`~distproc.exceptions.DaskModeError`
    saying to use ``mode="dask"``, which :func:`~distproc.engine.run.run` raises once.
    """
    from distproc.engine.dask_mode import check_partition_output, dask_written_error

    try:
        output = getattr(processor, "process", processor)(events)
    except TypeError as err:
        dask_error = dask_written_error(err)
        if dask_error is None:
            raise
        raise dask_error from err
    check_partition_output(output)
    return output


def merge(parts: Sequence[Partial]) -> Partial:
    """Add the outputs of *parts* (without mutating them) and concatenate their bookkeeping; an output
    that cannot be added becomes an :class:`~distproc.engine.merge.OutputConflict` in its place. One
    part is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    return Partial(
        output=add_outputs((p.output, [s.index for s in p.stats]) for p in parts),
        stats=[s for p in parts for s in p.stats],
        failures=[f for p in parts for f in p.failures],
        unsaved=[u for p in parts for u in p.unsaved],
    )
