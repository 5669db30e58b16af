"""Binned lookups (scale factors, uncertainties) evaluated on jagged arrays without Python loops."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Literal, NamedTuple

import numpy as np

from distproc.exceptions import BinningError, InputsError, format_options
from distproc.systematics._arrays import bind_inputs, check_numeric, map_flat
from distproc.systematics.varied import Varied, _Broadcast

__all__ = ("BinnedLookup",)


def _check_edges(owner: str, axis: int, name: str, edges: Any) -> np.ndarray:
    arr = np.asarray(edges, dtype=np.float64)
    where = f"{owner}: edges of axis {axis} ({name!r})"
    if arr.ndim != 1 or arr.size < 2:
        msg = f"{where} must be a 1-D sequence of at least 2 numbers, got shape {arr.shape}"
        raise BinningError(msg)
    if np.isnan(arr).any():
        msg = f"{where} contain NaN at position {int(np.flatnonzero(np.isnan(arr))[0])}"
        raise BinningError(msg)
    bad = np.flatnonzero(np.diff(arr) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        msg = (
            f"{where} must be strictly increasing, but edges[{i}]={float(arr[i])!r} "
            f"<= edges[{i - 1}]={float(arr[i - 1])!r}\n    edges: {arr.tolist()}"
        )
        raise BinningError(msg)
    return arr


def _check_values(
    owner: str, what: str, values: Any, shape: tuple[int, ...], names: Sequence[str]
) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape == shape:
        return arr
    if arr.ndim != len(shape):
        msg = (
            f"{owner}: {what} have {arr.ndim} dimension(s) (shape {arr.shape}) but there are "
            f"{len(shape)} axes of edges ({', '.join(repr(n) for n in names)}) giving shape {shape}"
        )
        raise BinningError(msg)
    axis = next(i for i, (got, want) in enumerate(zip(arr.shape, shape, strict=True)) if got != want)
    msg = (
        f"{owner}: {what} have shape {arr.shape} but the edges give {shape}: axis {axis} "
        f"({names[axis]!r}) has {shape[axis] + 1} edges, so expected {shape[axis]} bins, "
        f"got {arr.shape[axis]}"
    )
    raise BinningError(msg)


class BinnedLookup:
    """A 1-D or N-D binned table (nominal plus named variations) evaluated on jagged arrays.

    Bins are half-open, ``edges[i] <= x < edges[i + 1]``. Evaluation flattens the (broadcast) inputs,
    finds bins with ``searchsorted`` and rebuilds the jagged structure; no Python loop runs over
    events or objects. It works on eager awkward arrays, CuPy-backed awkward arrays (``cupy`` kernels),
    typetracer arrays (the dask-awkward metadata pass: a correctly typed float64 result, inputs marked
    as needed), :class:`dask_awkward.Array` (mapped over partitions), NumPy/CuPy arrays and scalars.

    Defined behaviour for unusual inputs:

    * **Under/overflow** (``x < edges[0]`` or ``x >= edges[-1]``, including ``-inf``/``+inf``):
      with ``flow="clamp"`` (default) the first/last bin of that axis is used; with ``flow="fill"``
      the result is ``flow_value`` (default ``1.0``).
    * **NaN** in any input: the result is ``nan_value``, default ``nan``, so bad inputs stay visible
      in weights instead of silently becoming a neutral factor; pass ``nan_value=1.0`` to neutralise.
    * **Negative pt** (or any value below the first edge) is ordinary underflow: clamped to the first
      bin, or ``flow_value`` with ``flow="fill"``.
    * Missing values (``None`` in option-type arrays) stay ``None``.

    Parameters
    ----------
    edges
        Bin edges: one strictly increasing sequence (1-D) or a sequence of them (N-D). ``+-inf``
        edges are allowed.
    values
        Nominal values, shape ``(len(edges[0]) - 1, len(edges[1]) - 1, ...)``.
    variations
        Named alternative tables of the same shape, e.g. ``{"up": ..., "down": ...}``.
    inputs
        Names of the inputs, one per axis (used in messages, keyword calls, and by
        :class:`~distproc.systematics.Scale` to find fields). Default ``("x0", "x1", ...)``.
    flow
        ``"clamp"`` or ``"fill"``: what under/overflow returns (see above).
    flow_value
        The result for under/overflow when ``flow="fill"``.
    nan_value
        The result where any input is NaN.
    name
        Used in error messages and dask task names.

    Raises
    ------
    BinningError
        Edges not strictly increasing (the message names the axis and position) or a values/variation
        shape that does not match the edges (names the axis, expected vs given shape).
    SystematicsError
        A bad ``flow``, input names of the wrong number, or a variation called ``"nominal"``.

    Examples
    --------
    >>> import awkward as ak
    >>> sf = BinnedLookup(
    ...     edges=[[20.0, 50.0, 100.0], [0.0, 1.5, 2.5]],
    ...     values=[[0.9, 0.8], [0.95, 0.85]],
    ...     variations={"up": [[1.0, 0.9], [1.05, 0.95]], "down": [[0.8, 0.7], [0.85, 0.75]]},
    ...     inputs=("pt", "abseta"),
    ...     name="muon_sf",
    ... )
    >>> pt = ak.Array([[30.0, 70.0], [], [500.0]])
    >>> abseta = ak.Array([[0.5, 2.0], [], [1.0]])
    >>> sf(pt, abseta).tolist()
    [[0.9, 0.85], [], [0.95]]
    >>> sf(pt, abseta, variation="up").tolist()
    [[1.0, 0.95], [], [1.05]]
    >>> float(sf(pt=10.0, abseta=float("nan")))
    nan
    """

    def __init__(
        self,
        edges: Sequence[Any],
        values: Any,
        variations: Mapping[str, Any] | None = None,
        inputs: Sequence[str] | None = None,
        *,
        flow: Literal["clamp", "fill"] = "clamp",
        flow_value: float = 1.0,
        nan_value: float = math.nan,
        name: str = "lookup",
    ) -> None:
        self.name = str(name)
        owner = f"BinnedLookup {self.name!r}"
        edge_list = list(edges)
        if edge_list and np.ndim(edge_list[0]) == 0:
            edge_list = [edge_list]
        if not edge_list:
            msg = f"{owner}: edges is empty; give one sequence of bin edges per axis"
            raise BinningError(msg)
        if inputs is None:
            inputs = tuple(f"x{i}" for i in range(len(edge_list)))
        inputs = (inputs,) if isinstance(inputs, str) else tuple(str(n) for n in inputs)
        if len(inputs) != len(edge_list):
            msg = (
                f"{owner}: {len(inputs)} input names {inputs} for {len(edge_list)} axes of edges; "
                "give one name per axis"
            )
            raise InputsError(msg)
        if len(set(inputs)) != len(inputs):
            msg = f"{owner}: input names must be unique, got {inputs}"
            raise InputsError(msg)
        if flow not in ("clamp", "fill"):
            msg = f"{owner}: flow must be 'clamp' or 'fill', got {flow!r}"
            raise BinningError(msg)
        self.inputs: tuple[str, ...] = inputs
        self.edges: tuple[np.ndarray, ...] = tuple(
            _check_edges(owner, i, n, e) for i, (n, e) in enumerate(zip(inputs, edge_list, strict=True))
        )
        shape = tuple(len(e) - 1 for e in self.edges)
        self.flow = flow
        self.flow_value = float(flow_value)
        self.nan_value = float(nan_value)
        tables = {"nominal": _check_values(owner, "values", values, shape, inputs)}
        for key, table in (variations or {}).items():
            if key == "nominal":
                msg = f"{owner}: 'nominal' is the values table itself; do not pass it in variations"
                raise BinningError(msg)
            tables[str(key)] = _check_values(owner, f"variation {key!r} values", table, shape, inputs)
        self._tables = tables

    @classmethod
    def from_hist(
        cls,
        histogram: Any,
        *,
        variations: Mapping[str, Any] | None = None,
        errors: str | None = None,
        inputs: Sequence[str] | None = None,
        flow: Literal["clamp", "fill"] = "clamp",
        flow_value: float = 1.0,
        nan_value: float = math.nan,
        name: str | None = None,
    ) -> BinnedLookup:
        """A lookup from a histogram: a :class:`hist.Hist` or a ROOT TH1/TH2/TH3 read by uproot.

        The edges of the histogram's axes and its bin contents become the table, as coffea's
        ``lookup_tools`` extractor reads a ROOT histogram. Only the regular bins are used: the
        histogram's under/overflow bins are ignored, and a value outside the edges takes the first or
        last bin (``flow="clamp"``, default) or ``flow_value`` (``flow="fill"``), as for any lookup.

        Parameters
        ----------
        histogram
            ``hist.Hist`` (any numeric axes, up to 3) or an uproot ``TH1``/``TH2``/``TH3`` (e.g.
            ``uproot.open("sf.root")["muon_sf"]``).
        variations
            Named histograms with the same binning, e.g. ``{"sf_up": h_up, "sf_down": h_down}``.
        errors
            Make ``<errors>_up`` and ``<errors>_down`` from the bin errors: values ± sqrt(variance)
            (a ``Weight`` storage hist, or a ROOT histogram's sumw2). Without variances the error is
            sqrt(value), as ROOT's and hist's Poisson convention.
        inputs
            Input names, one per axis. Default: the axes' names (ROOT: ``xaxis``, ``yaxis``, ``zaxis``).
        flow, flow_value, nan_value
            As for :class:`BinnedLookup`.
        name
            Default: the histogram's name (ROOT) or ``"lookup"``.

        Examples
        --------
        >>> import hist, awkward as ak
        >>> h = hist.Hist.new.Var([20, 50, 100], name="pt").Weight()
        >>> h[...] = [(0.9, 0.01**2), (0.95, 0.02**2)]
        >>> sf = BinnedLookup.from_hist(h, errors="sf", name="muon_sf")
        >>> sf.variations
        ('nominal', 'sf_up', 'sf_down')
        >>> sf(ak.Array([[30.0, 70.0], [500.0]]), variation="sf_up").tolist()
        [[0.91, 0.97], [0.97]]
        """
        h = _as_hist(histogram)
        edges = [np.asarray(axis.edges, dtype=np.float64) for axis in h.axes]
        names = inputs if inputs is not None else [axis.name or f"x{i}" for i, axis in enumerate(h.axes)]
        values = np.asarray(h.values(flow=False), dtype=np.float64)
        tables = {key: _as_hist(other).values(flow=False) for key, other in (variations or {}).items()}
        if errors is not None:
            variances = h.variances(flow=False)
            error = np.sqrt(np.abs(values) if variances is None else np.asarray(variances, dtype=np.float64))
            tables[f"{errors}_up"] = values + error
            tables[f"{errors}_down"] = values - error
        default_name = getattr(histogram, "name", None) or "lookup"
        return cls(
            edges,
            values,
            tables,
            names,
            flow=flow,
            flow_value=flow_value,
            nan_value=nan_value,
            name=name or str(default_name),
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of bins per axis."""
        return tuple(len(e) - 1 for e in self.edges)

    @property
    def variations(self) -> tuple[str, ...]:
        """Names accepted by ``variation=``: ``"nominal"`` then the named variations."""
        return tuple(self._tables)

    def values(self, variation: str = "nominal") -> np.ndarray:
        """The table of one variation (a read-only view)."""
        table = self._table(variation).view()
        table.flags.writeable = False
        return table

    def _table(self, variation: str) -> np.ndarray:
        try:
            return self._tables[variation]
        except KeyError:
            msg = (
                f"BinnedLookup {self.name!r} has no variation {variation!r}. "
                f"{format_options(variation, self._tables, 'variations')}"
            )
            raise InputsError(msg) from None

    def _bind(self, args: tuple, named: dict[str, Any]) -> tuple[str, list[Any]]:
        """The call's inputs in order, each checked to be numeric; and how to name this lookup."""
        owner = f"BinnedLookup {self.name!r}"
        bound = bind_inputs(owner, self.inputs, args, named)
        for n, value in zip(self.inputs, bound, strict=True):
            check_numeric(value, f"{owner} input {n!r}")
        return owner, bound

    def __call__(self, *args: Any, variation: str = "nominal", **named: Any) -> Any:
        """Evaluate at ``args`` (positional, or by input name); same structure as the broadcast inputs."""
        _, bound = self._bind(args, named)
        self._table(variation)
        return map_flat(
            _LookupKernel(self, variation), bound, dtype="float64", label=f"binned-lookup-{self.name}"
        )

    def varied(self, *args: Any, **named: Any) -> Varied:
        """Evaluate every table (nominal and variations) at once: a :class:`~distproc.systematics.Varied`.

        The bins are found once for all tables. The result's variation names are :attr:`variations`;
        a :class:`~distproc.systematics.Varied` input adds its own names (the nominal table is used for
        them, and the input's nominal for this lookup's variations), as RDataFrame's ``Vary`` combines
        variations. Inputs are concrete CPU arrays, as for :class:`~distproc.systematics.Varied`.

        Examples
        --------
        >>> import awkward as ak
        >>> sf = BinnedLookup(edges=[0.0, 50.0, 100.0], values=[0.9, 1.1], variations={"sf_up": [1.0, 1.2]})
        >>> pt = ak.Array([[10.0, 70.0], []])
        >>> corrected = pt * sf.varied(pt)
        >>> corrected.names, corrected.variation("sf_up").tolist()
        (('nominal', 'sf_up'), [[10.0, 84.0], []])
        """
        owner, bound = self._bind(args, named)
        inputs = _Broadcast(bound, f"{owner}.varied")
        located = {}
        for name in inputs.names:
            arrays, keep = inputs.arrays(name)
            where = self._locate(np, *arrays)
            # every table takes from the same bins: one conversion to intp instead of one per take
            located[name] = (where._replace(index=where.index.astype(np.intp, copy=False)), keep)
        values: dict[str, np.ndarray] = {}
        keeps = {}
        for name in dict.fromkeys((*inputs.names, *self._tables)):
            where, keeps[name] = located[name if name in located else "nominal"]
            values[name] = self._take(np, name if name in self._tables else "nominal", where)
        return Varied._make(inputs.target, values, keeps)

    def _evaluate_flat(self, xp: ModuleType, variation: str, *xs: Any) -> Any:
        """The kernel: bin lookup on flat ``xp`` arrays (or scalars)."""
        return self._take(xp, variation, self._locate(xp, *xs))

    def _locate(self, xp: ModuleType, *xs: Any) -> _Located:
        """The bins of flat ``xp`` arrays (or scalars): what every table's lookup shares."""
        arrays = xp.broadcast_arrays(*(_as_float(xp, x) for x in xs))
        flat_index: Any = 0
        outside: Any = False
        is_nan: Any = False
        for x, edges in zip(arrays, self.edges, strict=True):
            nbins = len(edges) - 1
            index = _bin_index(xp, x, edges)
            is_nan = is_nan | xp.isnan(x)
            if self.flow == "fill":
                outside = outside | (x < edges[0]) | (x >= edges[-1])
            # N-D: a row-major index into the flattened table (uint8 per axis would overflow)
            flat_index = flat_index * nbins + index.astype(xp.intp) if len(self.edges) > 1 else index
        return _Located(flat_index, outside, is_nan if bool(xp.any(is_nan)) else None)

    def _take(self, xp: ModuleType, variation: str, where: _Located) -> Any:
        """One table's values at located bins."""
        out = xp.take(xp.asarray(self._tables[variation]).reshape(-1), where.index)
        if self.flow == "fill":
            out = xp.where(where.outside, self.flow_value, out)
        if where.nan is not None:
            out = xp.where(where.nan, self.nan_value, out)
        return out

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (
            type(self).__name__,
            self.name,
            self.inputs,
            self.flow,
            self.flow_value,
            self.nan_value,
            tuple(e.tobytes() for e in self.edges),
            tuple((k, v.tobytes()) for k, v in self._tables.items()),
        )

    def __repr__(self) -> str:
        axes = ", ".join(f"{n}: {len(e) - 1} bins" for n, e in zip(self.inputs, self.edges, strict=True))
        return f"BinnedLookup({self.name!r}, {axes}, variations={list(self._tables)}, flow={self.flow!r})"


def _as_hist(histogram: Any) -> Any:
    """*histogram* as a :class:`hist.Hist`: uproot's TH1/TH2/TH3 convert with ``to_hist()``."""
    if hasattr(histogram, "to_hist") and not hasattr(histogram, "fill"):
        histogram = histogram.to_hist()
    if not (hasattr(histogram, "axes") and hasattr(histogram, "values")):
        msg = (
            "BinnedLookup.from_hist takes a hist.Hist or a ROOT TH1/TH2/TH3 read by uproot, got "
            f"{type(histogram).__name__}"
        )
        raise BinningError(msg)
    kinds = [type(axis).__name__ for axis in histogram.axes]
    if any("Category" in kind for kind in kinds):
        msg = (
            f"BinnedLookup.from_hist needs numeric axes only, got {kinds}; select a category first, "
            "e.g. h[{'dataset': 'ttbar'}]"
        )
        raise BinningError(msg)
    return histogram


class _Located(NamedTuple):
    """Where inputs fall in a lookup's table: flat bin index, under/overflow, NaN (None if none)."""

    index: Any
    outside: Any
    nan: Any


#: Up to this many bins an axis's bin index is a sum of comparisons (one vectorised pass per edge,
#: no float64 copy of float32 input); above it, a binary search.
_COMPARE_MAX_BINS = 16


def _as_float(xp: ModuleType, x: Any) -> Any:
    """*x* as a float array: float32 stays float32 (comparisons are exact, see :func:`_bin_index`)."""
    x = xp.asarray(x)
    return x if x.dtype in (xp.float32, xp.float64) else x.astype(xp.float64)


def _bin_index(xp: ModuleType, x: Any, edges: np.ndarray) -> Any:
    """Bin of each value of *x*, clamped to ``[0, nbins - 1]`` (NaN gives 0; the caller masks it).

    ``searchsorted(edges, x, side="right") - 1`` clamped equals the number of inner edges ``<= x``. For
    few bins that count is summed from one comparison per edge into a ``uint8``: about 8x faster than
    the binary search on a float64 copy (benchmarks/README.md). Float32 input is compared in float32
    only when every edge is exactly a float32 (then ``x >= edge`` is the same in both precisions).
    """
    nbins = len(edges) - 1
    inner = edges[1:-1]
    if x.dtype == xp.float32 and not np.array_equal(inner.astype(np.float32), inner):
        x = x.astype(xp.float64)
    if nbins > _COMPARE_MAX_BINS:
        index = xp.searchsorted(xp.asarray(edges), x, side="right") - 1
        return xp.clip(index, 0, nbins - 1)
    index = xp.zeros(x.shape, dtype=xp.uint8)
    for edge in inner.astype(x.dtype).tolist():
        xp.add(index, x >= edge, out=index)
    return index


class _LookupKernel:
    """Picklable kernel binding a lookup and a variation name."""

    def __init__(self, lookup: BinnedLookup, variation: str) -> None:
        self.lookup = lookup
        self.variation = variation

    def __call__(self, xp: ModuleType, *xs: Any) -> Any:
        return self.lookup._evaluate_flat(xp, self.variation, *xs)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("binned-lookup-kernel", self.lookup.__dask_tokenize__(), self.variation)
