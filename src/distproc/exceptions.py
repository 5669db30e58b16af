"""Every exception and warning distproc raises, in one module.

Every error derives from :class:`DistprocError` and from the builtin it refines, so ``except ValueError``
keeps working. Errors carry the dataset, file, tree and partition they concern, and their message says
what was expected, what was received and how to fix it. The subpackages re-export their own errors
(``distproc.systematics.BinningError``, ``distproc.inference.ModelLoadError``, ``distproc.fit.FitError``);
they are defined here.

One pickling rule holds for every subclass: an error rebuilds with the same type, message and attributes
after pickling, so an error raised on a Dask worker keeps its context when it reaches the client. A
subclass only sets its attributes in ``__init__``; it needs no pickling code of its own.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from distproc._paths import is_parquet

__all__ = (
    "BackendUnavailableError",
    "BinningError",
    "CheckpointError",
    "ChecksumError",
    "ClusterError",
    "ConfigError",
    "CorrectionNotFoundError",
    "DaskModeError",
    "DistprocError",
    "DuplicateVariationError",
    "FileChangedError",
    "FilesetError",
    "FitError",
    "GPUUnavailableWarning",
    "HistogramNotFoundError",
    "InferenceError",
    "InferenceInputError",
    "InferenceWarning",
    "InputIntegrityError",
    "InputsError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PartitionError",
    "ProcessorLoadError",
    "ReadError",
    "RunInterrupted",
    "RunStopped",
    "SystematicsError",
    "format_options",
    "near_misses",
)


def near_misses(name: str, options: Iterable[str], n: int = 5) -> list[str]:
    """The options closest to *name* (for "did you mean" hints)."""
    return difflib.get_close_matches(name, [str(o) for o in options], n=n, cutoff=0.5)


def format_options(name: str, options: Iterable[str], what: str = "keys") -> str:
    """``Did you mean 'x'? Available keys: 'a', 'b', ...`` for an error message."""
    options = sorted(str(o) for o in options)
    close = near_misses(name, options)
    shown = ", ".join(repr(o) for o in options[:20]) + (", ..." if len(options) > 20 else "")
    hint = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}Available {what}: {shown or '(none)'}"


def _rebuild(cls: type[DistprocError], args: tuple[object, ...], state: dict[str, object]) -> DistprocError:
    """The error *cls* with *args* and attributes *state*, without running ``__init__`` again."""
    # ``cls.__new__`` may be a builtin that refuses *cls* (ValueError's for an OSError subclass): take
    # the one of the builtin that lays the instance out (``__base__``), as ``cls(...)`` itself does.
    base: type = cls
    while base.__module__ != "builtins":
        base = base.__base__
    err = base.__new__(cls)
    err.args = args
    for name, value in state.items():
        setattr(err, name, value)
    return err


class DistprocError(Exception):
    """Base class of every distproc error.

    Errors raised on a worker travel back to the client by pickling. Pickling keeps the type, ``args``
    (the formatted message) and every attribute, whatever the subclass's ``__init__`` signature: the
    error is rebuilt without calling ``__init__`` again, so a message is never formatted twice and no
    keyword argument is lost.

    Examples
    --------
    >>> import pickle
    >>> err = FilesetError("glob matched no file", dataset="dy", file="dy_*.root")
    >>> back = pickle.loads(pickle.dumps(err))
    >>> type(back).__name__, back.dataset, str(back) == str(err)
    ('FilesetError', 'dy', True)
    """

    def __reduce__(self) -> tuple[object, ...]:
        # The builtin's own state: ``__dict__`` plus what lives in C slots (ImportError's name and path).
        reduced = super().__reduce__()
        state = reduced[2] if len(reduced) > 2 and reduced[2] else {}
        return (_rebuild, (type(self), self.args, dict(state)))


class ConfigError(DistprocError, ValueError):
    """A configuration value (YAML or keyword argument) is missing, unknown or of the wrong type."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"{message}{where}")


class CheckpointError(ConfigError):
    """A checkpoint cannot be used: made by another processor or options, or its path is not a directory."""


class RunInterrupted(DistprocError, RuntimeError):
    """The run stopped before it finished (scheduler lost); a rerun resumes from its checkpoint."""


class FilesetError(DistprocError, ValueError):
    """A fileset is malformed, or names a file or tree that cannot be used."""

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None = None,
        file: str | None = None,
        treename: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.file = file
        self.treename = treename
        parts = [message]
        if file is not None and file not in message:  # a message naming its file does not repeat it
            parts.append(f"in file {file}")
        if treename is not None and not (file is not None and is_parquet(file)):  # Parquet has no tree
            parts.append(f"tree {treename!r}")
        if dataset is not None:
            parts.append(f"of dataset {dataset!r}")
        super().__init__("\n    ".join(parts))


class ReadError(FilesetError, OSError):
    """A ROOT file could not be opened or read (missing, truncated, corrupt, or server down)."""


class InputIntegrityError(ReadError):
    """An input file is not what its fileset or preprocessing recorded (see :mod:`distproc.integrity`)."""


class FileChangedError(InputIntegrityError):
    """An input file differs at processing time from what preprocessing recorded of it (uuid, size,
    modification time, entries): its partitions are not read (see :mod:`distproc.integrity`)."""


class ChecksumError(InputIntegrityError):
    """An input file's checksum differs from the one its fileset gives (or could not be computed) with
    ``verify_checksums``: its partitions are not trusted (see :mod:`distproc.integrity`)."""


class PartitionError(DistprocError, RuntimeError):
    """A partition failed while being read or processed; carries where and the worker's traceback.

    This is what a failed partition becomes for the user: the engine records each failure as a
    :class:`~distproc.report.PartitionFailure` in the run report, and a failure surfaced as an
    exception is a ``PartitionError`` with the partition's dataset, file, tree and entry range and the
    worker's traceback as text (the original exception object may not unpickle on the client).

    :func:`distproc.run` raises it after the run when a partition failed (unless ``allow_failures=True``);
    then ``result`` is the partial :class:`~distproc.report.RunResult` and ``report`` its report, so nothing
    the run did is lost.
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str,
        file: str,
        treename: str,
        entry_start: int,
        entry_stop: int,
        traceback: str = "",
        result: Any = None,
    ) -> None:
        self.dataset = dataset
        self.file = file
        self.treename = treename
        self.entry_start = entry_start
        self.entry_stop = entry_stop
        self.traceback = traceback
        self.result = result
        self.report = getattr(result, "report", None)
        shown = f"\ntraceback of the failure:\n{traceback.rstrip()}" if traceback else ""
        tree = "" if is_parquet(file) else f" of tree {treename!r}"  # Parquet input has no tree
        super().__init__(
            f"{message}\n    in partition entries {entry_start}-{entry_stop}{tree}"
            f"\n    in file {file}\n    of dataset {dataset!r}{shown}"
        )


class DaskModeError(DistprocError, TypeError):
    """A processor's dask-awkward output cannot be evaluated as asked: a dask-awkward processor run in
    the default mode, or an output of a dask-mode run that cannot be split into partitions."""

    def __init__(self, message: str, *, output: str | None = None) -> None:
        self.output = output
        super().__init__(message)


class RunStopped(RunInterrupted):
    """A run stopped before its end (e.g. no worker left for ``no_workers_timeout`` seconds).

    What was finished is kept (in the checkpoint, where one is written); the message says how to resume.
    """


class ProcessorLoadError(DistprocError, ImportError):
    """A processor given as ``path/to/file.py:ClassName`` could not be imported or instantiated."""


class ClusterError(DistprocError, RuntimeError):
    """A cluster could not be started or reached, or its workers are incompatible."""


class SystematicsError(DistprocError, ValueError):
    """A systematic variation, binned lookup or correction is ill-defined or used wrongly.

    :mod:`distproc.systematics` raises the subclasses below; catch this base class unless you need to
    tell the cases apart.
    """


class BinningError(SystematicsError):
    """Bin edges are not strictly increasing, or the values' shape does not match the edges.

    Examples
    --------
    >>> from distproc.systematics import BinnedLookup, BinningError
    >>> try:
    ...     BinnedLookup(edges=[0.0, 2.0, 1.0], values=[1.0, 1.0])
    ... except BinningError as err:
    ...     print(str(err).splitlines()[0])  # doctest: +ELLIPSIS
    BinnedLookup 'lookup': edges of axis 0 ('x0') must be strictly increasing, but edges[2]=1.0 <= ...
    """


class CorrectionNotFoundError(SystematicsError):
    """A correction name is not in the CorrectionSet JSON file (the message lists the names that are).

    Examples
    --------
    >>> from distproc.systematics import CorrectionNotFoundError
    >>> issubclass(CorrectionNotFoundError, ValueError)
    True
    """


class InputsError(SystematicsError):
    """A lookup or correction got the wrong number, names or kinds of inputs.

    Examples
    --------
    >>> from distproc.systematics import BinnedLookup, InputsError
    >>> sf = BinnedLookup(edges=[0.0, 1.0], values=[2.0], inputs=("pt",))
    >>> try:
    ...     sf(1.0, 2.0)
    ... except InputsError as err:
    ...     print(err)
    BinnedLookup 'lookup' takes 1 input ('pt'), got 2 positional
    """


class DuplicateVariationError(SystematicsError):
    """Two shape variations produce the same name (or one is called ``"nominal"``).

    Examples
    --------
    >>> from distproc.systematics import DuplicateVariationError, Scale, ShapeVariations
    >>> try:
    ...     ShapeVariations(Scale("jes", 0.02), Scale("jes", 0.03))
    ... except DuplicateVariationError as err:
    ...     print(str(err).splitlines()[0])
    shape variation name 'jes_up' is used twice: by Scale('jes', ...) and by Scale('jes', ...)
    """


class InferenceError(DistprocError, ValueError):
    """An ONNX model cannot be loaded, or its inputs do not match what the model expects.

    :mod:`distproc.inference` raises the subclasses below and, where one fits, the matching builtin: a
    missing model file is a ``FileNotFoundError``, a missing runtime package an ``ImportError``.
    """


class ModelLoadError(InferenceError):
    """A model file cannot be read, or its content is not a valid ONNX model."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist."""


class InferenceInputError(InferenceError):
    """The arrays given to a model do not match its inputs (name, rank, feature count, dtype, NaN)."""

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)


class BackendUnavailableError(InferenceError, ImportError):
    """An inference backend needs a package or a device that this process does not have."""


class InferenceWarning(UserWarning):
    """Base class of the warnings emitted by :mod:`distproc.inference`."""


class GPUUnavailableWarning(InferenceWarning):
    """A GPU backend was asked for explicitly but cannot be used here; inference runs on the CPU."""


class FitError(DistprocError, ValueError):
    """The fit inputs are inconsistent (a histogram is missing, has other bins than its region, ...)."""


class HistogramNotFoundError(FitError):
    """A histogram the fit needs is not in the histogram file; carries ``histogram`` and ``file``."""

    def __init__(self, message: str, *, histogram: str, file: str) -> None:
        self.histogram = histogram
        self.file = file
        super().__init__(f"{message}\n    histogram {histogram!r}\n    in file {file}")
