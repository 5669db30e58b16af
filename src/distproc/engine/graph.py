"""The task graph of a run: one task per few partitions of one file, then a tree reduction, and its task
priorities.

A task processes ``partitions_per_task`` consecutive partitions of one file
(:func:`~distproc.engine.worker.process_partitions`: each partition under its own ``try``, failures
recorded per partition), because the scheduler's cost is per task, about a millisecond of its CPU, whatever
the task does; for small runs a task is one partition, which keeps the workers evenly loaded
(:func:`choose_per_task`). A task's key is ``(name, lo, hi)``: the partitions ``[lo, hi)`` it
processes. The processor (with the run's token and worker options) and the partition table are single
graph keys shipped once per worker, so the graph is O(partitions) whatever the processor fills, and each
task pickles to a few hundred bytes.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from distproc.engine.checkpoint import Checkpoint, load_entry, merge_and_save, process_and_save
from distproc.engine.worker import WorkerOptions, merge, process_partitions
from distproc.partitioning import PartitionTable
from distproc.remote import RETRIES

__all__ = (
    "build_graph",
    "checkpoint_nodes",
    "choose_per_task",
    "graph_token",
    "post_order",
    "task_spans",
    "tree_spans",
)

#: The reduction tasks' functions (their first argument is the list of children).
MERGES = (merge, merge_and_save)
#: ``partitions_per_task: null`` (auto): a task holds one partition per this many partitions of the run
#: (at least 1: one below 5,000 partitions, two from 5,000, ...), at most :data:`AUTO_MAX_PER_TASK`.
AUTO_PARTITIONS_STEP = 2_500
AUTO_MAX_PER_TASK = 4


def choose_per_task(partitions: int, given: int | None = None) -> int:
    """Partitions per task: *given*, or (``None``) chosen by the run's number of *partitions*: 1 below
    5,000 (small runs keep every partition a task, so the workers stay evenly loaded to the end), then
    ``partitions // 2500``, at most 4 (from 10,000 partitions: a quarter of the scheduler's work).

    Examples
    --------
    >>> [choose_per_task(n) for n in (40, 4_999, 5_000, 10_000, 100_000)]
    [1, 1, 2, 4, 4]
    >>> choose_per_task(100_000, 1)
    1
    """
    if given is not None:
        return given
    return max(1, min(AUTO_MAX_PER_TASK, partitions // AUTO_PARTITIONS_STEP))


def task_spans(table: PartitionTable, per_task: int) -> list[tuple[int, int]]:
    """The partitions ``[lo, hi)`` of each task: consecutive partitions of one file, at most *per_task*
    of them, a file's partitions shared as evenly as its number of tasks allows (10 in 4s: 4, 3, 3)."""
    spans: list[tuple[int, int]] = []
    files = table.file_index
    lo = 0
    for i in range(1, len(files) + 1):
        if i < len(files) and files[i] == files[lo]:
            continue
        count = i - lo  # the partitions of one file: [lo, i)
        tasks = -(-count // per_task)
        bounds = [lo + count * t // tasks for t in range(tasks + 1)]
        spans.extend(itertools.pairwise(bounds))
        lo = i
    return spans


def build_graph(
    processor: Any,
    table: PartitionTable,
    *,
    split_every: int,
    per_task: int = 1,
    schema: str = "nanoaod",
    retries: int = RETRIES,
    open_files: int = WorkerOptions.open_files,
    local_reads: str = WorkerOptions.local_reads,
    checkpoint: Checkpoint | None = None,
    done: Sequence[tuple[int, int]] = (),
) -> tuple[dict[Any, Any], list[Any], Any]:
    """The task graph: partition tasks of up to *per_task* partitions (:func:`task_spans`) and a tree
    reduction. Returns ``(graph, task_keys, final)``; a task key is ``(name, lo, hi)``.

    *schema*, *retries*, *open_files* and *local_reads* are the run options the workers apply
    (:class:`~distproc.engine.worker.WorkerOptions`). With a *checkpoint*, every partition task and
    reduction task saves its output there (:mod:`distproc.engine.checkpoint`), and the spans ``[lo, hi)``
    in *done* (nodes of :func:`checkpoint_nodes`) are read from it instead of being processed: a task's
    span or a subtree's is a leaf of the reduction, a single partition inside a task is read by that task.
    """
    import cloudpickle

    token = uuid.uuid4().hex[:12]
    options = WorkerOptions(schema=schema, retries=retries, open_files=open_files, local_reads=local_reads)
    proc_key, table_key = f"distproc-processor-{token}", f"distproc-partitions-{token}"
    graph: dict[Any, Any] = {proc_key: (token, cloudpickle.dumps(processor), options), table_key: table}
    name = f"distproc-process-{token}"
    ckpt_key = f"distproc-checkpoint-{token}"
    if checkpoint is not None:
        graph[ckpt_key] = checkpoint
    done_spans = set(done)
    levels = tree_spans(task_spans(table, per_task), split_every)
    task_keys = []

    def add(depth: int, j: int) -> Any:
        """Add node *j* of tree level *depth* (and what it needs); return its key."""
        span = levels[depth][j]
        if span in done_spans:
            key = (f"distproc-resume-{token}", span[0])
            graph[key] = (load_entry, ckpt_key, *span)
        elif depth == 0:
            key = (name, *span)
            graph[key] = (process_partitions, proc_key, table_key, *span)
            if checkpoint is not None:
                inside = tuple(i for i in range(*span) if (i, i + 1) in done_spans)
                graph[key] = (process_and_save, proc_key, table_key, *span, ckpt_key, inside)
            task_keys.append(key)
        else:
            first = j * split_every
            children = range(first, min(first + split_every, len(levels[depth - 1])))
            group = [add(depth - 1, c) for c in children]
            key = (f"distproc-reduce-{depth - 1}-{token}", j)
            graph[key] = (merge, group)
            if checkpoint is not None:
                graph[key] = (merge_and_save, group, ckpt_key, span, [levels[depth - 1][c] for c in children])
        return key

    return graph, task_keys, add(len(levels) - 1, 0)


def tree_spans(tasks: Sequence[tuple[int, int]], split_every: int) -> list[list[tuple[int, int]]]:
    """The spans ``[lo, hi)`` of partitions under each node of the reduction tree, level by level: the
    *tasks* (:func:`task_spans`), then each reduction level, up to the single root (at least one reduction
    level).

    Examples
    --------
    >>> tree_spans([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], 2)
    [[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], [(0, 2), (2, 4), (4, 5)], [(0, 4), (4, 5)], [(0, 5)]]
    """
    levels = [list(tasks)]
    while len(levels[-1]) > 1 or len(levels) == 1:
        below = levels[-1]
        groups = [below[j : j + split_every] for j in range(0, len(below), split_every)] or [[]]
        levels.append([(g[0][0], g[-1][1]) if g else (0, 0) for g in groups])
    return levels


def checkpoint_nodes(table: PartitionTable, per_task: int, split_every: int) -> set[tuple[int, int]]:
    """The spans a checkpoint entry of this run's graph may cover: every single partition (a task with a
    failed partition saves its other partitions one by one) and every node of the task tree."""
    levels = tree_spans(task_spans(table, per_task), split_every)
    return {(i, i + 1) for i in range(len(table))}.union(*levels)


def graph_token(final_key: Any) -> str:
    """The run token of a :func:`build_graph` graph, from its final key."""
    return str(final_key[0]).rsplit("-", 1)[1]


def post_order(graph: Mapping[Any, Any], final_key: Any) -> dict[Any, int]:
    """Task priorities (lower runs first): the shared keys, then each reduction right after its inputs.

    This is the order ``dask.order`` finds for a tree reduction; giving it to the scheduler saves it from
    ordering every graph (about a second per 10^4 partitions).
    """
    priority = {k: i for i, k in enumerate(k for k in graph if isinstance(k, str))}
    stack: list[tuple[Any, bool]] = [(final_key, False)]
    while stack:
        key, expanded = stack.pop()
        task = graph[key]
        if expanded or task[0] not in MERGES:
            priority[key] = len(priority)
            continue
        stack.append((key, True))
        stack.extend((child, False) for child in reversed(task[1]))
    return priority
