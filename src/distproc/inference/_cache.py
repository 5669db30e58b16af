"""Process-level cache of onnxruntime sessions.

An ``InferenceSession`` cannot be pickled, so models ship their bytes and each worker process builds a
session on first use and keeps it here, keyed by the model's content hash, the execution providers and the
thread count. Later chunks (and other model objects with the same bytes) reuse it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from distproc.inference.backends import InferenceBackend, import_onnxruntime

__all__ = ("clear_sessions", "default_threads", "get_session", "sessions_created")

_SESSIONS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()
_CREATED = 0  # sessions built by this process (tests read it from each worker with client.run)


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
    global _CREATED
    n_threads = threads or default_threads()
    key = (os.getpid(), digest, _providers_key(backend), n_threads)
    session = _SESSIONS.get(key)
    if session is not None:
        return session
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            ort = import_onnxruntime()
            options = ort.SessionOptions()
            options.intra_op_num_threads = n_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            names = [name for name, _ in backend.providers]
            provider_options = [dict(opts) for _, opts in backend.providers]
            session = ort.InferenceSession(
                model, sess_options=options, providers=names, provider_options=provider_options
            )
            _SESSIONS[key] = session
            _CREATED += 1
    return session


def sessions_created() -> int:
    """How many sessions this process has built so far (a worker that reuses its session reports 1).

    Examples
    --------
    >>> from distproc.inference import sessions_created
    >>> sessions_created() >= 0
    True
    """
    return _CREATED


def clear_sessions() -> None:
    """Drop every cached session of this process (they are rebuilt on next use).

    Examples
    --------
    >>> from distproc.inference import clear_sessions
    >>> clear_sessions()
    """
    with _LOCK:
        _SESSIONS.clear()
