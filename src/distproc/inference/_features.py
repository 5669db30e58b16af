"""From awkward (or NumPy/CuPy) features to the row-major tensors an ONNX input takes.

Layouts, per model input:

``events``
    one row per event from event-level (1-D) features: shape ``(n_events, n_features)``.
``objects``
    one row per object of a jagged collection (e.g. per jet): shape ``(n_objects, n_features)``; outputs
    are unflattened back to the per-event counts. Event-level features given next to jagged ones are
    broadcast to every object of their event.
``padded``
    the first ``max_objects`` objects of each event, missing ones set to ``fill_value``: shape
    ``(n_events, max_objects, n_features)``, or ``(n_events, max_objects * n_features)`` (object-major:
    object 0's features, then object 1's, ...) when the model input has rank 2.
``matrix``
    one array that already is a regular ``(n_rows, ...)`` tensor, fed as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from distproc._compat import awkward_error_context
from distproc.exceptions import InferenceInputError, format_options
from distproc.inference._spec import TensorSpec, check_dtype, check_shape
from distproc.inference.backends import import_cupy, is_cupy

LAYOUTS = ("auto", "events", "objects", "padded")


def backend_of(array: Any) -> str:
    """``"cpu"``, ``"cuda"`` or ``"typetracer"`` for an awkward, NumPy or CuPy array."""
    if isinstance(array, ak.Array):
        return array.layout.backend.name  # what ak.backend returns, without its dispatch
    return "cuda" if is_cupy(array) else "cpu"


@contextmanager
def lazy_awkward_errors(values: Iterable[Any]) -> Iterator[None]:
    """Keep awkward from formatting its error messages ahead of time for arrays on the GPU.

    For arrays on a backend whose errors are reported late (CUDA), awkward renders every argument of
    every operation when the operation starts, in case it fails later: a device-to-host copy and a
    pretty-print per call, which took 85 % of distproc's own time per GPU chunk (benchmarks/README.md).
    Inside an outer error context, the inner ones format only when an error happens.
    """
    if not any(backend_of(v) == "cuda" for v in values):
        yield
        return
    with awkward_error_context("distproc.inference.OnnxModel"):
        yield


@dataclass
class Column:
    """One feature: its array and what its type says (variable axes, regular axes, dtype, options)."""

    name: str
    array: Any
    var_depth: int
    regular: tuple[int, ...]
    dtype: np.dtype
    optional: bool


def _describe(name: str, array: Any, spec: TensorSpec) -> Column:
    if not isinstance(array, ak.Array):
        array = array if hasattr(array, "dtype") and hasattr(array, "shape") else np.asarray(array)
        if array.ndim == 0:
            msg = f"input {spec.describe()}: feature {name!r} is a scalar; give one value per event or object"
            raise InferenceInputError(msg, input_name=spec.name)
        return Column(name, array, 0, tuple(array.shape[1:]), np.dtype(array.dtype), False)
    layout = array.layout
    var_depth, regular, optional = 0, [], False
    kind = None
    while kind is None:
        if layout.parameter("__array__") in ("string", "bytestring", "char", "byte"):
            kind = "strings"
        elif layout.is_option or layout.is_indexed:
            optional = optional or layout.is_option
            layout = layout.content
        elif layout.is_list and layout.is_regular:
            regular.append(layout.size)
            layout = layout.content
        elif layout.is_list:
            if regular:
                kind = "a variable-length axis inside a regular one"
            else:
                var_depth += 1
                layout = layout.content
        elif layout.is_numpy:
            regular.extend(layout.inner_shape)
            return Column(name, array, var_depth, tuple(regular), np.dtype(layout.dtype), optional)
        elif layout.is_unknown:  # e.g. every list empty: treated as float64
            return Column(name, array, var_depth, tuple(regular), np.dtype(np.float64), optional)
        elif layout.is_record:
            kind = f"records with fields {ak.fields(array)!r}"
        else:
            kind = type(layout).__name__
    msg = (
        f"input {spec.describe()}: feature {name!r} holds {kind} (type {array.type}); "
        "each feature must be numbers, one per event or one per object."
    )
    raise InferenceInputError(msg, input_name=spec.name)


def columns_of(data: Any, features: Sequence[str] | None, spec: TensorSpec) -> list[Column]:
    """Split *data* (mapping, record array or plain array) into named feature columns."""
    if isinstance(data, Mapping):
        available = list(data)
    elif isinstance(data, ak.Array) and ak.fields(data):
        available = ak.fields(data)
    else:
        names = list(features) if features else ["[all]"]
        return [_describe(names[0] if len(names) == 1 else "[all]", data, spec)]
    if features is None:
        names = available
    else:
        names = list(features)
        missing = [n for n in names if n not in available]
        if missing:
            shown = format_options(missing[0], available, "fields")
            msg = f"input {spec.describe()}: feature(s) {', '.join(map(repr, missing))} not given. {shown}"
            raise InferenceInputError(msg, input_name=spec.name)
    if not names:
        msg = f"input {spec.describe()}: no features given (an empty mapping or record)"
        raise InferenceInputError(msg, input_name=spec.name)
    return [_describe(n, data[n], spec) for n in names]


def _resolve_layout(
    spec: TensorSpec, cols: list[Column], layout: str, max_objects: int | None
) -> tuple[str, int]:
    """The layout to use and, for ``padded``, the number of objects per event."""
    n_feat = len(cols)
    deep = [c.name for c in cols if c.var_depth > 1]
    if deep:
        msg = (
            f"input {spec.describe()}: feature(s) {', '.join(map(repr, deep))} have more than one "
            "variable-length axis; give one value per event or per object (e.g. ak.flatten(x, axis=2))."
        )
        raise InferenceInputError(msg, input_name=spec.name)
    if not any(c.var_depth for c in cols):
        if layout == "padded":
            msg = f"input {spec.describe()}: layout 'padded' needs jagged per-object features."
            raise InferenceInputError(msg, input_name=spec.name)
        if any(c.regular for c in cols):
            if len(cols) > 1:
                msg = f"input {spec.describe()}: a multi-dimensional feature must be the only one given."
                raise InferenceInputError(msg, input_name=spec.name)
            return "matrix", 0
        return "events", 0
    if any(c.regular for c in cols):
        bad = next(c.name for c in cols if c.regular)
        msg = f"input {spec.describe()}: jagged feature {bad!r} has extra regular axes {cols[0].regular}."
        raise InferenceInputError(msg, input_name=spec.name)
    if layout == "events":
        msg = (
            f"input {spec.describe()}: layout 'events' but features are jagged (per object); use "
            "layout='objects' (one row per object) or layout='padded' with max_objects=N."
        )
        raise InferenceInputError(msg, input_name=spec.name)
    last = spec.shape[-1] if spec.shape else None
    if layout == "auto":
        flat_padded = spec.rank == 2 and last is not None and last != n_feat and last % n_feat == 0
        layout = "padded" if max_objects is not None or spec.rank == 3 or flat_padded else "objects"
    if layout == "objects":
        return "objects", 0
    if max_objects is None:
        if spec.rank == 3 and spec.shape[1] is not None:
            max_objects = spec.shape[1]
        elif spec.rank == 2 and last is not None and last % n_feat == 0:
            max_objects = last // n_feat
        else:
            msg = f"input {spec.describe()}: layout 'padded' needs max_objects=N (the model does not fix it)."
            raise InferenceInputError(msg, input_name=spec.name)
    return "padded", int(max_objects)


@dataclass
class Prepared:
    """One model input, checked, with its per-row arrays ready for batching.

    A ``(rows, n_features)`` float input of several 1-D NumPy feature columns is *columnar*: on a backend
    that allows it, its batches are fed feature-major, ``(n_features, rows)``, to a session whose graph
    transposes them back
    (:func:`distproc.inference._cache.columnar_model`). Filling a feature-major batch is one contiguous
    copy per feature; filling a row-major one writes every value with a stride of ``n_features``, about
    three times the cost, which was most of distproc's own time per chunk (benchmarks/README.md).
    """

    spec: TensorSpec
    layout: str
    names: list[str]
    fed_shape: tuple[int | None, ...]
    dtype: np.dtype
    columns: list[Any]  # typetracer ak.Arrays, or xp arrays of shape (rows, *middle)
    counts: Any = None  # objects per event (objects layout, typetracer)
    offsets: Any = None  # object offsets per event, from 0 (objects layout, NumPy or CuPy)
    feed_columns: bool = False  # set when the session takes this input feature-major
    _buffers: list[Any] = field(default_factory=lambda: [None, None], repr=False)

    @property
    def rows(self) -> int:
        return len(self.columns[0])

    @property
    def columnar(self) -> bool:
        """Whether batches can be fed feature-major (see the class docstring)."""
        return (
            self.layout in ("events", "objects")
            and len(self.fed_shape) == 2
            and len(self.columns) > 1
            and self.dtype.kind == "f"
            and not is_cupy(self.columns[0])  # on the GPU the row-major copy is not the cost
        )

    def as_rows(self, batch: Any) -> Any:
        """A batch as ``(rows, ...)``, whichever way it is fed."""
        return batch.T if self.feed_columns else batch

    def batch(self, start: int, stop: int, batch_size: int, xp: Any, slot: int = 0) -> Any:
        """Rows ``start:stop`` as one contiguous array of the model's dtype and shape.

        The array is a view of buffer *slot* (0 or 1), reused by the batch after next.
        """
        n = stop - start
        if self.layout == "matrix":
            part = self.columns[0][start:stop]
            return xp.ascontiguousarray(part.astype(self.dtype, copy=False)).reshape((n, *self.fed_shape[1:]))
        first = self.columns[0]
        if len(self.columns) == 1 and first.dtype == self.dtype and first.ndim == 1:
            return xp.ascontiguousarray(first[start:stop]).reshape((n, *self.fed_shape[1:]))  # no copy
        middle = first.shape[1:]
        width = len(self.columns) * int(np.prod(middle, dtype=np.int64))
        if self._buffers[slot] is None or len(self._buffers[slot]) < n * width:
            self._buffers[slot] = xp.empty(min(batch_size, self.rows) * width, dtype=self.dtype)
        flat = self._buffers[slot][: n * width]  # the first n rows' worth, contiguous whatever n is
        if self.feed_columns:
            buf = flat.reshape((len(self.columns), n))
            for i, col in enumerate(self.columns):
                buf[i] = col[start:stop]
            return buf
        buf = flat.reshape((n, *middle, len(self.columns)))
        for i, col in enumerate(self.columns):
            buf[..., i] = col[start:stop]
        return buf.reshape((n, *self.fed_shape[1:]))


def _to_xp(array: Any) -> Any:
    if not isinstance(array, ak.Array):
        return array
    return ak.to_cupy(array) if ak.backend(array) == "cuda" else ak.to_numpy(array, allow_missing=False)


def prepare(
    spec: TensorSpec,
    data: Any,
    *,
    features: Sequence[str] | None,
    layout: str,
    max_objects: int | None,
    fill_value: float,
) -> Prepared:
    """Check *data* against *spec* and lay it out as rows (typetracers are checked, not materialized)."""
    cols = columns_of(data, features, spec)
    chosen, n_obj = _resolve_layout(spec, cols, layout, max_objects)
    for c in cols:
        check_dtype(spec, c.name, c.dtype)
    names = [c.name for c in cols]
    if chosen == "matrix":
        given: tuple[int | None, ...] = (None, *cols[0].regular)
        width = cols[0].regular[-1]
        names = list(features) if features else [f"[{i}]" for i in range(width)]
        if len(names) != width:
            msg = f"input {spec.describe()}: {len(names)} feature names for an array of width {width}"
            raise InferenceInputError(msg, input_name=spec.name)
    else:
        given = (None, n_obj, len(cols)) if chosen == "padded" else (None, len(cols))
    fed = check_shape(spec, given, names, chosen, declared=features is not None)
    dtype = spec.dtype if spec.dtype is not None else cols[0].dtype
    typetracer = any(backend_of(c.array) == "typetracer" for c in cols)
    jagged = [c for c in cols if c.var_depth]
    if typetracer:
        for c in cols:
            if isinstance(c.array, ak.Array):
                ak.typetracer.touch_data(c.array)
        counts = ak.num(jagged[0].array, axis=1) if chosen == "objects" else None
        return Prepared(spec, chosen, names, fed, dtype, [c.array for c in cols], counts)

    offsets = None
    if chosen == "objects":
        offsets = _offsets(jagged[0].array)
        for c in jagged[1:]:
            other = _offsets(c.array)
            if other is not offsets and (len(other) != len(offsets) or not bool((other == offsets).all())):
                msg = (
                    f"input {spec.describe()}: features {jagged[0].name!r} and {c.name!r} have different "
                    "numbers of objects per event; per-object features must come from the same collection."
                )
                raise InferenceInputError(msg, input_name=spec.name)
    arrays = [_materialize(c, chosen, n_obj, fill_value, offsets) for c in cols]
    return Prepared(spec, chosen, names, fed, dtype, arrays, offsets=offsets)


def _offsets(array: ak.Array) -> Any:
    """Offsets (starting at 0) of the objects of each event, as a NumPy or CuPy array."""
    layout = array.layout
    if isinstance(layout, ak.contents.ListOffsetArray):
        offsets = layout.offsets.data
        return offsets if int(offsets[0]) == 0 else offsets - offsets[0]
    num = ak.num(array, axis=1)
    if num.layout.is_option:  # events that are None have no objects
        num = ak.fill_none(num, 0)
    counts = _to_xp(num)
    xp = import_cupy() if is_cupy(counts) else np
    offsets = xp.zeros(len(counts) + 1, dtype=np.int64)
    xp.cumsum(counts, out=offsets[1:])
    return offsets


def _materialize(c: Column, layout: str, n_obj: int, fill_value: float, offsets: Any) -> Any:
    array = c.array
    if c.var_depth == 0:
        if isinstance(array, ak.Array):
            array = _to_xp(ak.fill_none(array, fill_value) if c.optional else array)
        if layout == "objects":
            return _repeat(array, offsets)
        if layout == "padded":
            return array[:, None].repeat(n_obj, axis=1)
        return array
    if layout == "objects":
        lists = array.layout
        if isinstance(lists, ak.contents.ListOffsetArray) and isinstance(
            lists.content, ak.contents.NumpyArray
        ):
            bounds = lists.offsets.data
            return lists.content.data[int(bounds[0]) : int(bounds[-1])]  # no copy
        if c.optional:
            array = ak.fill_none(array, fill_value, axis=-1)
        flat = ak.flatten(array, axis=1)
        if flat.layout.is_option:  # events that are None contribute no objects
            flat = ak.drop_none(flat)
        return _to_xp(flat)
    padded = ak.fill_none(ak.pad_none(array, n_obj, axis=1, clip=True), fill_value, axis=-1)
    if padded.layout.is_option:
        padded = ak.fill_none(padded, [fill_value] * n_obj, axis=0)
    return _to_xp(padded)


def _repeat(values: Any, offsets: Any) -> Any:
    """Each event's value once per object of the event (NumPy or CuPy)."""
    if not is_cupy(values):
        return np.repeat(values, np.diff(offsets), axis=0)
    cupy = import_cupy()
    index = cupy.searchsorted(cupy.asarray(offsets)[1:], cupy.arange(int(offsets[-1])), side="right")
    return values[index]
