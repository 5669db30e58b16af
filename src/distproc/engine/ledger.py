"""What the scheduler saw of a run: partition tasks finished, workers lost and partitions executed more
than once.

A :class:`Ledger` is a scheduler plugin registered for the run's duration. It counts, for each partition
task, how often the scheduler sent it to a worker (a partition recomputed after its worker died counts
twice), and the workers that left while the run was going. :func:`watch` registers it and, at the end,
reads the counts back for the report. It also lists the partition tasks in the order they finished, which
the progress bar follows (:func:`follow`) instead of holding a future per task on the client. The
scheduler must be able to import distproc (it is where the workers' environment is); where it cannot, the
counts are ``None`` in the report ("not known") and the progress bar holds a future per task.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = ("Ledger", "follow", "read", "watch")

#: The key name prefix of partition tasks (:func:`distproc.engine.graph.build_graph`).
_PARTITION_PREFIX = "distproc-process-"


class Ledger(SchedulerPlugin):
    """Counts partition task executions and workers removed, on the scheduler."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.executions: Counter[Any] = Counter()
        self.workers_lost = 0
        #: Partition task keys in the order they finished (each once, also when computed again).
        self.finished: list[Any] = []
        self._finished: set[Any] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(key, tuple) and str(key[0]).startswith(_PARTITION_PREFIX)):
            return
        if finish == "processing":
            self.executions[key] += 1
        elif finish == "memory" and key not in self._finished:
            self._finished.add(key)
            self.finished.append(key)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.workers_lost += 1


def _read(dask_scheduler: Any, name: str) -> tuple[int, dict[Any, int]]:
    ledger = dask_scheduler.plugins[name]
    return ledger.workers_lost, {k: n for k, n in ledger.executions.items() if n > 1}


@contextlib.contextmanager
def watch(client: Any) -> Iterator[dict[str, Any]]:
    """Register a :class:`Ledger` on *client*'s scheduler for the block; the yielded dict gets
    ``workers_lost`` and ``reexecuted`` (partition key → executions, only those run more than once)
    when :func:`read` is called with it, or ``None`` for both where the scheduler cannot run the plugin.

    Examples
    --------
    >>> with watch(client) as counts:  # doctest: +SKIP
    ...     final.result()
    ...     read(client, counts)
    """
    name = f"distproc-ledger-{uuid.uuid4().hex[:12]}"
    counts: dict[str, Any] = {"name": name, "workers_lost": None, "reexecuted": None}
    try:
        client.register_plugin(Ledger(name), name=name)
    except Exception as err:  # noqa: BLE001  (the scheduler cannot import distproc: counts unknown)
        warnings.warn(f"workers lost and re-executed partitions are not counted: {err}", stacklevel=3)
        counts["name"] = None
    try:
        yield counts
    finally:
        if counts["name"] is not None:
            with contextlib.suppress(Exception):
                client.unregister_scheduler_plugin(name)


def _finished_since(dask_scheduler: Any, name: str, since: int) -> list[Any]:
    return dask_scheduler.plugins[name].finished[since:]


def follow(client: Any, counts: dict[str, Any]) -> Callable[[], list[Any]]:
    """A function that returns the keys of the partition tasks finished since its last call, from the
    ledger of :func:`watch`'s *counts* (one small message to the scheduler per call).

    Examples
    --------
    >>> with watch(client) as counts:  # doctest: +SKIP
    ...     finished = follow(client, counts)
    ...     finished()
    [('distproc-process-1f2e3d4c5b6a', 0, 4)]
    """
    seen = 0

    def finished() -> list[Any]:
        nonlocal seen
        keys = client.run_on_scheduler(_finished_since, name=counts["name"], since=seen)
        seen += len(keys)
        return keys

    return finished


def read(client: Any, counts: dict[str, Any]) -> None:
    """Fill *counts* (from :func:`watch`) with what the scheduler's ledger holds now."""
    if counts["name"] is not None:
        counts["workers_lost"], counts["reexecuted"] = client.run_on_scheduler(_read, name=counts["name"])
