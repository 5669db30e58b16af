"""Exceptions raised by distproc.

Every error derives from :class:`DistprocError` and from the builtin it refines, so ``except ValueError``
keeps working. Errors carry the dataset, file, tree and partition they concern, and their message says
what was expected, what was received and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = (
    "ClusterError",
    "ConfigError",
    "DistprocError",
    "FilesetError",
    "InferenceError",
    "PartitionError",
    "ProcessorLoadError",
    "ReadError",
    "SystematicsError",
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


def _rebuild(cls: type, args: tuple, kwargs: dict) -> DistprocError:
    return cls(*args, **kwargs)


class DistprocError(Exception):
    """Base class of every distproc error.

    Errors raised on a worker travel back to the client by pickling; subclasses with keyword arguments
    call :meth:`_keep` so that they rebuild with the same type and attributes there.
    """

    _init: tuple[tuple, dict] | None = None

    def _keep(self, *args: object, **kwargs: object) -> None:
        self._init = (args, kwargs)

    def __reduce__(self) -> tuple:
        args, kwargs = self._init or (self.args, {})
        return (_rebuild, (type(self), args, kwargs))


class ConfigError(DistprocError, ValueError):
    """A configuration value (YAML or keyword argument) is missing, unknown or of the wrong type."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self._keep(message, key=key, source=source)
        self.key = key
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"{message}{where}")


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
        self._keep(message, dataset=dataset, file=file, treename=treename)
        self.dataset = dataset
        self.file = file
        self.treename = treename
        parts = [message]
        if file is not None:
            parts.append(f"in file {file}")
        if treename is not None:
            parts.append(f"tree {treename!r}")
        if dataset is not None:
            parts.append(f"of dataset {dataset!r}")
        super().__init__("\n    ".join(parts))


class ReadError(FilesetError, OSError):
    """A ROOT file could not be opened or read (missing, truncated, corrupt, or server down)."""


class PartitionError(DistprocError, RuntimeError):
    """A partition failed while being read or processed; carries where and the worker's traceback."""

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
    ) -> None:
        self._keep(
            message,
            dataset=dataset,
            file=file,
            treename=treename,
            entry_start=entry_start,
            entry_stop=entry_stop,
            traceback=traceback,
        )
        self.dataset = dataset
        self.file = file
        self.treename = treename
        self.entry_start = entry_start
        self.entry_stop = entry_stop
        self.traceback = traceback
        super().__init__(
            f"{message}\n    in partition entries {entry_start}-{entry_stop} of tree {treename!r}"
            f"\n    in file {file}\n    of dataset {dataset!r}"
        )


class ProcessorLoadError(DistprocError, ImportError):
    """A processor given as ``path/to/file.py:ClassName`` could not be imported or instantiated."""


class ClusterError(DistprocError, RuntimeError):
    """A cluster could not be started or reached, or its workers are incompatible."""


class SystematicsError(DistprocError, ValueError):
    """A systematic variation, binned lookup or correction is ill-defined or used wrongly."""


class InferenceError(DistprocError, ValueError):
    """An ONNX model cannot be loaded, or its inputs do not match what the model expects."""
