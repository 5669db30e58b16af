"""Sending a run's graph to the scheduler in two parts, with its task priorities.

Workers start on the first partitions while the scheduler takes in the rest of a big job. The private
distributed and dask APIs this needs are in :mod:`distproc._compat`.
"""

from __future__ import annotations

from typing import Any

from distproc._compat import send_graph, task_ref
from distproc.engine.graph import MERGES, post_order

__all__ = ("submit_graph",)

#: The first graph sent holds this many partition tasks per worker thread (at least :data:`_FIRST_BATCH_MIN`),
#: so workers start on them while the scheduler takes in the rest of a big job.
_FIRST_BATCH_PER_THREAD = 4
_FIRST_BATCH_MIN = 16


def submit_graph(
    client: Any,
    graph: dict[Any, Any],
    task_keys: list[Any],
    final_key: Any,
    *,
    keep_tasks: bool,
    watch: int = 0,
) -> tuple[Any, list[Any]]:
    """Send a :func:`~distproc.engine.graph.build_graph` graph to the scheduler; returns the final future
    and, with *keep_tasks*, one future per partition task (for progress; release each once done), else
    one for each of the first *watch* tasks (to see how they ended).

    A big job goes as two graphs: the shared keys and the first few tasks, which workers start on at
    once, then the rest (tasks and the reduction, which refers to the first graph's keys). The
    scheduler takes in one client's messages in order, so the second graph is in before any of the first
    graph's futures is released. Without *keep_tasks* the client holds no task futures at all:
    each task's output is dropped by the scheduler as soon as its reduction has consumed it, and
    10^4 futures are neither created nor tracked.
    """
    priority = post_order(graph, final_key)
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
    first = max(_FIRST_BATCH_MIN, _FIRST_BATCH_PER_THREAD * threads)
    kept = len(task_keys) if keep_tasks else min(watch, first)
    if len(task_keys) <= 2 * first:
        futures = send_graph(client, graph, [final_key, *task_keys[:kept]], priority)
        return futures[0], futures[1:]
    shared = [k for k in graph if isinstance(k, str)]
    head = task_keys[:first]
    sent = {*shared, *head}
    head_futures = send_graph(client, {k: graph[k] for k in sent}, [*shared, *head], priority)

    refs = {k: task_ref(k) for k in sent}  # one reference object per key, shared by all tasks
    rest = {}
    for key, task in graph.items():
        if key in sent:
            continue
        args = [refs.get(a, a) if type(a) is str else a for a in task[1:]]
        if task[0] in MERGES:
            args[0] = [refs.get(k, k) for k in task[1]]
        rest[key] = (task[0], *args)
    tail = task_keys[first:] if keep_tasks else []
    futures = send_graph(client, rest, [final_key, *tail], priority)
    for future in head_futures[: len(shared)] + head_futures[len(shared) + kept :]:
        future.release()
    return futures[0], [*head_futures[len(shared) : len(shared) + kept], *futures[1:]]
