"""correctionlib corrections that pickle as (path, name, hash) and load once per run on each worker."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from distproc.exceptions import CorrectionNotFoundError, InputsError, SystematicsError, format_options
from distproc.systematics._arrays import bind_inputs, check_numeric, map_flat

__all__ = ("Correction", "load_correction_set")

#: The kind of the compiled correction sets in a run's worker state
#: (:class:`distproc.engine.state.RunState`), keyed by (absolute path, sha256 of the file's bytes).
CACHE_KIND = "correction"


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        msg = (
            f"cannot read correction file {path} on host {os.uname().nodename}: {err.strerror or err}; "
            "workers need the file at the same path (use a shared filesystem or ship it with the job)"
        )
        raise SystematicsError(msg) from err


def _parse(raw: bytes, path: str) -> Any:
    import correctionlib

    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    try:
        return correctionlib.CorrectionSet.from_string(text.decode())
    except Exception as err:  # correctionlib raises RuntimeError/ValueError/pydantic errors
        msg = f"{path} is not a valid correctionlib CorrectionSet JSON: {err}"
        raise SystematicsError(msg) from err


def load_correction_set(path: str | os.PathLike[str], digest: str | None = None) -> tuple[str, Any]:
    """Load (or fetch from the run's worker state) a compiled :class:`correctionlib.CorrectionSet`.

    The cache (:func:`distproc.engine.state.current_state`) is keyed by absolute path and the SHA-256 of
    the file's bytes, so a file is parsed once per run on each worker process (outside a run, once per
    process); a file edited in place gets a new key.

    Parameters
    ----------
    path
        A CorrectionSet JSON file (optionally gzip-compressed).
    digest
        The expected SHA-256 hex digest. When given and cached, the file is not even read; when the file
        on disk has a different digest, :class:`~distproc.exceptions.SystematicsError` is raised.

    Returns
    -------
    tuple of (str, correctionlib.CorrectionSet)
        The file's digest and the compiled set.

    Examples
    --------
    >>> digest, cset = load_correction_set("processors/data/corrections.json")
    >>> sorted(cset.keys())
    ['btag_var', 'jes_delta', 'lepton_sf']
    >>> load_correction_set("processors/data/corrections.json", digest)[1] is cset
    True
    """
    from distproc.engine.state import current_state

    abspath = os.path.abspath(os.fspath(path))
    state = current_state()
    if digest is not None:
        cset = state.lookup(CACHE_KIND, (abspath, digest))
        if cset is not None:
            return digest, cset
    raw = _read(abspath)
    actual = hashlib.sha256(raw).hexdigest()
    if digest is not None and actual != digest:
        msg = (
            f"correction file {abspath} changed since the Correction was created: expected sha256 "
            f"{digest[:16]}..., found {actual[:16]}...; restore the file or re-create the Correction"
        )
        raise SystematicsError(msg)
    return actual, state.cached(CACHE_KIND, (abspath, actual), lambda: _parse(raw, abspath))


def _available(cset: Any) -> list[str]:
    return [*cset.keys(), *cset.compound.keys()]


class Correction:
    """One named correction of a correctionlib CorrectionSet JSON, evaluated on jagged arrays.

    The object holds only the file's absolute path, the correction name and the file's SHA-256, so
    pickling it (e.g. inside a Dask graph) costs a few hundred bytes; the compiled CorrectionSet is
    loaded once per run on each worker process by :func:`load_correction_set` and cached there.

    Calling it binds arguments to the correction's inputs (by position or by input name), flattens
    jagged arrays, calls correctionlib's vectorised ``evaluate`` once and rebuilds the structure.
    Scalars and strings broadcast; string inputs take one Python ``str``. It works on eager, CuPy-backed
    (evaluated on the host, returned on the device), typetracer and dask-awkward arrays, and on NumPy
    arrays and scalars. The result is float64.

    NaN, negative and out-of-range inputs follow the correction's own definition in the JSON (its
    ``flow``: ``"clamp"`` puts out-of-range values in the first/last bin, and correctionlib sorts NaN
    past the last edge, so NaN gets the last bin; ``"error"`` raises).

    Parameters
    ----------
    path
        CorrectionSet JSON file (optionally ``.gz``). Workers need it at the same absolute path.
    name
        The correction (or compound correction) name inside the set.

    Raises
    ------
    CorrectionNotFoundError
        *name* is not in the file; the message lists the available names.
    SystematicsError
        The file cannot be read or is not a CorrectionSet.

    Examples
    --------
    >>> import awkward as ak
    >>> sf = Correction("processors/data/corrections.json", "lepton_sf")
    >>> sf.inputs
    ('pt', 'abseta', 'systematic')
    >>> pt = ak.Array([[25.0, 60.0], []])
    >>> eta = ak.Array([[0.5, -1.0], []])
    >>> sf(pt, abs(eta), "nominal").tolist()
    [[0.942, 0.956], []]
    >>> sf(pt=pt, abseta=abs(eta), systematic="up").tolist()
    [[0.952, 0.971], []]
    """

    def __init__(self, path: str | os.PathLike[str], name: str) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.name = str(name)
        self.digest, cset = load_correction_set(self.path)
        available = _available(cset)
        if self.name not in available:
            msg = (
                f"correction {self.name!r} not found in {self.path}. "
                f"{format_options(self.name, available, 'corrections')}"
            )
            raise CorrectionNotFoundError(msg)

    @classmethod
    def names_in(cls, path: str | os.PathLike[str]) -> list[str]:
        """The correction and compound-correction names in a CorrectionSet file.

        Examples
        --------
        >>> Correction.names_in("processors/data/corrections.json")
        ['btag_var', 'jes_delta', 'lepton_sf']
        """
        return _available(load_correction_set(path)[1])

    def _evaluator(self) -> Any:
        """The compiled correctionlib correction (cached per process, never pickled)."""
        evaluator = self.__dict__.get("_compiled")
        if evaluator is None:
            cset = load_correction_set(self.path, self.digest)[1]
            evaluator = cset[self.name] if self.name in list(cset.keys()) else cset.compound[self.name]
            self.__dict__["_compiled"] = evaluator
        return evaluator

    @property
    def inputs(self) -> tuple[str, ...]:
        """Input names, in the order the correction takes them."""
        return tuple(v.name for v in self._evaluator().inputs)

    @property
    def input_types(self) -> tuple[str, ...]:
        """Input types (``"real"``, ``"int"`` or ``"string"``), in input order."""
        return tuple(v.type for v in self._evaluator().inputs)

    @property
    def description(self) -> str:
        """The correction's description from the JSON."""
        return self._evaluator().description or ""

    def __call__(self, *args: Any, **named: Any) -> Any:
        """Evaluate on arrays or scalars given by position or by input name."""
        owner = f"correction {self.name!r} (in {self.path})"
        names = self.inputs
        typed = ", ".join(f"{n}: {t}" for n, t in zip(names, self.input_types, strict=True))
        try:
            bound = bind_inputs(owner, names, args, named)
        except InputsError as err:
            msg = f"{err}\n    inputs: {typed}"
            raise InputsError(msg) from None
        for n, kind, value in zip(names, self.input_types, bound, strict=True):
            if kind == "string":
                if not isinstance(value, str):
                    msg = (
                        f"{owner}: input {n!r} is a string input; pass one Python str "
                        f"(e.g. 'nominal'), got {type(value).__name__}"
                    )
                    raise InputsError(msg)
            else:
                check_numeric(value, f"{owner} input {n!r} ({kind})")
        return map_flat(_CorrectionKernel(self), bound, dtype="float64", label=f"correction-{self.name}")

    def evaluate(self, *args: Any, **named: Any) -> Any:
        """Alias of calling the object, matching correctionlib's spelling.

        Examples
        --------
        >>> Correction("processors/data/corrections.json", "btag_var").evaluate(100.0, 0, "up")
        np.float64(1.15)
        """
        return self(*args, **named)

    def __getstate__(self) -> dict[str, str]:
        return {"path": self.path, "name": self.name, "digest": self.digest}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.path = state["path"]
        self.name = state["name"]
        self.digest = state["digest"]

    def __dask_tokenize__(self) -> tuple[str, ...]:
        return ("distproc.Correction", self.path, self.name, self.digest)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Correction):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.path, self.name, self.digest))

    def __repr__(self) -> str:
        return f"Correction({self.path!r}, {self.name!r})"


class _CorrectionKernel:
    """Picklable kernel: run correctionlib's evaluate on flat host arrays."""

    def __init__(self, correction: Correction) -> None:
        self.correction = correction

    def __call__(self, xp: ModuleType, *xs: Any) -> Any:
        evaluator = self.correction._evaluator()
        args: list[Any] = []
        for x, kind in zip(xs, self.correction.input_types, strict=True):
            if isinstance(x, str):
                args.append(x)
                continue
            if isinstance(x, (int, float, np.number)):
                args.append(int(x) if kind == "int" else float(x))
                continue
            host = x.get() if hasattr(x, "get") and xp is not np else np.asarray(x)
            args.append(host.astype(np.int64 if kind == "int" else np.float64, copy=False))
        out = evaluator.evaluate(*args)
        return xp.asarray(out, dtype=xp.float64)

    def __dask_tokenize__(self) -> tuple[str, ...]:
        return ("correction-kernel", *self.correction.__dask_tokenize__())
