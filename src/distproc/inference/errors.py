"""Errors and warnings raised by :mod:`distproc.inference`.

Every error is an :class:`~distproc.exceptions.InferenceError` (so also a ``ValueError``) and, where one
fits, the matching builtin: a missing model file is a ``FileNotFoundError``, a missing runtime package an
``ImportError``.
"""

from __future__ import annotations

from distproc.exceptions import InferenceError

__all__ = (
    "BackendUnavailableError",
    "GPUUnavailableWarning",
    "InferenceInputError",
    "InferenceWarning",
    "ModelLoadError",
    "ModelNotFoundError",
)


class ModelLoadError(InferenceError):
    """A model file cannot be read, or its content is not a valid ONNX model."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist."""


class InferenceInputError(InferenceError):
    """The arrays given to a model do not match its inputs (name, rank, feature count, dtype, NaN)."""

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)


class BackendUnavailableError(InferenceError, ImportError):
    """An inference backend needs a package or a device that this process does not have."""


class InferenceWarning(UserWarning):
    """Base class of the warnings emitted by :mod:`distproc.inference`."""


class GPUUnavailableWarning(InferenceWarning):
    """A GPU backend was asked for explicitly but cannot be used here; inference runs on the CPU."""
