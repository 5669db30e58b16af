"""Counter-based, vectorised random numbers: the same inputs give the same numbers on any chunking.

Each value is a pure function of integer keys (e.g. run, luminosity block, event number and object
index), a stream name and a seed: the keys are folded through the splitmix64 finaliser on ``uint64``
arrays, two 53-bit uniforms are drawn from the result and turned into a standard normal by Box-Muller.
Nothing depends on how events are split into chunks, how many workers run, or on earlier calls.
"""

from __future__ import annotations

import hashlib
from types import ModuleType
from typing import Any

import numpy as np

from distproc.systematics._arrays import map_flat

__all__ = ("deterministic_normal", "stream_key")

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def stream_key(name: str, seed: int = 0) -> int:
    """A stable 64-bit key for a stream name and seed (unlike ``hash()``, equal in every process).

    Examples
    --------
    >>> stream_key("jer") == stream_key("jer")
    True
    >>> stream_key("jer") != stream_key("jer", seed=1)
    True
    """
    digest = hashlib.blake2b(f"{int(seed)}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix64(xp: ModuleType, x: Any) -> Any:
    z = x + xp.uint64(_GOLDEN)
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_MIX1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_MIX2)
    return z ^ (z >> xp.uint64(31))


def _unit(xp: ModuleType, bits: Any) -> Any:
    """Uniform in the open interval (0, 1) from the top 53 bits."""
    return ((bits >> xp.uint64(11)).astype(xp.float64) + 0.5) * (1.0 / 9007199254740992.0)


class _NormalKernel:
    def __init__(self, key: int) -> None:
        self.key = key

    def __call__(self, xp: ModuleType, *keys: Any) -> Any:
        arrays = xp.broadcast_arrays(*(xp.asarray(k) for k in keys))
        with np.errstate(over="ignore"):
            h = xp.full(arrays[0].shape, self.key, dtype=xp.uint64)
            for k in arrays:
                h = _splitmix64(xp, h ^ k.astype(xp.uint64))
            a = _splitmix64(xp, h)
            b = _splitmix64(xp, a)
        return xp.sqrt(-2.0 * xp.log(_unit(xp, a))) * xp.cos(2.0 * np.pi * _unit(xp, b))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("deterministic-normal", self.key)


def deterministic_normal(*keys: Any, name: str, seed: int = 0) -> Any:
    """Standard normal numbers that are a pure function of integer *keys*, *name* and *seed*.

    Parameters
    ----------
    *keys
        Integer arrays (awkward, possibly jagged; dask-awkward; NumPy; CuPy) or scalars, broadcast
        together like awkward arithmetic (a per-event key meets every object of its event). Negative
        values are used through their two's complement, so they are valid keys too.
    name
        The stream name (e.g. the variation name); different names give independent numbers.
    seed
        An extra integer to draw a different set for the same name.

    Returns
    -------
    array
        float64 numbers with the broadcast structure of *keys*.

    Examples
    --------
    >>> import awkward as ak
    >>> event = ak.Array([101, 102])
    >>> index = ak.local_index(ak.Array([[1.0, 2.0], [3.0]]), axis=1)
    >>> z = deterministic_normal(event, index, name="jer")
    >>> ak.num(z).tolist()
    [2, 1]
    >>> float(z[1, 0]) == float(deterministic_normal(102, 0, name="jer"))
    True
    """
    if not keys:
        msg = "deterministic_normal needs at least one key array"
        raise TypeError(msg)
    return map_flat(_NormalKernel(stream_key(name, seed)), keys, dtype="float64", label=f"normal-{name}")
