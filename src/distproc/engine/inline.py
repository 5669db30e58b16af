"""Running a run's graph in the calling process, one partition after another (``cluster="inline"``).

coffea's ``IterativeExecutor``: no cluster, no other process, so ``breakpoint()`` and ``pdb`` in
``process()`` work and a failure's traceback is the exception itself. The partitions are the graph's
own tasks' partitions (:func:`~distproc.engine.worker.process_partition`), so the output and the report
are those a cluster run gives.
"""

from __future__ import annotations

from typing import Any

from distproc.engine.failures import RepeatWatch
from distproc.engine.state import WORKER
from distproc.engine.worker import Partial, merge, process_partition

__all__ = ("run_inline",)


def run_inline(
    processor: Any,
    graph: dict[Any, Any],
    task_keys: list[Any],
    watch: RepeatWatch,
    *,
    stop_at_first: bool,
) -> tuple[Partial, Exception | None]:
    """Run the partitions of *graph*'s tasks here, in order; returns their merged :class:`Partial` and the
    first partition's exception (None when none failed).

    The tasks use *processor* itself, not the graph's pickled copy: ``self`` is the user's object and its
    code the user's file (a copy of a class defined in a script has no file name). With *stop_at_first*,
    the first failure ends the run; else it goes on unless *watch* stops it.
    """
    parts: list[Partial] = []
    errors: list[Exception] = []
    if not task_keys:
        return merge(parts), None
    _, proc_key, table_key, *_ = graph[task_keys[0]]
    token = graph[proc_key][0]
    WORKER.run_state(token).loaded_processor = processor
    for i in (i for key in task_keys for i in range(key[1], key[2])):
        part = process_partition(graph[proc_key], graph[table_key], i, errors)
        parts.append(part)
        if (errors and stop_at_first) or watch.see(part):
            break
    WORKER.run_state(token).close()  # the files this run kept open in this process
    return merge(parts), errors[0] if errors else None
