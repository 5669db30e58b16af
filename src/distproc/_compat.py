"""Every use of a private API of distproc's dependencies, in one place, each with its reason.

These are speed-ups and work-arounds that public APIs do not offer. Each function says what it relies on
and what happens where it is missing; :data:`CHECKED_WITH` names the versions they were checked with, and
``tests/test_compat.py`` fails with a clear message when the installed versions differ (then re-check each
function here against the new release and update :data:`CHECKED_WITH`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = (
    "CHECKED_WITH",
    "awkward_error_context",
    "clear_dask_awkward_cache",
    "cloudpickle_dispatch_table",
    "dask_awkward_meta",
    "forget_gateway_loop",
    "graph_tasks",
    "histogram_postcompute",
    "is_dask_awkward_where",
    "retry_erred",
    "schema_with_form",
    "send_graph",
    "task_ref",
    "tree_base_form",
    "with_task_function",
)

#: Distribution → version the private APIs below were checked with.
CHECKED_WITH = {
    "dask": "2025.3.1",
    "distributed": "2025.3.1",
    "coffea": "2026.9.0",
    "awkward": "2.14.0",
    "dask-gateway": "2026.3.0",
    "dask-awkward": "2026.2.1",
    "dask-histogram": "2026.2.0",
}


def send_graph(client: Any, graph: dict[Any, Any], keys: list[Any], priority: Mapping[Any, int]) -> list[Any]:
    """``client.get(graph, keys, sync=False)`` with the task priorities given (no ``dask.order`` then).

    Private: ``Client._graph_to_futures(..., internal_priority=...)`` and
    ``distributed.spans.SpanMetadata``. Where ``_graph_to_futures`` or its ``internal_priority`` is
    missing, the graph goes through the public ``client.get`` and the scheduler orders it.
    """
    send = getattr(client, "_graph_to_futures", None)
    if send is None or "internal_priority" not in inspect.signature(send).parameters:
        return list(client.get(graph, keys, sync=False))
    from distributed.spans import SpanMetadata

    futures = send(
        graph,
        keys=set(keys),
        span_metadata=SpanMetadata(collections=[{"type": "low-level-graph"}]),
        internal_priority={k: priority[k] for k in graph},
        fifo_timeout="60s",  # what client.get passes: both graphs of a run share one generation
    )
    return [futures[k] for k in keys]


def retry_erred(client: Any, future: Any) -> None:
    """``client.retry([future])``: run *future*'s erred task again, with its erred dependencies.

    Private: the scheduler's ``retry`` handler, then ``client.futures[key].retry()`` for the keys this
    client holds. ``Client.retry`` itself fails with a ``KeyError`` when an erred dependency is not a future
    of the client (a partition task under a reduction). Missing: the ``AttributeError`` says which.
    """
    keys = client.sync(client.scheduler.retry, keys=[future.key], client=client.id)
    for key in keys:
        state = client.futures.get(key)
        if state is not None:
            state.retry()


def task_ref(key: Any) -> Any:
    """A reference to *key*, a key of a graph sent earlier, for a task argument of a later graph.

    Private: ``dask._task_spec.TaskRef`` (dask ≥ 2024.12 reads a plain key in a task's arguments as data
    unless the key is in the same graph). Without it, the key itself (which older dask reads as a
    reference).
    """
    try:
        from dask._task_spec import TaskRef
    except ImportError:
        return key
    return TaskRef(key)


def is_dask_awkward_where(func: Any) -> bool:
    """Whether *func* is the callable of a dask-awkward graph node for ``ak.where`` on dask arrays.

    Private: ``dask_awkward.lib.structure._WhereFn`` (called ``(condition, x, y)``; its ``highlevel``
    attribute is read). Dask mode evaluates such nodes with :class:`distproc.engine.flat_where.FlatWhere`.
    Without it, False: every node runs as dask-awkward wrote it.
    """
    try:
        from dask_awkward.lib.structure import _WhereFn
    except ImportError:
        return False
    return isinstance(func, _WhereFn)


def graph_tasks(collections: list[Any]) -> dict[Any, Any]:
    """The unoptimised graph of dask *collections* as ``{key: task}``, each task with ``.key``, ``.func``,
    ``.args``, ``.kwargs`` and ``.dependencies``.

    Private: ``dask._task_spec.convert_legacy_graph`` (dask's own representation of a graph's tasks since
    2024.12; there is no public converter).
    """
    from dask._task_spec import convert_legacy_graph
    from dask.base import collections_to_dsk

    return convert_legacy_graph(dict(collections_to_dsk(collections, optimize_graph=False)))


def with_task_function(task: Any, func: Any) -> Any:
    """*task* (a task of :func:`graph_tasks`) calling *func* instead, with the same key and arguments.

    Private: ``dask._task_spec.Task``. A node that is not a ``Task`` (an alias or a data node) is returned
    unchanged.
    """
    from dask._task_spec import Task

    if not isinstance(task, Task):
        return task
    return Task(task.key, func, *task.args, **task.kwargs)


def cloudpickle_dispatch_table() -> dict[Any, Any] | None:
    """cloudpickle's table of reducers by type, which :mod:`distproc.processor` extends for code objects.

    Private: ``cloudpickle.Pickler._dispatch_table`` (checked with cloudpickle 3.1). Where it is missing or
    not a dict, None: the caller then leaves cloudpickle as it is.
    """
    import cloudpickle

    table = getattr(cloudpickle.Pickler, "_dispatch_table", None)
    return table if isinstance(table, dict) else None


def dask_awkward_meta(array: Any) -> Any:
    """The typetracer array a ``dask_awkward.Array`` carries (its type, form, behavior and attrs).

    Private: the ``_meta`` attribute (dask-awkward has no public accessor). The array's attrs are this
    object's, so setting one here sets it on what the collection's operations see.
    """
    return array._meta


def clear_dask_awkward_cache() -> None:
    """Empty dask-awkward's cache of ``map_partitions`` graphs before a new trace.

    Private: ``dask_awkward.lib.core.dak_cache``, which maps a graph node's name to its graph and meta. A
    trace must build its own graph: a node cached by an earlier trace refers to that trace's input, and
    the cache keeps up to 1000 graphs (and what they hold) alive. Where it is missing there is nothing to
    clear.
    """
    from dask_awkward.lib import core

    cache = getattr(core, "dak_cache", None)
    if cache is not None:
        cache.clear()


def histogram_postcompute(histogram: Any) -> tuple[Any, tuple[Any, ...]]:
    """A ``hist.dask`` histogram's ``__dask_postcompute__`` as a picklable ``(function, args)`` that does
    not hold the collection (dask-histogram's own is a closure over it, graph included).

    Private: dask-histogram's ``_in_memory_type`` (the eager class the collection computes to) and the
    ``_dask`` attribute its own post-compute deletes from the result. Where ``_in_memory_type`` is missing,
    the histogram's own ``__dask_postcompute__``.
    """
    cls = getattr(histogram, "_in_memory_type", None)
    if cls is None:
        return histogram.__dask_postcompute__()
    return _in_memory_histogram, (cls,)


def _in_memory_histogram(values: list[Any], cls: type) -> Any:
    """What a ``hist.dask`` histogram's ``__dask_postcompute__`` does, without the collection itself."""
    out = cls(values[0])
    if hasattr(out, "_dask"):
        del out._dask
    return out


def tree_base_form(tree: Any) -> dict[str, Any]:
    """The awkward form of every interpretable branch of *tree*, as coffea's NanoEvents builds it.

    Private: ``coffea.nanoevents.mapping.UprootSourceMapping._extract_base_form`` (no public equivalent;
    coffea is pinned exactly).
    """
    from coffea.nanoevents.mapping import UprootSourceMapping

    return UprootSourceMapping._extract_base_form(tree)


def schema_with_form(schema: Any, edit: Any) -> Any:
    """A shallow copy of a NanoEvents *schema* whose form is ``edit(form)`` (*schema* is unchanged).

    Private: the ``_form`` attribute of coffea's ``BaseSchema``.
    """
    copied = copy.copy(schema)
    copied._form = edit(schema._form)
    return copied


@contextlib.contextmanager
def awkward_error_context(name: str) -> Iterator[None]:
    """An outer awkward operation context: inner operations format their arguments only on error.

    Private: ``awkward._errors.OperationErrorContext``; where it is missing this does nothing (it is only a
    speed-up).
    """
    try:
        from awkward._errors import OperationErrorContext
    except ImportError:
        yield
        return
    with OperationErrorContext(name, (), {}):
        yield


def forget_gateway_loop(gateway: Any) -> None:
    """Keep a closed dask-gateway client from being closed again when garbage-collected.

    ``Gateway.__del__`` closes it again, which raises once its event loop has stopped (dask-gateway
    2026.3 with distributed 2025.3); without a loop runner ``__del__`` does nothing. Private: the
    ``_loop_runner`` attribute; where it is missing there is nothing to forget.
    """
    with contextlib.suppress(AttributeError):
        del gateway._loop_runner
