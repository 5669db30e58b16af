"""The task graph of a run: one task per partition, then a tree reduction, and its task priorities.

The processor (with the run's token and worker options) and the partition table are single graph keys
shipped once per worker, so the graph is O(partitions) whatever the processor fills, and each task
pickles to a few hundred bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from distproc.engine.checkpoint import Checkpoint, load_entry, merge_and_save, process_and_save
from distproc.engine.worker import WorkerOptions, merge, process_partition
from distproc.partitioning import PartitionTable
from distproc.remote import RETRIES

__all__ = ("build_graph", "graph_token", "post_order", "tree_spans")

#: The reduction tasks' functions (their first argument is the list of children).
MERGES = (merge, merge_and_save)


def build_graph(
    processor: Any,
    table: PartitionTable,
    *,
    split_every: int,
    schema: str = "nanoaod",
    retries: int = RETRIES,
    open_files: int = WorkerOptions.open_files,
    local_reads: str = WorkerOptions.local_reads,
    checkpoint: Checkpoint | None = None,
    done: Sequence[tuple[int, int]] = (),
) -> tuple[dict[Any, Any], list[Any], Any]:
    """The task graph: partition tasks and a tree reduction. Returns ``(graph, partition_keys, final)``.

    *schema*, *retries*, *open_files* and *local_reads* are the run options the workers apply
    (:class:`~distproc.engine.worker.WorkerOptions`). With a *checkpoint*, every partition and reduction
    task saves its output there (:mod:`distproc.engine.checkpoint`), and the spans ``[lo, hi)`` in *done*
    are read from it instead of being processed: they are leaves of the reduction like partitions.
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
    levels = tree_spans(len(table), split_every)
    partition_keys = []

    def add(depth: int, j: int) -> Any:
        """Add node *j* of tree level *depth* (and what it needs); return its key."""
        span = levels[depth][j]
        if span in done_spans:
            key = (f"distproc-resume-{token}", span[0])
            graph[key] = (load_entry, ckpt_key, *span)
        elif depth == 0:
            key = (name, j)
            graph[key] = (process_partition, proc_key, table_key, j)
            if checkpoint is not None:
                graph[key] = (process_and_save, proc_key, table_key, j, ckpt_key)
            partition_keys.append(key)
        else:
            first = j * split_every
            children = range(first, min(first + split_every, len(levels[depth - 1])))
            group = [add(depth - 1, c) for c in children]
            key = (f"distproc-reduce-{depth - 1}-{token}", j)
            graph[key] = (merge, group)
            if checkpoint is not None:
                graph[key] = (merge_and_save, group, ckpt_key, span, [levels[depth - 1][c] for c in children])
        return key

    return graph, partition_keys, add(len(levels) - 1, 0)


def tree_spans(n: int, split_every: int) -> list[list[tuple[int, int]]]:
    """The spans ``[lo, hi)`` of partitions under each node of the reduction tree, level by level: the
    partitions, then each reduction level, up to the single root (at least one reduction level).

    Examples
    --------
    >>> tree_spans(5, 2)
    [[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], [(0, 2), (2, 4), (4, 5)], [(0, 4), (4, 5)], [(0, 5)]]
    """
    levels = [[(i, i + 1) for i in range(n)]]
    while len(levels[-1]) > 1 or len(levels) == 1:
        below = levels[-1]
        groups = [below[j : j + split_every] for j in range(0, len(below), split_every)] or [[]]
        levels.append([(g[0][0], g[-1][1]) if g else (0, 0) for g in groups])
    return levels


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
