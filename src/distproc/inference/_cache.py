"""The onnxruntime sessions of a worker process, kept in the run's worker state.

An ``InferenceSession`` cannot be pickled, so models ship their bytes and each worker process builds a
session on first use in a run and keeps it in the run's :class:`~distproc.engine.state.RunState` (outside
a run, the process's default state), keyed by the model's content hash, the execution providers and the
thread count. Later chunks (and other model objects with the same bytes) reuse it.
"""

from __future__ import annotations

import os
from typing import Any

from distproc.inference.backends import InferenceBackend, import_onnxruntime

__all__ = ("clear_sessions", "default_threads", "get_session", "sessions_created")

#: The kind of the sessions in a run's worker state.
SESSION_KIND = "onnx-session"


def default_threads() -> int:
    """Threads for one session: the Dask worker's ``nthreads`` inside a worker, else the usable CPUs."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _providers_key(backend: InferenceBackend) -> tuple[Any, ...]:
    return tuple((name, tuple(sorted(options.items()))) for name, options in backend.providers)


def get_session(model: bytes, digest: str, backend: InferenceBackend, threads: int | None = None) -> Any:
    """The cached session for *model* (identified by *digest*) on *backend*; built on first use."""
    from distproc.engine.state import current_state

    n_threads = threads or default_threads()
    key = (os.getpid(), digest, _providers_key(backend), n_threads)
    return current_state().cached(SESSION_KIND, key, lambda: _new_session(model, backend, n_threads))


def _new_session(model: bytes, backend: InferenceBackend, n_threads: int) -> Any:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    names = [name for name, _ in backend.providers]
    provider_options = [dict(opts) for _, opts in backend.providers]
    return ort.InferenceSession(
        model, sess_options=options, providers=names, provider_options=provider_options
    )


def sessions_created() -> int:
    """How many sessions this process has built so far, in all runs (a worker that reuses its session
    reports 1; each run builds its own, see :mod:`distproc.engine.state`).

    Examples
    --------
    >>> from distproc.inference import sessions_created
    >>> sessions_created() >= 0
    True
    """
    from distproc.engine.state import WORKER

    return WORKER.built(SESSION_KIND)


def clear_sessions() -> None:
    """Drop every cached session of this process, in all runs (they are rebuilt on next use).

    Examples
    --------
    >>> from distproc.inference import clear_sessions
    >>> clear_sessions()
    """
    from distproc.engine.state import WORKER

    WORKER.clear(SESSION_KIND)
