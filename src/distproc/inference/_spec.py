"""What a model declares about its inputs and outputs, and checks of given arrays against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distproc.exceptions import InferenceInputError
from distproc.inference.backends import ORT_DTYPES


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, shape (``None`` for a dynamic axis) and element dtype.

    Examples
    --------
    >>> import numpy as np
    >>> TensorSpec("x", (None, 10), np.dtype("float32"), "tensor(float)").describe()
    "'x': float32[N, 10]"
    """

    name: str
    shape: tuple[int | None, ...] | None
    dtype: np.dtype | None
    type: str

    @classmethod
    def from_node_arg(cls, arg: Any) -> TensorSpec:
        """From an onnxruntime ``NodeArg`` (``session.get_inputs()[i]``)."""
        shape = None
        if arg.shape is not None:
            shape = tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in arg.shape)
        return cls(arg.name, shape, ORT_DTYPES.get(arg.type), arg.type)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def trailing(self) -> tuple[int | None, ...]:
        """The shape without the batch (first) axis."""
        return () if not self.shape else self.shape[1:]

    def describe(self) -> str:
        if self.dtype is None or self.shape is None:
            return f"{self.name!r}: {self.type}"
        dims = ", ".join(
            "N" if i == 0 and d is None else "?" if d is None else str(d) for i, d in enumerate(self.shape)
        )
        return f"{self.name!r}: {self.dtype}[{dims}]"


def _fmt_names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def check_dtype(spec: TensorSpec, feature: str, given: np.dtype) -> None:
    """Raise unless *given* converts to the input's dtype without losing meaning.

    Any float converts to any float (float64 -> float32 is the common case), integers and booleans to
    floats or wider integers; floats never convert to integers and non-numeric data never convert.
    """
    expected = spec.dtype
    if expected is None or given == expected:
        return
    numeric = given.kind in "biuf"
    ok = numeric and (
        expected.kind == "f"
        or (expected.kind in "iu" and given.kind in "biu" and np.can_cast(given, expected, "same_kind"))
        or (expected.kind == "b" and given.kind == "b")
    )
    if not ok:
        msg = (
            f"input {spec.describe()}: feature {feature!r} has dtype {given}, which does not convert to "
            f"{expected}. Convert it first (e.g. ak.values_astype(x, np.{expected}))."
        )
        raise InferenceInputError(msg, input_name=spec.name)


def check_shape(
    spec: TensorSpec, given: tuple[int | None, ...], features: Sequence[str], layout: str, declared: bool
) -> tuple[int | None, ...]:
    """Check the shape a layout produces, ``(rows, *middle, n_features)``, against *spec*.

    Returns the shape to feed: *given*, or ``(rows, prod(middle) * n_features)`` when the model wants the
    padded objects flattened into one axis. Raises :class:`InferenceInputError` naming the input and
    showing expected vs given rank and feature count.
    """
    if spec.shape is None:
        return given
    hint = (
        ""
        if declared
        else " Pass features=[...] to OnnxModel to select and order the fields the model was trained on."
    )
    rows, *middle, n_feat = given
    if spec.rank == len(given):
        fed = given
    elif spec.rank == len(given) - 1 and len(middle) == 1 and layout == "padded":  # (rows, N * F)
        fed = (rows, middle[0] * n_feat)
    elif spec.rank == 1 and not middle and n_feat == 1:  # a model taking one feature as a 1-D tensor
        return (rows,)
    else:
        msg = (
            f"input {spec.describe()} has rank {spec.rank}, but the {layout!r} layout of {len(features)} "
            f"feature(s) ({_fmt_names(features)}) gives rank {len(given)} (shape {_shape_str(given)}).{hint}"
        )
        raise InferenceInputError(msg, input_name=spec.name)
    if fed is not given:
        want = spec.shape[-1]
        if want is not None and want != fed[-1]:
            per_object = want / n_feat
            msg = (
                f"input {spec.describe()} expects {want} values per row, but {middle[0]} objects x "
                f"{n_feat} features ({_fmt_names(features)}) give {fed[-1]}"
                + (f"; use max_objects={int(per_object)}." if per_object.is_integer() else f".{hint}")
            )
            raise InferenceInputError(msg, input_name=spec.name)
        return fed
    if spec.shape[-1] is not None and spec.shape[-1] != n_feat:
        msg = (
            f"input {spec.describe()} expects {spec.shape[-1]} features on its last axis, given "
            f"{n_feat}: {_fmt_names(features)}.{hint}"
        )
        raise InferenceInputError(msg, input_name=spec.name)
    for axis, (want, have) in enumerate(zip(spec.shape[1:-1], given[1:-1], strict=True), start=1):
        if want is not None and want != have:
            fix = f" Use max_objects={want}." if layout == "padded" and axis == 1 else ""
            msg = f"input {spec.describe()} expects {want} on axis {axis}, given {_shape_str(given)}.{fix}"
            raise InferenceInputError(msg, input_name=spec.name)
    return fed


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
