"""Adding the partitions' outputs: coffea's ``accumulate`` and, where a value cannot be added, an
:class:`OutputConflict` naming the output key and the partitions involved in its place, so that every
other output is still added, returned and saved."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ("OutputConflict", "add_outputs", "pop_conflicts")


@dataclass
class OutputConflict:
    """An output value whose partitions' values could not be added: where, why, and which partitions."""

    path: str
    reason: str
    partitions: list[int] = field(default_factory=list)

    def __add__(self, other: Any) -> OutputConflict:
        """Absorbs later values: the output stays reported, never half-added."""
        if isinstance(other, OutputConflict):
            self.partitions.extend(i for i in other.partitions if i not in self.partitions)
        return self

    def describe(self, name: Callable[[int], str]) -> str:
        """One line: the output, why, and the first partitions involved (named by *name*)."""
        shown = ", ".join(name(i) for i in self.partitions[:4])
        more = f" and {len(self.partitions) - 4} more" if len(self.partitions) > 4 else ""
        return f"{self.path} cannot be added ({self.reason}); partitions involved: {shown}{more}"


def _path(path: tuple[Any, ...]) -> str:
    return "output" + "".join(f"[{p!r}]" for p in path)


def _add(a: Any, b: Any, path: tuple[Any, ...], ids: tuple[list[int], list[int]]) -> Any:
    """``coffea.processor.accumulate``'s sum of *a* and *b*, key by key, without mutating either; a value
    that cannot be added becomes an :class:`OutputConflict`."""
    from coffea.processor.accumulator import add

    if isinstance(a, OutputConflict) or isinstance(b, OutputConflict):
        conflict = copy.copy(a if isinstance(a, OutputConflict) else b)
        conflict.partitions = list(dict.fromkeys([*conflict.partitions, *ids[0], *ids[1]]))
        return conflict
    if isinstance(a, MutableMapping) and isinstance(b, MutableMapping):
        out = copy.copy(a)
        for key in b:
            out[key] = _add(a[key], b[key], (*path, key), ids) if key in a else copy.deepcopy(b[key])
        return out
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape != b.shape:  # would broadcast
        reason = f"arrays of shapes {a.shape} and {b.shape}"
        return OutputConflict(_path(path), reason, [*ids[0], *ids[1]])
    try:
        return add(a, b)
    except Exception as err:  # noqa: BLE001  (whatever fails to add is reported with its key)
        reason = f"{type(a).__name__} + {type(b).__name__}: {type(err).__name__}: {err}"
        return OutputConflict(_path(path), reason, [*ids[0], *ids[1]])


def add_outputs(outputs: Iterable[tuple[Any, list[int]]]) -> Any:
    """The sum of *outputs*, ``(output, its partitions' indices)`` pairs (``None`` outputs skipped).

    The fast path is coffea's ``accumulate``; only when it raises are the outputs added again key by
    key, with what cannot be added left as an :class:`OutputConflict`.
    """
    from coffea.processor import accumulate

    pairs = [(out, ids) for out, ids in outputs if out is not None]
    try:
        return accumulate(out for out, _ in pairs)
    except Exception:  # noqa: BLE001  (found key by key below)
        total, seen = pairs[0][0], list(pairs[0][1])
        for out, ids in pairs[1:]:
            total = _add(total, out, (), (seen, ids))
            seen.extend(ids)
        return total


def pop_conflicts(output: Any) -> tuple[Any, list[OutputConflict]]:
    """*output* without its :class:`OutputConflict` values, and those conflicts."""
    if isinstance(output, OutputConflict):
        return {}, [output]
    found: list[OutputConflict] = []
    if isinstance(output, MutableMapping):
        for key in list(output):
            value, inner = pop_conflicts(output[key])
            found.extend(inner)
            if isinstance(output[key], OutputConflict):
                del output[key]
            else:
                output[key] = value
    return output, found
