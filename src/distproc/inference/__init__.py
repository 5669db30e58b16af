"""ONNX inference on awkward arrays, on CPU or GPU, inside Dask workers.

Build an :class:`OnnxModel` in a processor's ``__init__`` and call it on a chunk's arrays in
``process``; the model ships its bytes with the processor and each worker process builds its onnxruntime
session once.

Examples
--------
>>> from distproc.inference import available_backends
>>> available_backends()
('auto', 'cpu', 'cuda')
"""

from __future__ import annotations

from distproc.exceptions import (
    BackendUnavailableError,
    GPUUnavailableWarning,
    InferenceInputError,
    InferenceWarning,
    ModelLoadError,
    ModelNotFoundError,
)
from distproc.inference._cache import clear_sessions, sessions_created
from distproc.inference._spec import TensorSpec
from distproc.inference.backends import (
    BACKENDS,
    CPUBackend,
    CUDABackend,
    InferenceBackend,
    available_backends,
    get_backend,
    resolve_backend,
)
from distproc.inference.model import OnnxModel

__all__ = (
    "BACKENDS",
    "BackendUnavailableError",
    "CPUBackend",
    "CUDABackend",
    "GPUUnavailableWarning",
    "InferenceBackend",
    "InferenceInputError",
    "InferenceWarning",
    "ModelLoadError",
    "ModelNotFoundError",
    "OnnxModel",
    "TensorSpec",
    "available_backends",
    "clear_sessions",
    "get_backend",
    "resolve_backend",
    "sessions_created",
)


def __dir__() -> tuple[str, ...]:
    return __all__
