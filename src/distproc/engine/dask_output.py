"""The output of a dask-mode processor for one or more partitions, and how outputs combine.

:class:`~distproc.engine.dask_mode.DaskModeProcessor` returns a :class:`DaskOutput` per partition:
``{dataset: DatasetResult}``, where a :class:`DatasetResult` is the traced output's structure with each
dask collection replaced by a :class:`Leaf`, one :class:`LeafSpec` per leaf (its kind: a dask-awkward
reduction, an added histogram or count, or per-partition arrays) and the leaves' values so far. The
engine's tree reduction adds these outputs; :meth:`DaskOutput.result` then gives what ``dask.compute``
gives for the whole dataset (see :mod:`distproc.engine.dask_mode` for which outputs are exact).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from distproc.exceptions import DaskModeError

#: Kinds of output leaves (see the module docstring).
REDUCE, ADD, PARTS = "reduce", "add", "partitions"


@dataclass(frozen=True)
class Leaf:
    """Placeholder for the *index*-th dask collection in a traced output's structure."""

    index: int


@dataclass(frozen=True)
class LeafSpec:
    """How one output leaf is computed per partition and combined: picklable, a few hundred bytes."""

    path: str
    kind: str
    #: ``(concat, tree_node, finalize)`` of a dask-awkward reduction (:data:`REDUCE` leaves).
    combine: tuple[Callable[..., Any], ...] = ()
    #: The collection's ``__dask_postcompute__`` ``(function, args)``, applied once at the end.
    post: tuple[Callable[..., Any], tuple[Any, ...]] = (operator.itemgetter(0), ())


def path_str(path: tuple[Any, ...]) -> str:
    return "output" + "".join(f"[{p!r}]" for p in path)


def is_collection(obj: Any) -> bool:
    """Whether *obj* is a dask collection, by its type: a ``hist.dask`` histogram with fills staged from
    concrete arrays raises when asked for its graph (what ``dask.is_dask_collection`` does)."""
    return callable(getattr(type(obj), "__dask_graph__", None))


def flatten(obj: Any, path: tuple[Any, ...], leaves: list[tuple[str, Any]]) -> Any:
    """*obj* with every dask collection replaced by a :class:`Leaf`; the collections go to *leaves*."""
    if is_collection(obj):
        leaves.append((path_str(path), obj))
        return Leaf(len(leaves) - 1)
    if isinstance(obj, Mapping):
        out = {k: flatten(v, (*path, k), leaves) for k, v in obj.items()}
        if type(obj) is dict:
            return out
        copied = obj.copy() if hasattr(obj, "copy") else dict(obj)
        copied.update(out)
        return copied
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, (*path, i), leaves) for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    return obj


def unflatten(obj: Any, values: list[Any]) -> Any:
    """Inverse of :func:`flatten`: the structure with each :class:`Leaf` replaced by its value."""
    if isinstance(obj, Leaf):
        return values[obj.index]
    if isinstance(obj, Mapping):
        copied = obj.copy() if hasattr(obj, "copy") else dict(obj)
        for k, v in obj.items():
            copied[k] = unflatten(v, values)
        return copied
    if isinstance(obj, list):
        return [unflatten(v, values) for v in obj]
    if isinstance(obj, tuple):
        return tuple(unflatten(v, values) for v in obj)
    return obj


@dataclass
class DatasetResult:
    """One dataset's outputs so far: the output structure, its leaves' specs and combined values."""

    structure: Any
    specs: tuple[LeafSpec, ...]
    values: list[Any]
    partitions: list[str]

    def __add__(self, other: DatasetResult) -> DatasetResult:
        """Both outputs combined, as dask combines partitions; neither operand changes.

        Raises :class:`DaskModeError` when the processor gave the two differently structured outputs
        (another file form); the engine then reports the dataset's output as not addable.
        """
        if not isinstance(other, DatasetResult):
            return NotImplemented
        if [(s.path, s.kind) for s in self.specs] != [(s.path, s.kind) for s in other.specs]:
            msg = (
                f"the processor returned differently structured outputs for partitions "
                f"{few(self.partitions)} and {few(other.partitions)} (outputs "
                f"{[s.path for s in self.specs]} vs {[s.path for s in other.specs]}); they cannot be combined"
            )
            raise DaskModeError(msg)
        triples = zip(self.specs, self.values, other.values, strict=True)
        values = [combine(spec, a, b) for spec, a, b in triples]
        return DatasetResult(self.structure, self.specs, values, [*self.partitions, *other.partitions])


def combine(spec: LeafSpec, a: Any, b: Any) -> Any:
    if spec.kind == REDUCE:
        concat, tree_node, _ = spec.combine
        return tree_node(concat([a, b]))
    return operator.add(a, b)  # histograms and counts added; partition lists concatenated


def finish(spec: LeafSpec, value: Any) -> Any:
    """The leaf's computed value, as ``dask.compute`` gives it, from its combined partition values."""
    if spec.kind == REDUCE:
        concat, _, finalize = spec.combine
        value = [finalize(concat([value]))]
    elif spec.kind == ADD:
        value = [value]
    function, args = spec.post
    return function(value, *args)


class DaskOutput(MutableMapping):
    """The addable per-partition output of a :class:`DaskModeProcessor`: ``{dataset: results}``.

    Adding two combines each dataset's outputs as dask would combine their partitions; adding never
    mutates an operand except in ``+=``. :meth:`result` gives what ``dask.compute`` would give. A
    mapping of datasets, so that a dataset whose outputs cannot be added is the only one the engine
    reports and leaves out (:mod:`distproc.engine.merge`); the other datasets are still returned.
    """

    def __init__(self, datasets: dict[str, Any]) -> None:
        self.datasets = datasets

    def __getitem__(self, name: str) -> Any:
        return self.datasets[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.datasets[name] = value

    def __delitem__(self, name: str) -> None:
        del self.datasets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)

    def __copy__(self) -> DaskOutput:
        return DaskOutput(dict(self.datasets))

    def __add__(self, other: DaskOutput) -> DaskOutput:
        out = copy.copy(self)
        out += other
        return out

    def __iadd__(self, other: DaskOutput) -> DaskOutput:
        if not isinstance(other, DaskOutput):
            return NotImplemented
        for name, theirs in other.datasets.items():
            mine = self.datasets.get(name)
            if mine is not None and not isinstance(mine, DatasetResult):
                # an output already found not addable: the engine's key-by-key addition carries it on
                msg = f"dataset {name!r} holds {type(mine).__name__}, not a dask-mode result"
                raise TypeError(msg)
            self.datasets[name] = theirs if mine is None else mine + theirs  # results are never mutated
        return self

    def result(self) -> dict[str, Any]:
        """``{dataset: output}`` with every dask collection replaced by its computed value."""
        return {
            name: unflatten(r.structure, [finish(s, v) for s, v in zip(r.specs, r.values, strict=True)])
            for name, r in self.datasets.items()
        }


def few(partitions: list[str]) -> str:
    return ", ".join(partitions[:3]) + (f" and {len(partitions) - 3} more" if len(partitions) > 3 else "")
