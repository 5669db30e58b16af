"""The processor API: what a physicist writes.

A processor is a class whose :meth:`~Processor.process` receives one partition of events as coffea
NanoEvents and returns an addable accumulator (a dict of :class:`hist.Hist`, numbers, ...). It is
compatible with coffea's ``ProcessorABC``: a coffea processor runs under distproc unchanged.

Processors given as ``path/to/file.py:ClassName`` (config files, the CLI) are loaded by
:func:`load_processor`, which also arranges for that file — and local helper modules it imports — to be
pickled by value, so workers need not have it installed.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coffea.processor import ProcessorABC

from distproc._compat import cloudpickle_dispatch_table
from distproc.exceptions import ProcessorLoadError, format_options

__all__ = ("Processor", "load_processor")


class Processor(ProcessorABC):
    """Base class for distproc processors (a coffea ``ProcessorABC``).

    Either override :meth:`process`, or declare ``shape_variations`` (a
    :class:`distproc.systematics.ShapeVariations`) and override :meth:`process_variation`, which then runs
    once per variation with the varied events; every histogram it returns gains a ``variation`` axis.

    **What** ``process(events)`` **receives**: one partition (an entry range of one file) as coffea
    NanoEvents in virtual mode — an awkward array with one record per event, whose collections
    (``events.Muon``, ``events.Jet``, ``events.Electrons`` for PHYSLITE, ...) follow the run's ``schema``;
    a branch is read from the file when the code first touches it. ``events.metadata`` holds the
    dataset's metadata from the fileset plus ``dataset``, ``filename``, ``treename``, ``entrystart``
    and ``entrystop``. ``len(events)`` is the number of events in the partition.

    **What it may return**: an accumulator, i.e. anything coffea's ``accumulate`` can add over
    partitions — usually a (nested) dict whose values are :class:`hist.Hist`, numbers, ``set`` s,
    ``list`` s, :class:`~distproc.columns.ColumnFiles` (from a
    :class:`~distproc.columns.ColumnWriter`), or other dicts. Every partition should return the same
    keys with compatible histograms (same axes); ``None`` contributes nothing. It must pickle (it
    travels back from the workers). :meth:`postprocess` then sees the sum, once, on the client.

    **Where it runs**: on the cluster's workers, one partition per call; the processor instance is
    pickled and shipped once per worker, so its attributes must pickle and it must not rely on state
    shared between calls. An exception in ``process`` fails that partition: it is recorded with its
    traceback, which names the processor's file and line.

    Examples
    --------
    >>> import hist, distproc
    >>> class JetPt(distproc.Processor):
    ...     def process(self, events):
    ...         h = hist.Hist.new.Reg(50, 0, 500, name="pt").Weight()
    ...         h.fill(pt=events.Jet.pt[:, 0])
    ...         return {"jet_pt": h, "events": len(events)}
    """

    shape_variations: Any = None

    def process(self, events: Any) -> Any:
        """Process one partition of *events*; return an addable accumulator."""
        if self.shape_variations is None:
            msg = f"{type(self).__name__} must override process(events) or declare shape_variations"
            raise NotImplementedError(msg)
        from distproc.systematics import run_variations

        return run_variations(events, self.shape_variations, self.process_variation)

    def process_variation(self, events: Any, variation: str) -> Any:
        """Process *events* under one shape *variation* (used with ``shape_variations``)."""
        msg = f"{type(self).__name__} declares shape_variations but does not override process_variation"
        raise NotImplementedError(msg)

    def postprocess(self, accumulator: Any) -> Any:
        """Transform the fully reduced accumulator (runs once, on the client). Default: unchanged."""
        return accumulator


#: Source files of processors loaded by :func:`load_processor` (and their local helper modules).
_USER_FILES: set[str] = set()
#: The code reducer of the cloudpickle checked with (3.1); see :func:`_keep_code_file_names`.
_CLOUDPICKLE_CODE_REDUCE: Any = None


def _code_reduce_keeping_file(code: Any) -> Any:
    """cloudpickle's code reducer, keeping ``co_filename`` for code compiled from a processor's file."""
    reducer, args = _CLOUDPICKLE_CODE_REDUCE(code)
    if code.co_filename in _USER_FILES:
        args = tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)
    return reducer, args


def _keep_code_file_names() -> None:
    """Make cloudpickle keep the file name of the user's processor code (once per process).

    A module pickled by value (see :func:`_pickle_local_modules`) has its functions' code objects
    rebuilt on the workers, and cloudpickle replaces their ``co_filename`` with ``"<dynamic-code>"``, so
    a traceback from a worker said ``File "<dynamic-code>", line 32``. The real path is kept for the
    files in :data:`_USER_FILES` only; other code is pickled as cloudpickle does. This extends
    cloudpickle's reducer table (:func:`distproc._compat.cloudpickle_dispatch_table`;
    ``tests/test_processor_errors.py`` pins that the traceback names the file); with a cloudpickle
    without that table, tracebacks show ``<dynamic-code>`` again and nothing else changes.
    """
    global _CLOUDPICKLE_CODE_REDUCE
    import types

    table = cloudpickle_dispatch_table()
    if _CLOUDPICKLE_CODE_REDUCE is not None or table is None or types.CodeType not in table:
        return
    _CLOUDPICKLE_CODE_REDUCE = table[types.CodeType]
    table[types.CodeType] = _code_reduce_keeping_file


def keep_script_file_names(processor: Any) -> None:
    """Let worker tracebacks name the script for a processor defined in ``__main__`` (a plain script or a
    notebook cell, which cloudpickle pickles by value, as it does a file given to
    :func:`load_processor`): its code keeps ``co_filename`` (:func:`_keep_code_file_names`).

    Examples
    --------
    >>> class P:  # in a script run as ``python analysis.py``
    ...     def process(self, events):
    ...         return {}
    >>> keep_script_file_names(P())
    """
    cls = processor if inspect.isfunction(processor) else type(processor)
    if cls.__module__ != "__main__":
        return
    functions = [cls] if inspect.isfunction(cls) else [f for f in vars(cls).values() if inspect.isfunction(f)]
    _USER_FILES.update(f.__code__.co_filename for f in functions)  # a notebook cell has a file name too
    _keep_code_file_names()


def _module_from_file(path: Path) -> Any:
    name = f"distproc_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot import processor file {path}: not a Python module"
        raise ProcessorLoadError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.parent)
    before = set(sys.modules)
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        msg = f"importing processor file {path} failed: {type(err).__name__}: {err}"
        raise ProcessorLoadError(msg) from err
    finally:
        sys.path.remove(directory)
    _pickle_local_modules(module, path.parent, set(sys.modules) - before)
    return module


def _pickle_local_modules(module: Any, directory: Path, new: set[str]) -> None:
    """Pickle the processor module and helpers imported from its directory by value (workers lack them)."""
    import cloudpickle

    _keep_code_file_names()
    cloudpickle.register_pickle_by_value(module)
    _USER_FILES.add(str(module.__file__))
    for name in new:
        mod = sys.modules.get(name)
        file = getattr(mod, "__file__", None)
        if file and Path(file).resolve().is_relative_to(directory.resolve()):
            cloudpickle.register_pickle_by_value(mod)
            _USER_FILES.add(str(file))


def load_processor(spec: str, args: Mapping[str, Any] | None = None, *, base_dir: Path | None = None) -> Any:
    """Instantiate the processor named by ``"path/to/file.py:ClassName"`` (or ``"package.module:Class"``).

    Parameters
    ----------
    spec
        File path (relative to *base_dir*) or importable module, a colon, and the class name.
    args
        Keyword arguments for the class's constructor.

    Notes
    -----
    The file (and helper modules imported from its directory) is pickled by value, so workers need not
    have it. Module-level objects that pickle *by reference* to the file's module cannot reach workers:
    a ``functools.cache``-decorated function is one (its wrapper is pickled by name). Use a plain dict
    as the cache instead.

    Examples
    --------
    >>> from distproc import load_processor
    >>> proc = load_processor("processors/demo.py:DemoProcessor")  # doctest: +SKIP
    """
    target, sep, class_name = str(spec).rpartition(":")
    if not sep or not target or not class_name:
        msg = f"processor must be given as 'path/to/file.py:ClassName', got {spec!r}"
        raise ProcessorLoadError(msg)
    if target.endswith(".py"):
        path = Path(target)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            msg = f"processor file not found: {path}"
            raise ProcessorLoadError(msg)
        module = _module_from_file(path.resolve())
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            msg = f"cannot import processor module {target!r}: {err}"
            raise ProcessorLoadError(msg) from err
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        classes = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
        msg = f"no class {class_name!r} in {target}. {format_options(class_name, classes, 'classes')}"
        raise ProcessorLoadError(msg) from None
    try:
        return cls(**dict(args or {}))
    except Exception as err:  # the user's constructor may raise anything: name the class and arguments
        msg = (
            f"could not create {class_name} from {target} with arguments {dict(args or {})}: "
            f"{type(err).__name__}: {err}"
        )
        raise ProcessorLoadError(msg) from err
