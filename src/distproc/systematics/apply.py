"""What runs once per variation of :class:`~distproc.systematics.Varied` quantities: filling a histogram's
``"variation"`` axis (:func:`fill_varied`) and a function of plain arrays on each variation's selected
objects and events (:func:`apply_varied`, as RDataFrame runs a ``Define`` on varied columns).

Examples
--------
>>> import awkward as ak
>>> import hist
>>> from distproc.systematics import Varied
>>> pt = Varied({"nominal": ak.Array([[40.0, 20.0], [35.0]]), "up": ak.Array([[44.0, 22.0], [38.5]])})
>>> h = hist.Hist.new.StrCat([], name="variation", growth=True).Reg(2, 0.0, 100.0, name="ht").Double()
>>> _ = fill_varied(h, ht=ak.sum(pt[pt > 30.0], axis=1))
>>> h[{"variation": "up"}].values().tolist()
[2.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import numpy as np

from distproc.exceptions import SystematicsError
from distproc.systematics._flat import ALL, Events, Fixed, Keep, Selection, and_masks, combine
from distproc.systematics.merge import VARIATION_AXIS
from distproc.systematics.varied import Varied, _Broadcast, _is_array

__all__ = ("apply_varied", "fill_varied")


def fill_varied(histogram: Any, /, **fields: Any) -> Any:
    """Fill *histogram* once per variation, with the variation's name on its ``"variation"`` axis.

    Every field (``hist`` axis names, ``weight=``, ``sample=``) may be a :class:`Varied`, an unvaried
    array of the same events, a number or a string (a categorical value such as a dataset name). The
    arrays are put on one structure (a per-event weight meets every object of its event when another
    field is per-object), the selections made on the Varied fields apply to all of them, and per-object
    fields are flattened. Variation names come from the Varied fields; a histogram without a
    ``"variation"`` axis can only take a single (nominal) one.

    Returns
    -------
    The histogram (filled in place), so that calls chain.

    Raises
    ------
    SystematicsError
        ``variation=`` given (it is filled automatically), several variations and no ``"variation"``
        axis, or fields that do not line up.

    Examples
    --------
    >>> import awkward as ak
    >>> import hist
    >>> ht = Varied({"nominal": ak.Array([100.0, 250.0]), "jes_up": ak.Array([110.0, 275.0])})
    >>> weight = ak.Array([0.5, 2.0])
    >>> h = hist.Hist.new.StrCat(["nominal", "jes_up"], name="variation").Reg(3, 0, 300, name="ht").Weight()
    >>> _ = fill_varied(h, ht=ht[ht > 120.0], weight=weight)
    >>> h[{"variation": "jes_up"}].values().tolist()
    [0.0, 0.0, 2.0]
    """
    if VARIATION_AXIS in fields:
        msg = f"fill_varied fills the {VARIATION_AXIS!r} axis itself; do not pass {VARIATION_AXIS}="
        raise SystematicsError(msg)
    passed = {k: v for k, v in fields.items() if isinstance(v, str)}
    arrays = {k: v for k, v in fields.items() if k not in passed}
    b = _Broadcast(list(arrays.values()), "fill_varied")
    axes = [axis.name for axis in getattr(histogram, "axes", ())]
    has_axis = VARIATION_AXIS in axes
    if not has_axis and len(b.names) > 1:
        msg = (
            f"fill_varied: the histogram has no {VARIATION_AXIS!r} axis for the variations {list(b.names)}; "
            f"add one, e.g. hist.Hist.new.StrCat([], name={VARIATION_AXIS!r}, growth=True)... "
            f"(its axes: {axes})"
        )
        raise SystematicsError(msg)
    target = b.target
    for name in b.names:
        values, keep = b.arrays(name)
        selected = keep.objects
        if keep.events is not None:
            events = np.repeat(keep.events, target.counts) if target.jagged else keep.events
            selected = and_masks(selected, events)
        if selected is not None:  # take() with the indices: 4x faster than a boolean mask per field
            indices = np.flatnonzero(selected)
            values = [v.take(indices) if isinstance(v, np.ndarray) else v for v in values]
        extra = {VARIATION_AXIS: name} if has_axis else {}
        histogram.fill(**extra, **passed, **dict(zip(arrays, values, strict=True)))
    return histogram


def apply_varied(fn: Callable[..., Any], /, **operands: Any) -> Any:
    """``fn(**arrays)`` once per variation, on the selected objects of the selected events.

    What a :class:`Varied` cannot express elementwise (combinations of objects, the best of them per
    event, a model's score per candidate) is written as a function of plain arrays and run per
    variation, as RDataFrame runs a ``Define`` on varied columns once per variation. Each operand may be
    a :class:`Varied` (its values under the variation, with its selections), an unvaried awkward array
    or 1-D NumPy array of the same events, or anything else (passed as is). Array operands reach *fn*
    as awkward arrays (per-object ones as jagged lists of the objects kept under the variation by every
    Varied operand; per-event ones as NumPy arrays), restricted to the events that every Varied
    operand keeps under that variation.

    Parameters
    ----------
    fn
        ``fn(**arrays) -> array`` of one number per event it was given, or a mapping or tuple of such
        arrays.
    **operands
        The keyword arguments of *fn*.

    Returns
    -------
    Varied, or a dict or tuple of Varied (as *fn* returns)
        Per-event quantities on the events of the operands, with each variation's event selection
        applied.

    Raises
    ------
    SystematicsError
        Operands that do not line up, or an *fn* result that is not one number per given event.

    Examples
    --------
    >>> import awkward as ak
    >>> import numpy as np
    >>> nominal = ak.Array([[50.0, 20.0, 70.0], [10.0]])
    >>> pt = Varied({"nominal": nominal, "up": nominal * 1.1})
    >>> eta = ak.Array([[0.1, 0.2, 0.3], [0.4]])
    >>> good = pt > 15.0
    >>> def leading_eta(pt, eta):
    ...     return ak.to_numpy(ak.firsts(eta[ak.argmax(pt, axis=1, keepdims=True)]))
    >>> lead = apply_varied(leading_eta, pt=pt[good][ak.sum(good, axis=1) > 0], eta=eta)
    >>> lead.variation("up").tolist()
    [0.3]
    >>> lead.names
    ('nominal', 'up')
    """
    names = list(operands)
    b = _Broadcast(list(operands.values()), "apply_varied")
    target = b.target
    results: dict[str, Any] = {}
    keeps: dict[str, Keep] = {}
    for name in b.names:
        raw = [b.raw(op, name) for op in b.operands]
        keep = ALL
        for _, kept in raw:
            keep = combine(keep, kept)
        selection = Selection(target, keep)
        arrays = {}
        for key, op, (values, _) in zip(names, b.operands, raw, strict=True):
            if not _is_array(op):
                arrays[key] = values
            elif (op.events if isinstance(op, Fixed) else op._events).jagged:
                arrays[key] = selection.per_object(values)
            else:
                arrays[key] = selection.per_event(values)
        results[name] = fn(**arrays)
        keeps[name] = Keep(events=keep.events)
    n_kept = {
        name: target.length if k.events is None else int(np.count_nonzero(k.events))
        for name, k in keeps.items()
    }
    first = results["nominal"]
    if isinstance(first, Mapping):
        return {
            key: _per_event(target, {n: r[key] for n, r in results.items()}, keeps, n_kept, key)
            for key in first
        }
    if isinstance(first, tuple):
        return tuple(
            _per_event(target, {n: r[i] for n, r in results.items()}, keeps, n_kept, str(i))
            for i in range(len(first))
        )
    return _per_event(target, results, keeps, n_kept, "")


def _per_event(
    target: Events, results: dict[str, Any], keeps: dict[str, Keep], n_kept: dict[str, int], key: str
) -> Varied:
    """Per-variation results for the kept events, as a Varied over all events (others hold zeros)."""
    events = target.per_event()
    values: dict[str, np.ndarray] = {}
    for name, result in results.items():
        array = ak.to_numpy(result) if isinstance(result, ak.Array) else np.asarray(result)
        if array.ndim != 1 or len(array) != n_kept[name]:
            what = f"result {key!r}" if key else "the result"
            msg = (
                f"apply_varied: {what} under {name!r} has shape {array.shape}; the function must return "
                f"one number per event it is given ({n_kept[name]})"
            )
            raise SystematicsError(msg)
        keep = keeps[name].events
        if keep is None:
            values[name] = array
        else:
            full = np.zeros(target.length, dtype=array.dtype)
            full[keep] = array
            values[name] = full
    return Varied._make(events, values, keeps)
