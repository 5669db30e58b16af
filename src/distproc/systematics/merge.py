"""Run a selection-and-fill function once per shape variation and merge the outputs into one."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import boost_histogram as bh
import hist
import numpy as np

from distproc.exceptions import SystematicsError
from distproc.io import is_category
from distproc.systematics.shape import ShapeVariation, ShapeVariations

__all__ = ("VARIATION_AXIS", "merge_variation_outputs", "run_variations")

#: Name of the categorical axis that holds the variation names.
VARIATION_AXIS = "variation"

_MISSING = object()


def run_variations(
    events: Any,
    variations: ShapeVariations | Iterable[ShapeVariation],
    fn: Callable[[Any, str], Any],
) -> Any:
    """Call ``fn(varied_events, name)`` for the nominal and every shape variation; merge the outputs.

    This is what a processor with ``shape_variations`` runs for each chunk:
    ``run_variations(events, self.shape_variations, self.process_variation)``. Everything happens in
    the calling task, so K variations cost K extra passes over the chunk and add nothing to a Dask
    graph. Pass concrete (eager or virtual NanoEvents) events; dask-mode histograms cannot be merged.

    Merging (see :func:`merge_variation_outputs`): every ``hist.Hist`` in the (nested dict) output gets
    the variation names on a ``StrCategory`` axis named ``"variation"``; numbers and other
    accumulators come from the nominal pass only.

    Parameters
    ----------
    events
        One chunk of events (coffea NanoEvents in eager or virtual mode, or any awkward record array).
    variations
        A :class:`~distproc.systematics.ShapeVariations` (or an iterable of variations).
    fn
        ``fn(events, variation_name) -> output``; must return the same structure for every variation.

    Returns
    -------
    The nominal output with every histogram replaced by its merged version.

    Examples
    --------
    >>> import awkward as ak
    >>> import hist
    >>> from distproc.systematics import Scale, ShapeVariations
    >>> events = ak.Array({"Jet": [[{"pt": 40.0}, {"pt": 25.0}], [{"pt": 29.5}]]})
    >>> def fill(events, variation):
    ...     jets = events.Jet[events.Jet.pt > 30.0]
    ...     h = hist.Hist.new.Reg(4, 0.0, 80.0, name="pt").Double()
    ...     h.fill(pt=ak.flatten(jets.pt))
    ...     return {"pt": h, "n_events": len(events)}
    >>> out = run_variations(events, ShapeVariations(Scale("jes", 0.05)), fill)
    >>> list(out["pt"].axes["variation"])
    ['nominal', 'jes_up', 'jes_down']
    >>> out["pt"][{"variation": "jes_up"}].sum(), out["pt"][{"variation": "jes_down"}].sum()
    (2.0, 1.0)
    >>> out["n_events"]
    2
    """
    if not isinstance(variations, ShapeVariations):
        if isinstance(variations, ShapeVariation):
            variations = ShapeVariations(variations)
        elif isinstance(variations, Iterable):
            variations = ShapeVariations(*variations)
        else:
            msg = f"run_variations needs a ShapeVariations, got {type(variations).__name__}: {variations!r}"
            raise SystematicsError(msg)
    outputs = {name: fn(varied, name) for name, varied in variations.apply(events)}
    return merge_variation_outputs(outputs)


def merge_variation_outputs(outputs: Mapping[str, Any]) -> Any:
    """Merge per-variation outputs ``{"nominal": out, "jes_up": out, ...}`` into one output.

    For every histogram (``hist.Hist`` or ``boost_histogram.Histogram``) in the nested dicts, lists or
    tuples of the nominal output:

    * if it has a ``StrCategory`` axis named ``"variation"`` (filled with ``"nominal"`` and weight
      variations), the result has ``"nominal"`` first, then the other categories of the nominal pass
      (holding its bins) and of the shape passes (so a pass that filled nothing does not lose them),
      then one category per shape variation holding that pass's ``"nominal"`` bin (its
      weight-variation bins are dropped);
    * otherwise a leading ``StrCategory(name="variation", growth=True)`` axis is added with one category
      per output, in order.

    Growing category axes (e.g. a region axis) may hold different categories in different passes; they
    are merged by category. Everything else that is not a histogram comes from the nominal output.

    Parameters
    ----------
    outputs
        Outputs by variation name; must contain ``"nominal"``.

    Returns
    -------
    The merged output.

    Raises
    ------
    SystematicsError
        A histogram is missing or differently shaped in some pass, a shape variation name is already a
        category of the histogram's variation axis, or the histograms are dask (lazy) histograms.

    Examples
    --------
    >>> import hist
    >>> def h(value):
    ...     out = hist.Hist.new.StrCat([], name="variation", growth=True).Reg(2, 0, 2, name="x").Double()
    ...     out.fill(variation="nominal", x=value)
    ...     out.fill(variation="btagUp", x=value, weight=2.0)
    ...     return out
    >>> merged = merge_variation_outputs({"nominal": {"x": h(0.5)}, "jes_up": {"x": h(1.5)}})
    >>> list(merged["x"].axes["variation"])
    ['nominal', 'btagUp', 'jes_up']
    >>> merged["x"].values().tolist()
    [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]
    """
    if "nominal" not in outputs:
        msg = f"merge_variation_outputs needs a 'nominal' output, got {list(outputs)}"
        raise SystematicsError(msg)
    ordered = {"nominal": outputs["nominal"], **{k: v for k, v in outputs.items() if k != "nominal"}}
    return _merge((), ordered)


def _where(path: tuple[Any, ...]) -> str:
    return "output" + "".join(f"[{p!r}]" for p in path)


def _is_dask_hist(x: Any) -> bool:
    module = type(x).__module__
    return module.startswith(("hist.dask", "dask_histogram"))


def _merge(path: tuple[Any, ...], by_name: dict[str, Any]) -> Any:
    nominal = by_name["nominal"]
    if _is_dask_hist(nominal):
        msg = (
            f"{_where(path)} is a dask (lazy) histogram; run_variations merges concrete histograms. "
            "Process each chunk with eager or virtual NanoEvents inside one task (the distproc engine does)"
        )
        raise SystematicsError(msg)
    if isinstance(nominal, bh.Histogram):
        return _merge_hists(path, by_name)
    if isinstance(nominal, MutableMapping):
        out = copy.copy(nominal)
        for key in nominal:
            sub = {
                n: o.get(key, _MISSING) if isinstance(o, Mapping) else _MISSING for n, o in by_name.items()
            }
            out[key] = _merge((*path, key), sub)
        return out
    if type(nominal) in (list, tuple):
        items = []
        for i in range(len(nominal)):
            sub = {
                n: o[i] if type(o) is type(nominal) and len(o) == len(nominal) else _MISSING
                for n, o in by_name.items()
            }
            items.append(_merge((*path, i), sub))
        return type(nominal)(items)
    return nominal


def _axis_name(axis: Any) -> str | None:
    return getattr(axis, "name", None) or axis.__dict__.get("name")


def _with_categories(axis: Any, categories: list[Any]) -> Any:
    new = type(axis)(categories, growth=axis.traits.growth, overflow=axis.traits.overflow)
    new.__dict__.update(copy.deepcopy(axis.__dict__))
    return new


def _new_hist(like: bh.Histogram, axes: list[Any]) -> bh.Histogram:
    new = type(like)(*axes, storage=like.storage_type())
    new.__dict__.update(copy.deepcopy(like.__dict__))
    return new


def _check_pass(where: str, name: str, h: Any, nominal: bh.Histogram) -> None:
    if h is _MISSING or not isinstance(h, bh.Histogram):
        got = "nothing" if h is _MISSING else type(h).__name__
        msg = (
            f"{where}: the 'nominal' pass returned a histogram but the {name!r} pass returned {got}; "
            "process_variation must return the same structure for every variation"
        )
        raise SystematicsError(msg)
    names = [_axis_name(a) for a in h.axes]
    want = [_axis_name(a) for a in nominal.axes]
    if names != want or h.storage_type is not nominal.storage_type:
        msg = (
            f"{where}: the {name!r} pass returned a histogram with axes {names} and storage "
            f"{h.storage_type.__name__}, the 'nominal' pass axes {want} and storage "
            f"{nominal.storage_type.__name__}; process_variation must build the same histogram every time"
        )
        raise SystematicsError(msg)


def _merged_axis(where: str, position: int, by_name: dict[str, bh.Histogram]) -> Any:
    """The target axis at *position*: shared, or the union of growing category axes."""
    nominal_axis = by_name["nominal"].axes[position]
    axes = {n: h.axes[position] for n, h in by_name.items()}
    if all(a == nominal_axis for a in axes.values()):
        return nominal_axis
    if is_category(nominal_axis) and all(
        type(a) is type(nominal_axis) and a.traits.growth and a.traits == nominal_axis.traits
        for a in axes.values()
    ):
        union: dict[Any, None] = {}
        for a in axes.values():
            union.update(dict.fromkeys(a))
        return _with_categories(nominal_axis, list(union))
    other = next(n for n, a in axes.items() if a != nominal_axis)
    msg = (
        f"{where}: axis {_axis_name(nominal_axis)!r} differs between the 'nominal' and {other!r} passes "
        f"({nominal_axis!r} vs {axes[other]!r}); only growing category axes may differ between variations"
    )
    raise SystematicsError(msg)


def _indices(source: Any, target: Any) -> list[int]:
    """Flow-view index in *target* of every flow-view bin of *source* (same axis or category subset)."""
    if source is target or not is_category(target):
        return list(range(target.extent))
    out = [target.index(c) for c in source]
    if source.traits.overflow:
        out.append(target.extent - 1)
    return out


def _merge_hists(path: tuple[Any, ...], by_name: dict[str, Any]) -> bh.Histogram:
    where = _where(path)
    nominal = by_name["nominal"]
    for name, h in by_name.items():
        _check_pass(where, name, h, nominal)
    names = [_axis_name(a) for a in nominal.axes]
    shape_names = [n for n in by_name if n != "nominal"]
    if VARIATION_AXIS in names:
        var_pos = names.index(VARIATION_AXIS)
        var_axis = nominal.axes[var_pos]
        if not isinstance(var_axis, bh.axis.StrCategory):
            msg = f"{where}: axis 'variation' must be a StrCategory of variation names, got {var_axis!r}"
            raise SystematicsError(msg)
        # "nominal" first, then the weight variations of every pass: a pass (a chunk) that filled nothing
        # still gets the same categories in the same order, so chunk outputs add up to an axis whose
        # order does not depend on how the events were split into chunks.
        categories = dict.fromkeys(["nominal", *var_axis])
        for h in by_name.values():
            if isinstance(h.axes[var_pos], bh.axis.StrCategory):
                categories.update(dict.fromkeys(h.axes[var_pos]))
        existing = list(categories)
        clash = [n for n in shape_names if n in existing]
        if clash:
            msg = (
                f"{where}: the histogram's 'variation' axis already has categories {clash}, which are also "
                "shape variation names; rename the weight variation or the shape variation"
            )
            raise SystematicsError(msg)
        target_var = _with_categories(var_axis, existing + shape_names)
        other_positions = [i for i in range(nominal.ndim) if i != var_pos]
    else:
        var_pos = 0
        target_var = hist.axis.StrCategory(list(by_name), name=VARIATION_AXIS, growth=True)
        other_positions = list(range(nominal.ndim))
    others = [_merged_axis(where, i, by_name) for i in other_positions]
    target_axes = list(others)
    target_axes.insert(var_pos, target_var)
    target = _new_hist(nominal, target_axes)
    view = np.asarray(target.view(flow=True))
    for name, h in by_name.items():
        src = np.asarray(h.view(flow=True))
        if VARIATION_AXIS not in names:
            src = np.expand_dims(src, 0)
            var_index = [target_var.index(name)]
        elif name == "nominal":
            var_index = _indices(h.axes[var_pos], target_var)
        else:
            categories = list(h.axes[var_pos])
            if "nominal" not in categories:
                continue  # nothing was filled in this pass: its bins stay empty
            src = np.take(src, [categories.index("nominal")], axis=var_pos)
            var_index = [target_var.index(name)]
        index = [_indices(h.axes[i], axis) for i, axis in zip(other_positions, others, strict=True)]
        index.insert(var_pos, var_index)
        view[np.ix_(*index)] = src
    return target
