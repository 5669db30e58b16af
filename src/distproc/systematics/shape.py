"""Shape variations: varied copies of an input collection (jet energy scale and resolution, ...).

A shape variation changes object kinematics, so the selection and histogram filling must run again on
the varied events; :func:`distproc.systematics.run_variations` does that and merges the outputs. Every
variation here works inside the one task that processes a chunk: K variations cost K more passes over
the chunk and nothing in the Dask graph.
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import awkward as ak
import numpy as np

from distproc.exceptions import DuplicateVariationError, SystematicsError, format_options
from distproc.systematics._arrays import is_dask
from distproc.systematics.rng import deterministic_normal

__all__ = ("Scale", "ShapeVariation", "ShapeVariations", "Smear")

#: A per-object quantity: a number, ``f(collection) -> array``, or a lookup/correction with ``inputs``.
Quantity = float | Callable[..., Any]


def _library(x: Any) -> Any:
    if is_dask(x):
        import dask_awkward as dak

        return dak
    return ak


def _fields(x: Any) -> list[str]:
    return list(x.fields)


def get_collection(events: Any, collection: str, owner: str) -> Any:
    """``events[collection]``, or a :class:`SystematicsError` listing the collections there are."""
    fields = _fields(events)
    if collection not in fields:
        msg = (
            f"{owner}: events have no collection {collection!r}. "
            f"{format_options(collection, fields, 'collections')}"
        )
        raise SystematicsError(msg)
    return events[collection]


def _resolve(quantity: Any, objects: Any, owner: str) -> Any:
    """Evaluate a :data:`Quantity` for every object of *objects*."""
    if isinstance(quantity, numbers.Real):
        return float(quantity)
    inputs = getattr(quantity, "inputs", None)
    if inputs is not None and callable(quantity):
        fields = _fields(objects)
        args = []
        for name in inputs:
            if name in fields:
                args.append(objects[name])
            elif name.startswith("abs") and name[3:] in fields:
                args.append(abs(objects[name[3:]]))
            else:
                msg = (
                    f"{owner}: {quantity!r} needs input {name!r}, which is not a field of the collection "
                    f"('absX' gives |X|; pass a function of the collection for anything else). "
                    f"{format_options(name, fields, 'fields')}"
                )
                raise SystematicsError(msg)
        return quantity(*args)
    return quantity(objects)


def _check_quantity(quantity: Any, owner: str, what: str) -> None:
    if isinstance(quantity, numbers.Real):
        if not np.isfinite(float(quantity)):
            msg = f"{owner}: {what} must be finite, got {quantity!r}"
            raise SystematicsError(msg)
    elif not callable(quantity):
        msg = (
            f"{owner}: {what} must be a number, a function of the collection, or a BinnedLookup/"
            f"Correction; got {type(quantity).__name__}"
        )
        raise SystematicsError(msg)


def _pair(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, tuple):
        if len(value) != 2:
            msg = f"an (up, down) pair must have 2 entries, got {len(value)}"
            raise SystematicsError(msg)
        return value
    return None


class ShapeVariation(abc.ABC):
    """One source of shape uncertainty that yields one or more named, varied copies of the events.

    Subclasses define :meth:`names` and :meth:`vary`; :class:`Scale` and :class:`Smear` are the
    built-in ones. A custom variation only needs to return events with some fields replaced.

    Examples
    --------
    >>> import awkward as ak
    >>> class Shift(ShapeVariation):
    ...     def names(self):
    ...         return ("met_shift",)
    ...
    ...     def vary(self, events, name):
    ...         return ak.with_field(events, events["met"] + 10.0, "met")
    >>> events = ak.Array({"met": [20.0, 35.0]})
    >>> [(n, e.met.tolist()) for n, e in ShapeVariations(Shift()).apply(events)]
    [('nominal', [20.0, 35.0]), ('met_shift', [30.0, 45.0])]
    """

    @abc.abstractmethod
    def names(self) -> tuple[str, ...]:
        """The variation names this source produces (never ``"nominal"``)."""

    @abc.abstractmethod
    def vary(self, events: Any, name: str) -> Any:
        """*events* with the varied fields replaced for variation *name* (one of :meth:`names`)."""


class _CollectionVariation(ShapeVariation):
    """Shared parts of :class:`Scale` and :class:`Smear`: multiply fields of one collection."""

    kind = "variation"

    def __init__(self, name: str, collection: str, fields: Sequence[str] | str) -> None:
        if not isinstance(name, str) or not name:
            msg = f"{type(self).__name__}: name must be a non-empty string, got {name!r}"
            raise SystematicsError(msg)
        self.name = name
        self.collection = str(collection)
        self.fields: tuple[str, ...] = (fields,) if isinstance(fields, str) else tuple(fields)
        if not self.fields:
            msg = f"{self!r}: fields is empty; name the fields to vary, e.g. fields=('pt',)"
            raise SystematicsError(msg)

    def _objects(self, events: Any) -> Any:
        objects = get_collection(events, self.collection, repr(self))
        have = _fields(objects)
        for field in self.fields:
            if field not in have:
                msg = (
                    f"{self!r}: collection {self.collection!r} has no field {field!r}. "
                    f"{format_options(field, have, 'fields')}"
                )
                raise SystematicsError(msg)
        return objects

    def _with_factor(self, events: Any, objects: Any, factor: Any) -> Any:
        library = _library(objects)
        for field in self.fields:
            objects = library.with_field(objects, objects[field] * factor, field)
        return library.with_field(events, objects, self.collection)

    def _check_name(self, name: str) -> None:
        if name not in self.names():
            msg = (
                f"{self!r} does not produce variation {name!r}. {format_options(name, self.names(), 'names')}"
            )
            raise SystematicsError(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, ...)"


class Scale(_CollectionVariation):
    """Scale fields of a collection: ``x -> x * (1 + delta)`` (up) and ``x * (1 - delta)`` (down).

    This is the jet energy scale pattern: ``Scale("jes", 0.03)`` produces ``jes_up`` and ``jes_down``
    with ``Jet.pt`` scaled by 1.03 and 0.97.

    Negative factors are clipped to 0 (``max(1 - delta, 0)``). NaN, negative or other unphysical input
    values are not errors: they are multiplied like any value (NaN stays NaN, a negative pt stays
    negative), so a selection such as ``pt > 30`` removes them as it would in the nominal pass.

    Parameters
    ----------
    name
        Base name; the variations are ``f"{name}_{direction}"``.
    delta
        The relative shift: a number; a function ``f(objects) -> array`` of the collection; a
        :class:`~distproc.systematics.BinnedLookup` (its nominal table) or
        :class:`~distproc.systematics.Correction` whose input names are fields of the collection
        (``"absX"`` means ``abs(X)``); or an ``(up, down)`` pair of these for asymmetric shifts, e.g.
        ``(lambda j: unc(j.pt, abs(j.eta), variation="up"), lambda j: unc(..., variation="down"))``.
    collection
        The events field holding the objects, e.g. ``"Jet"``.
    fields
        The fields to scale; ``("pt", "mass")`` scales the whole four-momentum.
    directions
        Which of ``"up"`` and ``"down"`` to produce.

    Examples
    --------
    >>> import awkward as ak
    >>> events = ak.Array({"Jet": [[{"pt": 100.0, "eta": -1.0}], []]})
    >>> jes = Scale("jes", 0.03)
    >>> jes.names()
    ('jes_up', 'jes_down')
    >>> jes.vary(events, "jes_up").Jet.pt.tolist()
    [[103.0], []]
    >>> asym = Scale("jes", (lambda jets: 0.01 * (1 + abs(jets.eta)), 0.02))
    >>> asym.vary(events, "jes_up").Jet.pt.tolist(), asym.vary(events, "jes_down").Jet.pt.tolist()
    ([[102.0], []], [[98.0], []])
    """

    def __init__(
        self,
        name: str,
        delta: Quantity | tuple[Quantity, Quantity],
        *,
        collection: str = "Jet",
        fields: Sequence[str] | str = ("pt",),
        directions: Sequence[str] = ("up", "down"),
    ) -> None:
        super().__init__(name, collection, fields)
        pair = _pair(delta)
        self.delta_up, self.delta_down = pair if pair is not None else (delta, delta)
        _check_quantity(self.delta_up, repr(self), "delta (up)")
        _check_quantity(self.delta_down, repr(self), "delta (down)")
        self.directions = tuple(directions)
        bad = [d for d in self.directions if d not in ("up", "down")]
        if bad or not self.directions or len(set(self.directions)) != len(self.directions):
            msg = f"{self!r}: directions must be 'up' and/or 'down' (each once), got {self.directions}"
            raise SystematicsError(msg)

    def names(self) -> tuple[str, ...]:
        """``(f"{name}_up", f"{name}_down")`` for the chosen directions."""
        return tuple(f"{self.name}_{d}" for d in self.directions)

    def vary(self, events: Any, name: str) -> Any:
        """*events* with the collection's fields scaled for ``name`` (``<name>_up``/``<name>_down``)."""
        self._check_name(name)
        objects = self._objects(events)
        if name.endswith("_up"):
            factor = np.maximum(1.0 + _resolve(self.delta_up, objects, repr(self)), 0.0)
        else:
            factor = np.maximum(1.0 - _resolve(self.delta_down, objects, repr(self)), 0.0)
        return self._with_factor(events, objects, factor)


class Smear(_CollectionVariation):
    """Smear fields of a collection: ``x -> x * max(1 + sigma * z, 0)`` with ``z ~ N(0, 1)``.

    This is the jet energy resolution pattern. ``z`` is deterministic per object: it is drawn by
    :func:`~distproc.systematics.deterministic_normal` from the event's ``run``, ``luminosityBlock`` and
    ``event`` numbers, the object's index within its event (before any selection), the variation name
    and *seed*, so results do not depend on chunking, worker count or re-runs.

    The factor is clipped at 0 so a smeared pt is never negative. NaN stays NaN (an object whose sigma
    is NaN, e.g. from a :class:`~distproc.systematics.BinnedLookup` with NaN input, keeps a NaN pt);
    negative input values are multiplied by the (non-negative) factor, not rejected.

    Parameters
    ----------
    name
        The variation name; with an ``(up, down)`` pair of sigmas, ``f"{name}_up"`` and ``f"{name}_down"``.
    sigma
        The relative resolution: a number, a function ``f(objects) -> array``, a lookup/correction whose
        inputs are fields of the collection (``"absX"`` means ``abs(X)``), or an ``(up, down)`` pair.
    collection
        The events field holding the objects.
    fields
        The fields to smear (all by the same factor).
    seed
        Changes every random number, for a second independent set.
    seed_fields
        Event fields whose values seed the numbers.

    Examples
    --------
    >>> import awkward as ak
    >>> events = ak.Array(
    ...     {
    ...         "run": [1, 1],
    ...         "luminosityBlock": [7, 7],
    ...         "event": [1001, 1002],
    ...         "Jet": [[{"pt": 50.0}, {"pt": 30.0}], [{"pt": 80.0}]],
    ...     }
    ... )
    >>> jer = Smear("jer", 0.1)
    >>> smeared = jer.vary(events, "jer").Jet.pt
    >>> ak.num(smeared).tolist()
    [2, 1]
    >>> smeared[1].tolist() == jer.vary(events[1:], "jer").Jet.pt[0].tolist()  # chunking-independent
    True
    """

    def __init__(
        self,
        name: str,
        sigma: Quantity | tuple[Quantity, Quantity],
        *,
        collection: str = "Jet",
        fields: Sequence[str] | str = ("pt",),
        seed: int = 0,
        seed_fields: Sequence[str] = ("run", "luminosityBlock", "event"),
    ) -> None:
        super().__init__(name, collection, fields)
        pair = _pair(sigma)
        if pair is None:
            self._sigmas = {name: sigma}
        else:
            self._sigmas = {f"{name}_up": pair[0], f"{name}_down": pair[1]}
        for key, value in self._sigmas.items():
            _check_quantity(value, repr(self), f"sigma ({key})")
        self.seed = int(seed)
        self.seed_fields = tuple(seed_fields)

    def names(self) -> tuple[str, ...]:
        """``(name,)``, or ``(f"{name}_up", f"{name}_down")`` for an ``(up, down)`` pair of sigmas."""
        return tuple(self._sigmas)

    def random(self, events: Any, name: str) -> Any:
        """The standard normal ``z`` of every object of the collection for variation *name*.

        Examples
        --------
        >>> import awkward as ak
        >>> events = ak.Array(
        ...     {"run": [1], "luminosityBlock": [1], "event": [5], "Jet": [[{"pt": 1.0}, {"pt": 2.0}]]}
        ... )
        >>> z = Smear("jer", 0.1).random(events, "jer")
        >>> str(z.type)
        '1 * var * float64'
        """
        self._check_name(name)
        objects = self._objects(events)
        have = _fields(events)
        missing = [f for f in self.seed_fields if f not in have]
        if missing:
            msg = (
                f"{self!r}: events lack the seed field(s) {', '.join(repr(m) for m in missing)} that "
                f"make the smearing reproducible; pass seed_fields= naming integer per-event fields. "
                f"{format_options(missing[0], have, 'fields')}"
            )
            raise SystematicsError(msg)
        first = objects[self.fields[0]]
        index = _library(first).local_index(first, axis=-1) if first.ndim > 1 else 0
        keys = [events[f] for f in self.seed_fields]
        return deterministic_normal(*keys, index, name=name, seed=self.seed)

    def vary(self, events: Any, name: str) -> Any:
        """*events* with the collection's fields smeared for variation *name*."""
        z = self.random(events, name)
        objects = self._objects(events)
        sigma = _resolve(self._sigmas[name], objects, repr(self))
        factor = np.maximum(1.0 + sigma * z, 0.0)
        return self._with_factor(events, objects, factor)


class ShapeVariations:
    """An ordered set of shape variations with unique names; ``"nominal"`` always comes first.

    Parameters
    ----------
    *variations
        :class:`Scale`, :class:`Smear` or other :class:`ShapeVariation` objects.

    Raises
    ------
    DuplicateVariationError
        Two variations produce the same name, or one is called ``"nominal"``.

    Examples
    --------
    >>> import awkward as ak
    >>> variations = ShapeVariations(Scale("jes", 0.03), Smear("jer", (0.12, 0.08)))
    >>> variations.names()
    ['nominal', 'jes_up', 'jes_down', 'jer_up', 'jer_down']
    >>> events = ak.Array(
    ...     {"run": [1], "luminosityBlock": [1], "event": [9], "Jet": [[{"pt": 100.0, "eta": 0.1}]]}
    ... )
    >>> [(name, varied.Jet.pt.tolist()) for name, varied in variations.apply(events)][:3]
    [('nominal', [[100.0]]), ('jes_up', [[103.0]]), ('jes_down', [[97.0]])]
    """

    def __init__(self, *variations: ShapeVariation) -> None:
        sources: dict[str, ShapeVariation] = {}
        for variation in variations:
            if not isinstance(variation, ShapeVariation):
                msg = (
                    "ShapeVariations takes Scale, Smear or other ShapeVariation objects, "
                    f"got {type(variation).__name__}: {variation!r}"
                )
                raise SystematicsError(msg)
            for name in variation.names():
                if name == "nominal":
                    msg = (
                        f"shape variation name 'nominal' (from {variation!r}) is reserved for the "
                        "unvaried pass; choose another name"
                    )
                    raise DuplicateVariationError(msg)
                if name in sources:
                    msg = (
                        f"shape variation name {name!r} is used twice: by {sources[name]!r} "
                        f"and by {variation!r}"
                        "\n    every variation name must be unique; rename one of them"
                    )
                    raise DuplicateVariationError(msg)
                sources[name] = variation
        self._sources = sources
        self.variations: tuple[ShapeVariation, ...] = tuple(variations)

    def names(self) -> list[str]:
        """``["nominal", <variation names in declaration order>...]``."""
        return ["nominal", *self._sources]

    def vary(self, events: Any, name: str) -> Any:
        """The events of one variation by name (``"nominal"`` returns *events* unchanged).

        Examples
        --------
        >>> import awkward as ak
        >>> events = ak.Array({"Jet": [[{"pt": 10.0}]]})
        >>> ShapeVariations(Scale("jes", 0.5)).vary(events, "jes_down").Jet.pt.tolist()
        [[5.0]]
        """
        if name == "nominal":
            return events
        if name not in self._sources:
            msg = f"no shape variation named {name!r}. {format_options(name, self.names(), 'variations')}"
            raise SystematicsError(msg)
        return self._sources[name].vary(events, name)

    def apply(self, events: Any) -> Iterator[tuple[str, Any]]:
        """Yield ``(name, events)`` for the nominal and then every variation, lazily, one at a time.

        Only the varied collection field is replaced (``ak.with_field``); other fields, NanoEvents
        behaviours and laziness (virtual mode) are untouched.

        Examples
        --------
        >>> import awkward as ak
        >>> events = ak.Array({"Jet": [[{"pt": 10.0}]]})
        >>> [name for name, _ in ShapeVariations(Scale("jes", 0.1, directions=("up",))).apply(events)]
        ['nominal', 'jes_up']
        """
        yield "nominal", events
        for name, source in self._sources.items():
            yield name, source.vary(events, name)

    def __iter__(self) -> Iterator[ShapeVariation]:
        return iter(self.variations)

    def __repr__(self) -> str:
        return f"ShapeVariations({', '.join(repr(v) for v in self.variations)})"
