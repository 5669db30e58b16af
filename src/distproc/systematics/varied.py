"""Quantities under systematic variations, computed for the nominal and every variation in one pass.

A :class:`Varied` holds one per-event or per-object quantity (one jagged level: jets, muons, ...) for the
nominal and each named variation, as flat NumPy arrays on one shared event structure. Arithmetic,
comparisons and NumPy ufuncs apply to every variation; ``x[mask]`` selects objects or events; ``ak.sum``,
``ak.count``, ``ak.count_nonzero``, ``ak.num``, ``ak.any`` and ``ak.all`` with ``axis=1`` reduce the
objects of each event; ``ak.where`` chooses elementwise; :func:`~distproc.systematics.fill_varied` fills a
histogram's ``"variation"`` axis with every variation (:mod:`distproc.systematics.apply`). Variations are
combined as RDataFrame's ``Vary`` combines them: a name means the same variation everywhere (so two
quantities varied under ``"jes_up"`` are varied together), and an operand that does not vary under a
name contributes its nominal.

Why: a selection written with awkward operations runs once per variation, and awkward's jagged
operations (above all the jagged boolean mask ``pt[good]``) cost several times a flat NumPy pass. Here a
selection is a boolean *keep mask* on the shared structure, never a new jagged array, and per-event sums
are ``np.bincount`` over the objects' event numbers: the same numbers as the awkward code (sums are
accumulated in float64, object by object in order) at a fraction of the cost (``benchmarks/README.md``).

Operands line up by event and object as they were before any selection made on a :class:`Varied`:
``ak.sum(pt[good], axis=1)`` has one value per event, ``ht[selected]`` keeps the events where
``selected`` holds, and a later ``ht[selected] * events.genWeight`` pairs each kept event with its own
weight. Unvaried operands are awkward arrays of the same structure (one number per event, or one list of
numbers per event with the same counts), 1-D NumPy arrays of one number per event, or scalars.
Everything runs on concrete CPU arrays (what ``process`` receives); missing values (option types),
records and deeper nesting raise :class:`~distproc.exceptions.SystematicsError`: take one variation with
:meth:`Varied.variation` for anything else.

Examples
--------
>>> import awkward as ak
>>> import hist
>>> from distproc.systematics import fill_varied
>>> pt = ak.Array([[40.0, 20.0], [], [35.0, 31.0, 10.0]])
>>> jes = Varied({"nominal": pt, "jes_up": 1.1 * pt, "jes_down": 0.9 * pt})
>>> good = jes > 30.0
>>> ak.sum(good, axis=1).variation("jes_down").tolist()
[1, 0, 1]
>>> ht = ak.sum(jes[good], axis=1)
>>> h = hist.Hist.new.StrCat([], name="variation", growth=True).Reg(4, 0.0, 100.0, name="ht").Double()
>>> _ = fill_varied(h, ht=ht[ak.sum(good, axis=1) >= 1])
>>> h[{"variation": "nominal"}].values().tolist(), h[{"variation": "jes_down"}].values().tolist()
([0.0, 1.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0])
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from distproc.exceptions import SystematicsError, format_options
from distproc.systematics._arrays import is_dask
from distproc.systematics._flat import (
    ALL,
    REDUCTIONS,
    Events,
    Fixed,
    Keep,
    Selection,
    combine,
    from_awkward,
    reducer,
    unsupported,
)

__all__ = ("Varied",)


def _operand(x: Any, what: str) -> Varied | Fixed | Any:
    """*x* as a :class:`Varied`, a :class:`Fixed` array or a NumPy scalar."""
    if isinstance(x, Varied):
        return x
    if isinstance(x, (bool, numbers.Number, np.generic)):
        return x
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return x[()]
        if x.ndim != 1 or x.dtype.kind not in "biuf":
            raise unsupported(x, what, f"a NumPy array of shape {x.shape} and dtype {x.dtype}")
        return Fixed(Events(len(x)), x)
    if isinstance(x, ak.Array):
        return from_awkward(x, what)
    if is_dask(x):
        raise unsupported(
            x, what, "a dask-awkward array; use Varied inside process(), on its concrete events"
        )
    raise unsupported(x, what, f"a {type(x).__name__}")


def _names(operands: Iterable[Any]) -> tuple[str, ...]:
    """Variation names of the Varied operands, in order of appearance, ``"nominal"`` first."""
    names = {"nominal": None}
    for op in operands:
        if isinstance(op, Varied):
            names.update(dict.fromkeys(op._values))
    return tuple(names)


def _target(operands: Sequence[Any], what: str) -> Events:
    """The common structure: the jagged one if any operand is jagged; all must agree on the events."""
    structures = [op.events if isinstance(op, Fixed) else op._events for op in operands if _is_array(op)]
    if not structures:
        msg = f"{what}: needs at least one Varied or array operand"
        raise SystematicsError(msg)
    target = next((s for s in structures if s.jagged), structures[0])
    for s in structures:
        if s.length != target.length or (s.jagged and not s.same(target)):
            msg = (
                f"{what}: operands have different structures ({s.describe()} against {target.describe()}); "
                "Varied operands line up by event and object, so they must come from the same events "
                "and collection"
            )
            raise SystematicsError(msg)
    return target


def _is_array(op: Any) -> bool:
    return isinstance(op, (Varied, Fixed))


class _Broadcast:
    """Operands put on one structure, variation by variation (what every operation starts from)."""

    def __init__(self, inputs: Sequence[Any], what: str) -> None:
        self.operands = [_operand(x, what) for x in inputs]
        self.target = _target(self.operands, what)
        self.names = _names(self.operands)
        self._expanded: dict[int, np.ndarray] = {}

    def _expand(self, values: np.ndarray, events: Events) -> np.ndarray:
        """Per-event *values* on the target's objects (jagged target), cached per array."""
        if events.jagged or not self.target.jagged:
            return values
        key = id(values)
        if key not in self._expanded:
            self._expanded[key] = np.repeat(values, self.target.counts)
        return self._expanded[key]

    @staticmethod
    def raw(op: Any, name: str) -> tuple[Any, Keep]:
        """One operand's values under variation *name* (its nominal if it does not vary under it)."""
        if isinstance(op, Varied):
            key = name if name in op._values else "nominal"
            return op._values[key], op._keep[key]
        if isinstance(op, Fixed):
            return op.values, ALL
        return op, ALL

    def arrays(self, name: str) -> tuple[list[Any], Keep]:
        """The operands' flat values under variation *name* on the target structure, and what is kept."""
        arrays: list[Any] = []
        keep = ALL
        for op in self.operands:
            values, kept = self.raw(op, name)
            if _is_array(op):
                values = self._expand(values, op.events if isinstance(op, Fixed) else op._events)
            arrays.append(values)
            keep = combine(keep, kept)
        return arrays, keep


def _apply(fn: Callable[..., Any], inputs: Sequence[Any], what: str) -> Varied:
    """``fn(*flat_arrays)`` for every variation name: an elementwise operation."""
    b = _Broadcast(inputs, what)
    values: dict[str, np.ndarray] = {}
    keeps: dict[str, Keep] = {}
    for name in b.names:
        arrays, keeps[name] = b.arrays(name)
        values[name] = np.asarray(fn(*arrays))
    return Varied._make(b.target, values, keeps)


class _UfuncHook:
    """``__array_ufunc__`` that NumPy finds (on the class) but awkward's operators do not (on instances).

    NumPy looks ``__array_ufunc__`` up on the type, so ``np.sqrt(varied)`` and ``ndarray * varied`` come
    here. awkward's ``ak.Array.__mul__`` looks it up on the instance, sees ``None`` and returns
    ``NotImplemented``, so Python calls ``Varied.__rmul__`` instead of awkward failing on an unknown type.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.fn if instance is None else None


class Varied:
    """One per-event or per-object quantity for the nominal and every named variation.

    Build one from arrays of the same structure (``"nominal"`` is required), or get one from
    :meth:`BinnedLookup.varied <distproc.systematics.BinnedLookup.varied>` (every table of a lookup at
    once). Then compute with it as with an awkward array: operators and NumPy ufuncs, ``x[mask]``,
    ``ak.sum``/``ak.count``/``ak.count_nonzero``/``ak.num``/``ak.any``/``ak.all`` with ``axis=1``,
    ``ak.where``; fill histograms with :func:`~distproc.systematics.fill_varied`; take one variation as an
    awkward array with :meth:`variation`. See the module documentation for how operands line up and
    combine.

    Parameters
    ----------
    variations
        ``{"nominal": array, "<name>": array, ...}``: awkward arrays (one number per event, or one list of
        numbers per event, all with the same counts) or 1-D NumPy arrays of one length.

    Raises
    ------
    SystematicsError
        No ``"nominal"``, arrays of different structures, or an unsupported array type.

    Examples
    --------
    >>> import awkward as ak
    >>> pt = ak.Array([[50.0, 20.0], [30.0]])
    >>> jes = Varied({"nominal": pt, "jes_up": pt * 1.1})
    >>> btag = Varied({"nominal": ak.Array([[1.0, 1.0], [1.0]]), "btag_up": ak.Array([[2.0, 1.0], [1.0]])})
    >>> w = jes * btag
    >>> w.names
    ('nominal', 'jes_up', 'btag_up')
    >>> w.variation("btag_up").tolist()
    [[100.0, 20.0], [30.0]]
    >>> ak.sum(jes[jes > 25.0], axis=1).variation("jes_up").tolist()
    [55.00000000000001, 33.0]
    """

    __slots__ = ("_events", "_keep", "_values")

    def __init__(self, variations: Mapping[str, Any]) -> None:
        if not isinstance(variations, Mapping) or "nominal" not in variations:
            keys = list(variations) if isinstance(variations, Mapping) else []
            msg = (
                "Varied needs a mapping of variation name to array that includes 'nominal'. "
                f"{format_options('nominal', keys, 'names')}"
            )
            raise SystematicsError(msg)
        operands = {str(k): _operand(v, f"Varied variation {k!r}") for k, v in variations.items()}
        for key, op in operands.items():
            if not isinstance(op, Fixed):
                msg = f"Varied variation {key!r} must be an array (awkward or 1-D NumPy), got {op!r:.100}"
                raise SystematicsError(msg)
        self._events = _target(list(operands.values()), "Varied")
        self._values = {k: op.values for k, op in operands.items()}
        self._keep = dict.fromkeys(operands, ALL)

    @classmethod
    def _make(cls, events: Events, values: dict[str, np.ndarray], keeps: dict[str, Keep]) -> Varied:
        out = cls.__new__(cls)
        out._events, out._values, out._keep = events, values, keeps
        return out

    @classmethod
    def from_variations(cls, events: Any, variations: Any, collection: str, field: str) -> Varied:
        """``events[collection][field]`` for the nominal and under every shape variation of *variations*.

        Parameters
        ----------
        events
            The chunk's events (what ``process`` receives, or a record array with the collection).
        variations
            A :class:`~distproc.systematics.ShapeVariations` or one
            :class:`~distproc.systematics.ShapeVariation` (anything with ``names()`` and
            ``vary(events, name)``).
        collection, field
            Where the varied quantity is, e.g. ``"Jet"``, ``"pt"``.

        Examples
        --------
        >>> import awkward as ak
        >>> from distproc.systematics import Scale
        >>> events = ak.Array({"Jet": [[{"pt": 100.0}], [{"pt": 20.0}, {"pt": 50.0}]]})
        >>> pt = Varied.from_variations(events, Scale("jes", 0.1), "Jet", "pt")
        >>> pt.names, pt.variation("jes_down").tolist()
        (('nominal', 'jes_up', 'jes_down'), [[90.0], [18.0, 45.0]])
        """
        arrays = {"nominal": events[collection][field]}
        for name in variations.names():
            arrays[name] = variations.vary(events, name)[collection][field]
        return cls(arrays)

    @property
    def names(self) -> tuple[str, ...]:
        """The variation names, ``"nominal"`` first."""
        return tuple(self._values)

    def variation(self, name: str) -> ak.Array:
        """One variation as an awkward array, with the selections made so far applied.

        Examples
        --------
        >>> import awkward as ak
        >>> x = Varied({"nominal": ak.Array([[1.0, 5.0], [7.0]]), "up": ak.Array([[2.0, 6.0], [8.0]])})
        >>> x[x > 1.5].variation("nominal").tolist()
        [[5.0], [7.0]]
        """
        if name not in self._values:
            msg = f"Varied has no variation {name!r}. {format_options(name, self._values, 'variations')}"
            raise SystematicsError(msg)
        selection = Selection(self._events, self._keep[name])
        values = self._values[name]
        return selection.per_object(values) if self._events.jagged else ak.Array(selection.per_event(values))

    def __getitem__(self, where: Any) -> Varied:
        """Select events (a boolean per event) or objects (a boolean per object) in every variation."""
        if isinstance(where, str):
            msg = f"Varied[{where!r}]: to take one variation as an awkward array use .variation({where!r})"
            raise SystematicsError(msg)
        b = _Broadcast([self, where], "Varied selection")
        mask_op = b.operands[1]
        mask_events = mask_op.events if isinstance(mask_op, Fixed) else mask_op._events
        if mask_events.jagged and not self._events.jagged:
            msg = (
                "Varied selection: a mask with one list per event cannot select one value per event; "
                "reduce it first, e.g. ak.any(mask, axis=1)"
            )
            raise SystematicsError(msg)
        values: dict[str, np.ndarray] = {}
        keeps: dict[str, Keep] = {}
        for name in b.names:
            values[name], keep = b.raw(self, name)
            mask, mask_keep = b.raw(mask_op, name)
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
                msg = (
                    f"Varied selection: the mask must be boolean, got {getattr(mask, 'dtype', type(mask))}; "
                    "for other indexing take one variation with .variation(name)"
                )
                raise SystematicsError(msg)
            new = Keep(objects=mask) if mask_events.jagged else Keep(events=mask)
            keeps[name] = combine(combine(keep, mask_keep), new)
        return Varied._make(self._events, values, keeps)

    def _reduce(self, kind: str, axis: Any, options: Mapping[str, Any]) -> Varied:
        what = f"ak.{kind} on a Varied"
        if axis not in (1, -1) or not self._events.jagged:
            msg = (
                f"{what}: only axis=1 (or -1) of a per-object quantity is supported (one value per event), "
                f"got axis={axis!r} on {self._events.describe()}; take one variation with .variation(name) "
                "for other reductions"
            )
            raise SystematicsError(msg)
        defaults = {
            "keepdims": False,
            "mask_identity": False,
            "highlevel": True,
            "behavior": None,
            "attrs": None,
        }
        bad = {k: v for k, v in options.items() if k not in defaults or v != defaults[k]}
        if bad:
            msg = f"{what}: options {sorted(bad)} are not supported"
            raise SystematicsError(msg)
        reduce = reducer(kind)
        events = self._events
        values = {name: reduce(v, self._keep[name].objects, events) for name, v in self._values.items()}
        keeps = {name: Keep(events=keep.events) for name, keep in self._keep.items()}
        return Varied._make(events.per_event(), values, keeps)

    def __awkward_function__(
        self, func: Callable[..., Any], array_likes: Sequence[Any], args: tuple, kwargs: dict[str, Any]
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name in REDUCTIONS and func is getattr(ak, name):
            array = args[0] if args else kwargs.pop("array")
            axis = args[1] if len(args) > 1 else kwargs.pop("axis", None if name != "num" else 1)
            if not isinstance(array, Varied):
                msg = f"ak.{name}: the array is not the Varied (got {type(array).__name__})"
                raise SystematicsError(msg)
            return array._reduce(name, axis, kwargs)
        if name == "where" and func is ak.where:
            if len(args) != 3 or kwargs:
                msg = "ak.where with a Varied takes exactly (condition, x, y)"
                raise SystematicsError(msg)
            return _apply(np.where, args, "ak.where")
        supported = ", ".join(f"ak.{n}" for n in (*REDUCTIONS, "where"))
        msg = (
            f"ak.{name} is not supported on a Varied (supported: {supported}, operators and NumPy ufuncs); "
            "take one variation as an awkward array with .variation(name)"
        )
        raise SystematicsError(msg)

    def _ufunc(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method != "__call__" or kwargs:
            return NotImplemented
        return _apply(ufunc, inputs, f"np.{ufunc.__name__}")

    __array_ufunc__ = _UfuncHook(_ufunc)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        msg = (
            "a Varied holds several arrays (one per variation) and cannot become one NumPy array; fill "
            "histograms with distproc.systematics.fill_varied, or take one with .variation(name)"
        )
        raise TypeError(msg)

    def __abs__(self) -> Varied:
        return _apply(np.absolute, [self], "abs")

    def __neg__(self) -> Varied:
        return _apply(np.negative, [self], "-")

    def __invert__(self) -> Varied:
        return _apply(np.invert, [self], "~")

    def __repr__(self) -> str:
        dtype = self._values["nominal"].dtype
        kind = (
            f"{self._events.length} * var * {dtype}"
            if self._events.jagged
            else f"{self._events.length} * {dtype}"
        )
        selected = " (selected)" if any(k is not ALL for k in self._keep.values()) else ""
        return f"<Varied {list(self._values)} of {kind}{selected}>"


def _operator(ufunc: np.ufunc, symbol: str) -> tuple[Callable[..., Varied], Callable[..., Varied]]:
    def forward(self: Varied, other: Any) -> Varied:
        return _apply(ufunc, [self, other], symbol)

    def reflected(self: Varied, other: Any) -> Varied:
        return _apply(ufunc, [other, self], symbol)

    return forward, reflected


for _name, _ufunc, _symbol, _has_reflected in (
    ("add", np.add, "+", True),
    ("sub", np.subtract, "-", True),
    ("mul", np.multiply, "*", True),
    ("truediv", np.true_divide, "/", True),
    ("floordiv", np.floor_divide, "//", True),
    ("mod", np.remainder, "%", True),
    ("pow", np.power, "**", True),
    ("and", np.bitwise_and, "&", True),
    ("or", np.bitwise_or, "|", True),
    ("xor", np.bitwise_xor, "^", True),
    ("lt", np.less, "<", False),  # comparisons reflect into each other (x > a is a < x): no __r*__
    ("le", np.less_equal, "<=", False),
    ("gt", np.greater, ">", False),
    ("ge", np.greater_equal, ">=", False),
    ("eq", np.equal, "==", False),
    ("ne", np.not_equal, "!=", False),
):
    _forward, _reflected = _operator(_ufunc, _symbol)
    setattr(Varied, f"__{_name}__", _forward)
    if _has_reflected:
        setattr(Varied, f"__r{_name}__", _reflected)
Varied.__hash__ = None  # type: ignore[assignment]  # == is elementwise
