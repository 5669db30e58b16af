"""Failures outside a partition: a partition that kills its worker, and a cluster left without workers.

A partition task never raises (:func:`~distproc.engine.worker.process_partition` records exceptions),
so a task error the client sees is a worker that died while running it (``KilledWorker``): out of
memory, a crash in a compiled library, or killed from outside. The scheduler cannot tell a culprit
from an innocent partition that shared the worker (or the task: a task may hold several partitions), so
:func:`wait_for_result` does not blame it yet:

1. the first time, every partition of the task becomes a *suspect* and is retried alone (its task, run
   again, runs each of them on its own), in a child process of a
   worker (:func:`run_isolated`): a kill there is exact, and its reason is known (the child's memory
   passing the worker's limit, or the signal it died of), so the partition is recorded as a failed
   partition with that reason and the run goes on;
2. a partition whose worker died ``max_attempts`` times (e.g. workers killed from outside while they
   ran it) is recorded as failed without being run again. A worker of a local cluster distproc starts holds
   only the partitions its threads run (``worker-saturation: 1.0``,
   :data:`distproc.cluster.local._QUIETER`), so a death counts only against those.

Which partitions are suspects or given up travels to every worker, present and future, as a
:class:`Verdicts` worker plugin, and the reduction is retried (``Client.retry``): nothing the other
partitions computed is lost. With no worker left for ``no_workers_timeout`` seconds, the run stops with
:class:`~distproc.exceptions.RunStopped`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from distproc._compat import retry_erred
from distproc._paths import atomic_write
from distproc.exceptions import ClusterError, DistprocError, RunStopped
from distproc.partitioning import PartitionTable
from distproc.report import PartitionFailure

__all__ = ("Verdicts", "intercept", "run_isolated", "wait_for_result")

#: Seconds between the client's looks at the run (and at the number of workers) while it waits.
POLL_SECONDS = 1.0
#: The verdicts of the runs this (worker) process serves, by run token (set by the :class:`Verdicts`
#: plugin; an empty mapping for a run without suspects).
_VERDICTS: dict[str, Verdicts] = {}


class Verdicts(WorkerPlugin):
    """A worker plugin carrying one run's suspects (run alone) and given-up partitions (with reasons).

    Registered under one name per run, so registering it again replaces it on every worker, and
    workers that join later (a nanny's restart) get it too.

    Examples
    --------
    >>> from distproc.engine.killed import Verdicts
    >>> Verdicts("run-1", isolated={3}, given_up={5: "worker died (signal 9)"}).name
    'distproc-verdicts-run-1'
    """

    def __init__(self, token: str, *, isolated: set[int], given_up: dict[int, str]) -> None:
        self.token = token
        self.name = f"distproc-verdicts-{token}"
        self.isolated = frozenset(isolated)
        self.given_up = dict(given_up)

    def setup(self, worker: Any) -> None:
        _VERDICTS[self.token] = self

    def teardown(self, worker: Any) -> None:
        if _VERDICTS.get(self.token) is self:
            del _VERDICTS[self.token]


def failure(
    table: PartitionTable,
    i: int,
    exception: str,
    traceback: str = "",
    worker: str = "",
    error: DistprocError | None = None,
) -> Any:
    """A :class:`~distproc.engine.worker.Partial` holding only the failure of partition *i* (*error*: the
    exception itself, where it is a distproc error, which pickles with its attributes)."""
    from distproc.engine.worker import Partial

    part = table[i]
    record = PartitionFailure(
        dataset=part.dataset,
        file=part.file,
        treename=part.treename,
        entry_start=part.entry_start,
        entry_stop=part.entry_stop,
        exception=exception,
        traceback=traceback,
        worker=worker,
        error=error,
    )
    return Partial(failures=[record])


def intercept(proc: tuple[str, bytes, Any], table: PartitionTable, i: int) -> Any:
    """On a worker: the result of partition *i* if a verdict decides it (given up, or run alone), else
    None (process it as usual)."""
    verdicts = _VERDICTS.get(proc[0])
    if verdicts is None:
        return None
    if i in verdicts.given_up:
        return failure(table, i, verdicts.given_up[i])
    if i in verdicts.isolated:
        return run_isolated(proc, table, i)
    return None


def _memory_limit() -> int | None:
    try:
        from distributed import get_worker

        return get_worker().memory_manager.memory_limit or None
    except (ValueError, AttributeError):
        return None


def run_isolated(
    proc: tuple[str, bytes, Any], table: PartitionTable, i: int, *, memory_limit: int | None = None
) -> Any:
    """Process partition *i* in a child process; a crash or a memory overrun there fails only it.

    The child is killed when its memory passes *memory_limit* (default: the worker's memory limit),
    as the worker's nanny would kill the worker; the partition's failure then says
    ``worker killed: memory limit 1.5 GB``; a child killed by a signal ``worker died (signal 11)``.

    Examples
    --------
    >>> from distproc.engine.killed import run_isolated
    >>> partial = run_isolated(proc, table, 3)  # doctest: +SKIP
    """
    import psutil

    limit = memory_limit if memory_limit is not None else _memory_limit()
    with tempfile.TemporaryDirectory(prefix="distproc-isolated-") as tmp:
        given, result = os.path.join(tmp, "task.pkl"), os.path.join(tmp, "partial.pkl")
        with open(given, "wb") as f:
            pickle.dump((proc, table, i), f)
        code = f"from distproc.engine.killed import _child; _child({given!r}, {result!r})"
        child = subprocess.Popen([sys.executable, "-c", code])
        reason = None
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                rss = watched.memory_info().rss
            except psutil.Error:  # exited between the two calls
                rss = 0
            if limit and rss > limit:
                child.kill()
                child.wait()
                reason = f"worker killed: memory limit {limit / 1e9:g} GB"
                break
            time.sleep(0.05)
        if reason is None and child.returncode < 0:
            reason = f"worker died (signal {-child.returncode})"
        elif reason is None and child.returncode != 0:
            reason = f"worker process exited with status {child.returncode}"
        if reason is not None:
            return failure(table, i, f"{reason} (partition run alone after its worker died)")
        with open(result, "rb") as f:
            return pickle.load(f)


def _partitions(key: Any, partition_names: set[str]) -> range | None:
    """The partition indices of a partition task's key ``(name, lo, hi)``, or None for another task (a
    reduction)."""
    if isinstance(key, tuple) and len(key) == 3 and key[0] in partition_names:
        return range(int(key[1]), int(key[2]))
    return None


def wait_for_result(
    client: Any,
    final: Any,
    *,
    token: str,
    task_keys: Sequence[Any],
    max_attempts: int,
    no_workers_timeout: float,
) -> Any:
    """The reduced :class:`~distproc.engine.worker.Partial` of *final*, surviving workers that die.

    A partition whose worker died is retried alone, then given up after *max_attempts* deaths (see the
    module's docstring); a reduction task whose worker died is retried up to *max_attempts* times. With
    no worker connected for *no_workers_timeout* seconds, raises :class:`RunStopped`.
    """
    from distributed import KilledWorker

    names = {k[0] for k in task_keys[:1]}
    deaths: Counter[Any] = Counter()
    isolated: set[int] = set()
    given_up: dict[int, str] = {}
    alone_since: float | None = None
    try:
        while True:
            try:
                return final.result(timeout=POLL_SECONDS)
            except TimeoutError:
                if client.nthreads():  # asks the scheduler (its cached info may be stale)
                    alone_since = None
                    continue
                alone_since = alone_since or time.monotonic()
                if time.monotonic() - alone_since > no_workers_timeout:
                    msg = (
                        f"run stopped: no worker connected for {no_workers_timeout:g} s "
                        "(no_workers_timeout). Partitions finished so far are kept in the checkpoint; "
                        "start workers (or check the cluster) and run the same command again to resume"
                    )
                    raise RunStopped(msg) from None
            except KilledWorker as err:
                # every partition that was on the dead worker(s) erred with it, not only the one named
                erred = client.run_on_scheduler(_erred_partitions, name=next(iter(names), ""))
                key, named = err.task, _partitions(err.task, names)
                if named is None:
                    deaths[key] += 1
                    if deaths[key] >= max_attempts:
                        msg = f"the workers running task {key!r} died {deaths[key]} times"
                        raise ClusterError(msg) from err
                for i in {*erred, *(named or ())}:
                    deaths[i] += 1
                    if deaths[i] >= max_attempts:
                        isolated.discard(i)
                        given_up[i] = f"worker died {deaths[i]} times while processing it (max_attempts)"
                    else:
                        isolated.add(i)
                _register(client, Verdicts(token, isolated=isolated, given_up=given_up))
                retry_erred(client, final)
    finally:
        if isolated or given_up:
            with contextlib.suppress(Exception):  # the cluster may be gone
                client.unregister_worker_plugin(f"distproc-verdicts-{token}")


#: Attempts at registering the verdicts while workers die around it, and the pause between them.
REGISTER_ATTEMPTS, REGISTER_PAUSE = 10, 0.5


def _register(client: Any, verdicts: Verdicts) -> None:
    """Register *verdicts* on every worker, present and future, while workers may be dying.

    The scheduler keeps the plugin for future workers, then sends it to each present one; when one of
    them dies meanwhile, the scheduler's broadcast fails and it closes the client's connection with a
    ``CommClosedError``. Registering again (the plugin replaces itself) reaches the workers left.
    """
    from distributed.comm import CommClosedError

    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        try:
            client.register_plugin(verdicts)
        except (CommClosedError, OSError):
            if attempt == REGISTER_ATTEMPTS:
                raise
            time.sleep(REGISTER_PAUSE)
        else:
            return


def _erred_partitions(dask_scheduler: Any, name: str) -> list[int]:
    """On the scheduler: the indices of the partitions of the run's partition tasks that erred."""
    return [
        i
        for key, task in dask_scheduler.tasks.items()
        if isinstance(key, tuple) and key[0] == name and task.state == "erred"
        for i in range(key[1], key[2])
    ]


def _child(given: str, result: str) -> None:
    """The child process of :func:`run_isolated`: process the partition, write its Partial."""
    from distproc.engine.worker import process_partition

    with open(given, "rb") as f:
        proc, table, i = pickle.load(f)
    partial = process_partition(proc, table, i)
    import cloudpickle

    with atomic_write(result) as path:
        path.write_bytes(cloudpickle.dumps(partial))
