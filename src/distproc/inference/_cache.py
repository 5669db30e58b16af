"""The onnxruntime sessions of a worker process, kept in the run's worker state.

An ``InferenceSession`` cannot be pickled, so models ship their bytes and each worker process builds a
session on first use in a run and keeps it in the run's :class:`~distproc.engine.state.RunState` (outside
a run, the process's default state), keyed by the model's content hash, the execution providers and the
thread count. Later chunks (and other model objects with the same bytes) reuse it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from distproc.inference.backends import InferenceBackend, import_onnxruntime

__all__ = (
    "clear_sessions",
    "columnar_model",
    "columnar_name",
    "default_threads",
    "get_session",
    "sessions_created",
)

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


def columnar_name(name: str) -> str:
    """The name of the feature-major input that replaces input *name* in :func:`columnar_model`."""
    return f"{name}.distproc_columns"


def columnar_model(model: bytes, inputs: Iterable[str]) -> bytes:
    """*model* with each ``(N, F)`` input in *inputs* taken feature-major, as ``(F, N)``, instead.

    A ``Transpose`` node in front of the graph turns the new input (named by :func:`columnar_name`) back
    into the original tensor, so every node reads what it read before. onnxruntime folds the transpose
    into a following ``MatMul``/``Gemm`` (``transA``); other consumers get its blocked transpose, which is
    cheaper than writing the rows with a stride in NumPy.
    """
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(model)
    graph = proto.graph
    transposes = []
    for arg in graph.input:
        if arg.name not in inputs:
            continue
        dims = arg.type.tensor_type.shape.dim
        if len(dims) == 2:  # a declared (rows, features) shape becomes (features, rows)
            rows = onnx.TensorShapeProto.Dimension()
            rows.CopyFrom(dims[0])
            dims[0].CopyFrom(dims[1])
            dims[1].CopyFrom(rows)
        transposes.append(helper.make_node("Transpose", [columnar_name(arg.name)], [arg.name], perm=[1, 0]))
        arg.name = columnar_name(arg.name)
    for node in reversed(transposes):
        graph.node.insert(0, node)
    if not any(opset.domain in ("", "ai.onnx") for opset in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("", 13))  # e.g. a tree model: only ai.onnx.ml
    return proto.SerializeToString()


def get_session(
    model: bytes,
    digest: str,
    backend: InferenceBackend,
    threads: int | None = None,
    columnar: frozenset[str] = frozenset(),
) -> Any:
    """The cached session for *model* (identified by *digest*) on *backend*; built on first use.

    With *columnar* input names, the session is built from :func:`columnar_model`.
    """
    from distproc.engine.state import current_state

    n_threads = threads or default_threads()
    key = (os.getpid(), digest, _providers_key(backend), n_threads, columnar)
    return current_state().cached(
        SESSION_KIND, key, lambda: _new_session(model, backend, n_threads, columnar)
    )


def _new_session(model: bytes, backend: InferenceBackend, n_threads: int, columnar: frozenset[str]) -> Any:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    names = [name for name, _ in backend.providers]
    provider_options = [dict(opts) for _, opts in backend.providers]
    built = columnar_model(model, columnar) if columnar else model
    return ort.InferenceSession(
        built, sess_options=options, providers=names, provider_options=provider_options
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
