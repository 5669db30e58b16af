"""``ak.where`` on flat buffers, for dask mode's evaluation of a traced graph.

awkward evaluates ``ak.where(condition, x, y)`` by building a union of *x* and *y* and simplifying it
(concatenating the two and gathering the result back from the concatenation): on one 100 000-event
partition's jet pT that is 15 ms where ``numpy.where`` over the same values takes 1.7 ms. When the
condition and every array operand are lists of one structure (equal offsets at every depth) around plain
numbers (or booleans), the result is ``numpy.where`` over the leaf buffers with that structure around it,
value for value what awkward computes; an operand with fewer list depths (a per-event weight beside the
jets) is first repeated into the deeper lists, as awkward broadcasts it. :class:`FlatWhere` evaluates such
a call that way and any other call with ``ak.where`` itself; its result's type (form, parameters, behavior
and attributes) is the one awkward gives for the same operands, computed on empty slices of them, or it is
not used.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

__all__ = ("FlatWhere",)

_NUMBER_KINDS = frozenset("iuf")
#: The layouts :func:`_lists` looks through to the numbers: variable-length lists and indexed values.
_THROUGH = (ak.forms.ListOffsetForm, ak.forms.ListForm, ak.forms.IndexedForm)


def _lists(array: ak.Array) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The offsets of every list depth of *array* (each starting at zero) and its leaf values, when it is
    only variable-length lists (and indexed, not optional, values) around one-dimensional numbers; else None.
    Its form is looked at first: nothing else (a record's other fields) is read."""
    if array.layout.backend.name != "cpu":
        return None
    form = array.layout.form
    while isinstance(form, _THROUGH) and form.parameter("__array__") is None:
        form = form.content
    if not isinstance(form, ak.forms.NumpyForm) or form.inner_shape or form.parameter("__array__"):
        return None
    layout = ak.materialize(array, highlevel=False)
    offsets: list[np.ndarray] = []
    while not isinstance(layout, ak.contents.NumpyArray):
        if isinstance(layout, ak.contents.IndexedArray):
            layout = layout.project()
            continue
        layout = layout.to_ListOffsetArray64(start_at_zero=True)
        offsets.append(np.asarray(layout.offsets.data))
        layout = layout.content[: int(offsets[-1][-1])]
    return offsets, np.asarray(layout.data)


def _operand(value: Any) -> tuple[list[np.ndarray], np.ndarray] | None:
    """:func:`_lists` of an array operand; a plain number or boolean (what ``ak.where`` repeats) as no lists
    around a 0-d array; None for anything else."""
    if isinstance(value, ak.Array):
        return _lists(value)
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        return [], np.asarray(value)
    return None


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x is y or np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _broadcast(
    offsets: list[np.ndarray], leaf: np.ndarray, structure: list[np.ndarray], length: int
) -> np.ndarray | None:
    """*leaf*, the values of an operand with lists *offsets*, repeated into the deeper lists of *structure*
    as awkward broadcasts it (each value into every element of its list: a per-event weight into the
    event's jets); None when *offsets* are not the outer lists of *structure* or the operand does not have
    the *length* (outer elements) of the others."""
    depth = len(offsets)
    if len(leaf) != (int(offsets[-1][-1]) if depth else length) or not _same(offsets, structure[:depth]):
        return None
    for level in structure[depth:]:
        leaf = np.repeat(leaf, np.diff(level))
    return leaf


def _forms(form: ak.forms.Form, depth: int) -> list[ak.forms.Form] | None:
    """The *depth* list forms of *form* and its leaf form, outermost first, when it is *depth*
    ``ListOffsetForm`` around a ``NumpyForm`` (the layout a flat result is rebuilt as); else None."""
    forms = []
    for _ in range(depth):
        if not isinstance(form, ak.forms.ListOffsetForm):
            return None
        forms.append(form)
        form = form.content
    return [*forms, form] if isinstance(form, ak.forms.NumpyForm) else None


def _rebuild(
    offsets: list[np.ndarray], values: np.ndarray, forms: list[ak.forms.Form]
) -> ak.contents.Content:
    """*values* inside the lists of *offsets*, with the parameters of *forms* (:func:`_forms`)."""
    layout: ak.contents.Content = ak.contents.NumpyArray(values, parameters=forms[-1].parameters)
    for offs, list_form in zip(reversed(offsets), reversed(forms[:-1]), strict=True):
        layout = ak.contents.ListOffsetArray(ak.index.Index64(offs), layout, parameters=list_form.parameters)
    return layout


class FlatWhere:
    """Evaluates a dask-awkward ``ak.where`` graph node (*where*, dask-awkward's callable with the call's
    ``mergebool``, ``behavior`` and ``attrs``) with ``numpy.where`` where the operands allow it.

    >>> import awkward as ak
    >>> from dask_awkward.lib.structure import _WhereFn
    >>> pt = ak.Array([[20.0, 60.0], [], [80.0]])
    >>> FlatWhere(_WhereFn())(pt > 50, 0.9, pt * 0 + 1).tolist()
    [[1.0, 0.9], [], [0.9]]
    """

    def __init__(self, where: Any) -> None:
        self.where = where

    def __call__(self, condition: Any, x: Any, y: Any) -> Any:
        out = self._flat(condition, x, y) if self.where.highlevel else None
        return self.where(condition, x, y) if out is None else out

    def _flat(self, condition: Any, x: Any, y: Any) -> ak.Array | None:
        operands = (condition, x, y)
        if not isinstance(condition, ak.Array):
            return None
        parsed = [_operand(operand) for operand in operands]
        if any(found is None for found in parsed):
            return None
        (_, mask), *values = parsed
        kinds = {leaf.dtype.kind for _, leaf in values}
        if mask.dtype != np.bool_ or not (kinds <= _NUMBER_KINDS or kinds == {"b"}):
            return None
        structure = max((offsets for offsets, _ in parsed), key=len)
        try:
            empty = self.where(*(op[:0] if isinstance(op, ak.Array) else op for op in operands))
        except Exception:  # noqa: BLE001 - ak.where on the operands themselves raises it, about them
            return None
        forms = _forms(empty.layout.form, len(structure))
        if forms is None:  # awkward's result is another layout (whole lists chosen: a ListArray)
            return None
        length = len(structure[0]) - 1 if structure else len(mask)
        leaves = [
            leaf if leaf.ndim == 0 else _broadcast(offsets, leaf, structure, length)
            for offsets, leaf in parsed
        ]
        if any(leaf is None for leaf in leaves):
            return None
        dtype = np.result_type(*(leaf.dtype for leaf in leaves[1:]))
        flat = np.where(leaves[0], *(leaf.astype(dtype, copy=False) for leaf in leaves[1:]))
        layout = _rebuild(structure, flat, forms)
        if not layout.form.is_equal_to(empty.layout.form, all_parameters=True):
            return None
        return ak.Array(layout, behavior=empty.behavior, attrs=empty.attrs)
