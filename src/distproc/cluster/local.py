"""``local``: a :class:`distributed.LocalCluster` on this machine (the default)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from distproc.allocator import worker_environ
from distproc.cluster.base import ClusterBackend, register
from distproc.cluster.security import TLS_OPTIONS, registered, use_tls, warn_insecure
from distproc.exceptions import ConfigError

logger = logging.getLogger(__name__)


#: Dask settings distproc's local clusters use where distributed's default is still set:
#: ``{key: (distributed's default, distproc's value)}``. Measured idle on the 2-core VM
#: (benchmarks/README.md): the event-loop health tick every 20 ms cost 17 ms of CPU per second in each
#: worker and about 40 in the process holding the scheduler and nannies (it only feeds the "event loop
#: unresponsive" log line, which needs seconds of blocking, and a dashboard metric); the statistical
#: profiler sampling every 10 ms cost about 13 ms per 100k-event partition; the system monitor (the
#: dashboard's CPU and memory plots) polls psutil every 500 ms. The dashboard keeps all three.
_QUIETER = {
    "distributed.admin.tick.interval": ("20ms", "500ms"),
    "distributed.worker.profile.interval": ("10ms", "100ms"),
    "distributed.admin.system-monitor.interval": ("500ms", "1s"),
    # a worker's death is reported at once: distproc retries the partition alone and counts attempts
    # itself (max_attempts, distproc.engine.failures) instead of blaming whatever ran on the worker
    "distributed.scheduler.allowed-failures": (3, 0),
    # a worker holds only the partitions its threads run (none queued behind them), so the partitions
    # that erred with a dead worker are the ones it was running: a worker killed from outside while it
    # ran one partition counts against that partition alone (max_attempts), not against the next ones
    # the scheduler had already sent it. Costs one round trip per partition (a millisecond here).
    "distributed.scheduler.worker-saturation": (1.1, 1.0),
}


def worker_settings() -> dict[str, object]:
    """Dask settings for the clusters distproc starts: :func:`worker_environ`, and the quieter
    intervals of :data:`_QUIETER` unless configured otherwise."""
    import dask

    settings: dict[str, object] = {"distributed.nanny.pre-spawn-environ": worker_environ()}
    for key, (default, value) in _QUIETER.items():
        if dask.config.get(key) == default:
            settings[key] = value
    return settings


@register
class LocalBackend(ClusterBackend):
    """One single-threaded worker process per core (``workers`` overrides the count).

    The scheduler, nannies, workers and dashboard listen on 127.0.0.1 only (``dashboard_address``
    changes the dashboard's), and over TLS with a certificate made for the run and kept in memory, so
    other users of the machine cannot connect either (``security: false`` turns that off, with a
    warning).
    """

    name = "local"
    options = {
        "workers": None,
        "threads_per_worker": 1,
        "memory_limit": "auto",
        "dashboard_address": "127.0.0.1:0",
        **TLS_OPTIONS,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for key in ("workers", "threads_per_worker"):
            count = self.config[key]
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                msg = f"cluster option {key!r} must be a whole number of at least 1, got {count!r}"
                raise ConfigError(msg, key=f"cluster.{key}")
        check_memory_limit(self.config["memory_limit"])
        self.tls = use_tls(self.name, self.config["security"], self.config["protocol"])

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import dask
        from distributed import Client, LocalCluster
        from distributed.security import Security

        security = Security.temporary() if self.tls else None
        if not self.tls:
            warn_insecure(self.name)
        n = self.config["workers"] or os.cpu_count() or 1
        with _main_not_rerun():
            with dask.config.set(worker_settings()):
                cluster = LocalCluster(
                    n_workers=int(n),
                    threads_per_worker=int(self.config["threads_per_worker"]),
                    processes=True,
                    host="127.0.0.1",
                    protocol="tls://" if self.tls else "tcp://",
                    security=security,
                    memory_limit=self.config["memory_limit"],
                    dashboard_address=self.config["dashboard_address"],
                )
            try:
                with registered(cluster.scheduler_address, security), Client(cluster) as client:
                    yield client
            finally:
                _close(cluster)


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """While open, worker processes started by multiprocessing's ``spawn`` do not run ``__main__`` again.

    ``spawn`` starts each nanny's worker as a fresh interpreter and, so that pickles referring to
    ``__main__`` resolve, first runs the parent's main script in it (as ``__mp_main__``). A script
    calling ``distproc.run`` at top level, without ``if __name__ == "__main__":``, then starts a cluster
    inside each worker while it bootstraps: multiprocessing raises and the run hangs. multiprocessing
    itself skips that step when ``__main__``'s module spec is named ``"__main__"`` (as for ``python -c``,
    the interactive interpreter and ``python -m pkg``), so that is what ``__main__`` says while the cluster
    is open (restarted workers included); the user's spec is put back afterwards. Workers need nothing
    from the script: the processor travels pickled by value (cloudpickle) and distributed pickles other
    ``__main__`` objects by value too. Launching the workers as separate commands instead would lose the
    nannies' restarts and the in-memory TLS certificate of the run.
    """
    import importlib.machinery

    main = sys.modules.get("__main__")
    if main is None or getattr(main.__spec__, "name", None) == "__main__":
        yield
        return
    saved = main.__spec__
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


def check_memory_limit(limit: Any) -> None:
    """Raise :class:`ConfigError` unless *limit* is a worker memory limit Dask understands.

    ``"auto"``, ``0``/``None`` (no limit), a byte count, a size (``"1.5 GB"``) or a fraction of the
    machine's memory (``0.5``).

    Examples
    --------
    >>> from distproc.cluster.local import check_memory_limit
    >>> from distproc.exceptions import ConfigError
    >>> check_memory_limit("1.5 GB")
    >>> try:
    ...     check_memory_limit("lots")
    ... except ConfigError as err:
    ...     print(err.key)
    cluster.memory_limit
    """
    from dask.utils import parse_bytes

    if limit is None or limit == "auto":
        return
    ok = isinstance(limit, int | float) and not isinstance(limit, bool) and limit >= 0
    if isinstance(limit, str):
        try:
            ok = parse_bytes(limit) >= 0
        except ValueError:
            ok = False
    if not ok:
        msg = (
            f"cluster option 'memory_limit' must be 'auto', a size such as '4 GB' or a byte count, "
            f"got {limit!r}"
        )
        raise ConfigError(msg, key="cluster.memory_limit")


def _close(cluster: Any) -> None:
    """Shut *cluster* down; a worker slow to exit (a loaded machine) is killed, not a run's failure.

    The run's results are already on the client by then, so a timeout while the nanny waits for its worker
    process to exit is logged rather than raised.
    """
    try:
        cluster.close()
    except TimeoutError:
        logger.warning("local cluster workers did not exit in time; they were killed")
