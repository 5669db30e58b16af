"""Run a flat NumPy/CuPy kernel elementwise over jagged awkward, dask-awkward, NumPy or CuPy inputs.

A *kernel* is ``kernel(xp, *args) -> array`` where ``xp`` is :mod:`numpy` or :mod:`cupy` and every
``arg`` is either a 1-D ``xp`` array (all of one length) or a Python scalar/string. :func:`map_flat`
broadcasts the array inputs (awkward broadcasting, so a per-event value meets every object of its event),
calls the kernel once on the flat leaf buffers, and rebuilds the jagged structure around the result:

* eager awkward arrays (``ak.backend(x) == "cpu"``) -> numpy kernel via :func:`awkward.transform`;
* CuPy-backed awkward arrays (``"cuda"``) -> the same with :mod:`cupy`;
* typetracer arrays (``"typetracer"``, the dask-awkward metadata pass) -> the inputs' buffers are
  touched, so column optimisation keeps them, and an empty typetracer buffer of the right dtype is
  returned: the kernel is never called;
* :class:`dask_awkward.Array` inputs -> :func:`dask_awkward.map_partitions` over the same function;
* NumPy/CuPy arrays and scalars -> the kernel directly on broadcast, raveled arrays.

No Python loop runs over events or objects.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import awkward as ak
import numpy as np

from distproc.exceptions import InputsError, format_options

Kernel = Callable[..., Any]


def is_dask(x: object) -> bool:
    """Whether *x* is a :class:`dask_awkward.Array` (without importing dask_awkward)."""
    dak = sys.modules.get("dask_awkward")
    return dak is not None and isinstance(x, dak.Array)


def _is_cupy(x: object) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(backend: str) -> ModuleType:
    """The array library for an awkward backend name: numpy for ``"cpu"``, cupy for ``"cuda"``."""
    if backend == "cpu":
        return np
    if backend == "cuda":
        try:
            import cupy
        except ImportError as err:  # pragma: no cover - awkward's cuda backend itself needs cupy
            msg = (
                "awkward array is on the 'cuda' backend but cupy cannot be imported; "
                "install it with: pip install 'distproc[gpu]'"
            )
            raise InputsError(msg) from err
        return cupy
    msg = f"unsupported awkward backend {backend!r}; expected 'cpu', 'cuda' or 'typetracer'"
    raise InputsError(msg)


def check_numeric(x: object, what: str) -> None:
    """Raise :class:`InputsError` if *x* is a record or string array rather than numbers."""
    if isinstance(x, str):
        msg = f"{what} must be numeric, got the string {x!r}"
        raise InputsError(msg)
    if isinstance(x, ak.Array) or is_dask(x):
        fields = x.fields
        if fields:
            shown = ", ".join(repr(f) for f in fields[:8]) + (", ..." if len(fields) > 8 else "")
            msg = f"{what} must be a numeric array, got a record array with fields {shown}; pass one field"
            raise InputsError(msg)
        kind = x.layout.purelist_parameter("__array__") if isinstance(x, ak.Array) else None
        if kind in ("string", "bytestring"):
            msg = f"{what} must be numeric, got an array of strings"
            raise InputsError(msg)
    elif isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
        msg = f"{what} must be a numeric array, got dtype {x.dtype}"
        raise InputsError(msg)


def bind_inputs(owner: str, names: Sequence[str], args: Sequence[Any], named: Mapping[str, Any]) -> list[Any]:
    """Bind positional and keyword *args* to input *names* like a Python call; raise on a mismatch.

    Parameters
    ----------
    owner
        How the callee is named in messages, e.g. ``"BinnedLookup 'sf'"``.
    names
        The input names, in order.
    args, named
        The positional and keyword arguments of the call.

    Returns
    -------
    list
        One value per input, in the order of *names*.

    Raises
    ------
    InputsError
        Too many positional arguments, an unknown or repeated keyword, or a missing input.

    Examples
    --------
    >>> bind_inputs("f", ("pt", "abseta"), [30.0], {"abseta": 1.2})
    [30.0, 1.2]
    """
    expected = ", ".join(repr(n) for n in names)
    plural = "" if len(names) == 1 else "s"
    if len(args) > len(names):
        msg = f"{owner} takes {len(names)} input{plural} ({expected}), got {len(args)} positional"
        raise InputsError(msg)
    bound = dict(zip(names, args, strict=False))
    for key, value in named.items():
        if key not in names:
            msg = f"{owner} has no input {key!r}. {format_options(key, names, 'inputs')}"
            raise InputsError(msg)
        if key in bound:
            msg = f"{owner} got input {key!r} both by position and by name"
            raise InputsError(msg)
        bound[key] = value
    missing = [n for n in names if n not in bound]
    if missing:
        msg = (
            f"{owner} takes {len(names)} input{plural} ({expected}), got {len(bound)}; "
            f"missing {', '.join(repr(n) for n in missing)}"
        )
        raise InputsError(msg)
    return [bound[n] for n in names]


@dataclass(frozen=True)
class _PartitionKernel:
    """Picklable per-partition function for :func:`dask_awkward.map_partitions`."""

    kernel: Kernel
    dtype: str

    def __call__(self, *args: Any) -> Any:
        return map_flat(self.kernel, args, dtype=self.dtype)


def map_flat(kernel: Kernel, args: tuple[Any, ...] | list[Any], *, dtype: str, label: str = "") -> Any:
    """Apply *kernel* elementwise to *args* (see the module docstring); result has dtype *dtype*."""
    if any(is_dask(a) for a in args):
        import dask_awkward as dak

        return dak.map_partitions(_PartitionKernel(kernel, dtype), *args, label=label or None)
    if any(isinstance(a, ak.Array) for a in args):
        return _map_awkward(kernel, list(args), np.dtype(dtype))
    return _map_arrays(kernel, list(args))


def _map_arrays(kernel: Kernel, args: list[Any]) -> Any:
    """NumPy/CuPy arrays and scalars: broadcast, ravel, run the kernel, restore the shape."""
    if any(_is_cupy(a) for a in args):
        import cupy as xp
    else:
        xp = np
    positions = [i for i, a in enumerate(args) if not isinstance(a, str)]
    arrays = xp.broadcast_arrays(*(xp.asarray(args[i]) for i in positions))
    shape = arrays[0].shape if arrays else ()
    flat = list(args)
    for i, arr in zip(positions, arrays, strict=True):
        flat[i] = xp.ascontiguousarray(arr).reshape(-1)
    out = kernel(xp, *flat)
    out = xp.asarray(out).reshape(shape)
    return out[()] if shape == () else out


def materialized(data: Any, xp: ModuleType = np) -> Any:
    """A layout's buffer (``NumpyArray.data``, ``Index.data``) as an ``xp`` array, read if virtual."""
    materialize = getattr(data, "materialize", None)  # VirtualNDArray (NanoEvents virtual mode)
    if materialize is not None:
        data = materialize()
    return xp.asarray(data)


def _map_awkward(kernel: Kernel, args: list[Any], dtype: np.dtype) -> ak.Array:
    """Awkward inputs: broadcast with :func:`awkward.transform` and run the kernel on the leaves."""
    positions = []
    arrays = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) or _is_cupy(a):
            a = ak.Array(a)
        if isinstance(a, ak.Array):
            positions.append(i)
            arrays.append(a)

    def transformation(layout: Any, backend: Any, **_: Any) -> Any:
        layouts = layout if isinstance(layout, tuple) else (layout,)
        if not all(isinstance(lay, ak.contents.NumpyArray) for lay in layouts):
            return None
        if backend.name == "typetracer":
            for lay in layouts:
                lay.data.touch_data()
            return ak.contents.NumpyArray(backend.nplike.empty(layouts[0].data.shape, dtype=dtype))
        xp = array_module(backend.name)
        flat = list(args)
        for i, lay in zip(positions, layouts, strict=True):
            flat[i] = materialized(lay.data, xp)
        out = xp.asarray(kernel(xp, *flat), dtype=dtype)
        return ak.contents.NumpyArray(out)

    return ak.transform(transformation, *arrays, numpy_to_regular=True)
