"""`OnnxModel`: an ONNX model that a processor builds once and calls on awkward arrays in every chunk."""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from distproc._compat import dask_awkward_meta
from distproc.exceptions import (
    GPUUnavailableWarning,
    InferenceError,
    InferenceInputError,
    ModelLoadError,
    ModelNotFoundError,
    format_options,
)
from distproc.inference._cache import columnar_name, default_threads, get_session
from distproc.inference._features import LAYOUTS, Prepared, backend_of, lazy_awkward_errors, prepare
from distproc.inference._spec import TensorSpec
from distproc.inference.backends import (
    CPUBackend,
    InferenceBackend,
    get_backend,
    import_cupy,
    import_onnxruntime,
    is_cupy,
    resolve_backend,
    to_host,
)

__all__ = ("OnnxModel",)

_NOTHING: Any = object()


def _ort_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("InvalidProtobuf", "InvalidGraph", "InvalidArgument", "Fail", "NoSuchFile", "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        msg = f"ONNX model file not found: {path}"
        raise ModelNotFoundError(msg, path=path) from err
    except OSError as err:
        msg = f"cannot read ONNX model file {path}: {err}"
        raise ModelLoadError(msg, path=path) from err


def _inspect(model: bytes, source: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs, from a throw-away single-threaded CPU session (also validates the file)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except _ort_errors() as err:
        msg = f"{source} is not a valid ONNX model (onnxruntime cannot load it): {err}"
        raise ModelLoadError(msg, path=source) from err
    inputs = tuple(TensorSpec.from_node_arg(arg) for arg in session.get_inputs())
    outputs = tuple(TensorSpec.from_node_arg(arg) for arg in session.get_outputs())
    for spec in inputs:
        if spec.dtype is None:
            msg = f"{source}: input {spec.name!r} has type {spec.type}; only tensor inputs are supported."
            raise ModelLoadError(msg, path=source)
    return inputs, outputs


class OnnxModel:
    """An ONNX model to call on awkward arrays, built once (e.g. in a processor's ``__init__``).

    The file is read once; the model object carries its bytes and options, pickles cheaply and
    deterministically, and builds its onnxruntime session lazily in each worker process, where a
    process-level cache (keyed by the model's SHA-256, the execution providers and the thread count)
    keeps it for every later chunk.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.
    backend : {"auto", "cpu", "cuda"} or InferenceBackend
        Where to run. ``"auto"`` (resolved in each worker) takes the GPU when onnxruntime-gpu and CuPy
        see one; ``"cuda"`` without a usable GPU warns (:class:`GPUUnavailableWarning`) and runs on CPU.
    features : list of str, or mapping input name -> list of str, optional
        Field names to take, in this order, from the record or mapping given for an input (so a whole
        collection such as ``events.Jet`` can be passed). Default: every field, in the given order.
    layout : {"auto", "events", "objects", "padded"} or mapping input name -> layout
        How features become rows (see :mod:`distproc.inference._features`). ``"auto"``: 1-D features
        give one row per event; jagged ones are ``padded`` when the input has rank 3, ``max_objects`` is
        given or the input width is a multiple of the feature count, else one row per object.
    max_objects : int or mapping, optional
        Objects per event for the ``padded`` layout (first N kept, missing ones set to *fill_value*).
    fill_value : float
        Value of padded objects and of missing (``None``) feature values.
    batch_size : int
        Rows per ``session.run`` call. On the CPU, where this process may use more CPUs than the
        session's ``threads``, the next batch is laid out on a background thread while the session runs
        the current one.
    outputs : str or list of str, optional
        Outputs to return. Default: every tensor output (sklearn's ZipMap outputs are skipped).
    squeeze : bool
        Return an output declared as ``(N, 1)`` as a 1-D array of N values.
    nan : {"pass", "raise"}
        ``"pass"`` (default) gives NaN inputs to the model unchanged (tree models route them as missing
        values, networks usually return NaN); ``"raise"`` rejects them with an error naming the features.
    threads : int, optional
        onnxruntime intra-op threads. Default: the Dask worker's ``nthreads`` in a worker, else the
        number of usable CPUs.

    Calling
    -------
    ``model(x)`` for a one-input model, ``model(name=x, other=y)`` (or ``model(**{"in:0": x})``) by input
    name. ``x`` is a mapping name -> array, a record array, or one array. Returns an awkward array aligned
    with the events (``events``/``padded`` layouts) or jagged like the objects (``objects`` layout); a
    record array with one field per output when several outputs are returned. On typetracer arrays the
    model does not run and a typetracer of the output type comes back; on dask-awkward arrays the call
    maps over the partitions.

    Examples
    --------
    >>> import awkward as ak, numpy as np, onnx
    >>> from onnx import TensorProto, helper
    >>> from distproc.inference import OnnxModel
    >>> w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1], [1.0, 10.0])
    >>> graph = helper.make_graph(
    ...     [helper.make_node("MatMul", ["x", "w"], ["y"])], "lin",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [w])
    >>> proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    >>> model = OnnxModel.from_bytes(proto.SerializeToString(), backend="cpu", features=["pt", "eta"])
    >>> jets = ak.Array([[{"pt": 1.0, "eta": 2.0}, {"pt": 3.0, "eta": 0.5}], []])
    >>> model(jets).tolist()
    [[21.0, 8.0], []]
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str | InferenceBackend = "auto",
        features: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        layout: str | Mapping[str, str] = "auto",
        max_objects: int | Mapping[str, int] | None = None,
        fill_value: float = 0.0,
        batch_size: int = 65536,
        outputs: str | Sequence[str] | None = None,
        squeeze: bool = True,
        nan: str = "pass",
        threads: int | None = None,
    ) -> None:
        source = os.fspath(path)
        if "_model" not in self.__dict__:  # from_bytes has set it
            self._model = _read(source)
        self.path = source
        self.digest = hashlib.sha256(self._model).hexdigest()
        self.inputs, self.outputs = _inspect(self._model, source)
        self.backend = get_backend(backend)
        names = [spec.name for spec in self.inputs]
        self._features = _per_input(features, "features", names, source)
        self._layout = _per_input(layout, "layout", names, source)
        self._max_objects = _per_input(max_objects, "max_objects", names, source)
        for name in names:
            feats = self._features[name]
            if feats is not None:
                if isinstance(feats, str) or not all(isinstance(f, str) for f in feats):
                    msg = f"features for input {name!r} must be a list of field names, given {feats!r}"
                    raise InferenceError(msg)
                if len(names) > 1 and not isinstance(features, Mapping):
                    msg = f"{source} has inputs {names}: give features as a mapping input name -> field names"
                    raise InferenceError(msg)
                self._features[name] = list(feats)
            if self._layout[name] not in LAYOUTS:
                hint = format_options(str(self._layout[name]), LAYOUTS, "layouts")
                msg = f"unknown layout {self._layout[name]!r} for input {name!r}. {hint}"
                raise InferenceError(msg)
            n = self._max_objects[name]
            if n is not None and (not isinstance(n, int | np.integer) or n < 1):
                msg = f"max_objects for input {name!r} must be a positive integer, given {n!r}"
                raise InferenceError(msg)
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            msg = f"batch_size must be a positive integer, given {batch_size!r}"
            raise InferenceError(msg)
        if threads is not None and (not isinstance(threads, int | np.integer) or threads < 1):
            msg = f"threads must be a positive integer or None, given {threads!r}"
            raise InferenceError(msg)
        if nan not in ("pass", "raise"):
            msg = f"nan must be 'pass' (give NaN to the model) or 'raise' (reject NaN), given {nan!r}"
            raise InferenceError(msg)
        self.fill_value = float(fill_value)
        self.batch_size = int(batch_size)
        self.threads = None if threads is None else int(threads)
        self.squeeze = bool(squeeze)
        self.nan = nan
        self.output_names = self._select_outputs(outputs)
        self._runtime: dict[frozenset[str], tuple[InferenceBackend, Any, frozenset[str]]] = {}

    @classmethod
    def from_bytes(cls, model: bytes, *, name: str = "<bytes>", **options: Any) -> OnnxModel:
        """A model from serialized ONNX bytes (``proto.SerializeToString()``); *options* as for the class.

        Examples
        --------
        >>> from distproc.inference import OnnxModel
        >>> OnnxModel.from_bytes(b"not onnx", name="junk.onnx")
        Traceback (most recent call last):
        ...
        distproc.exceptions.ModelLoadError: junk.onnx is not a valid ONNX model ...
        """
        self = cls.__new__(cls)
        self._model = bytes(model)
        self.__init__(name, **options)  # reads no file: _model is set
        return self

    def _select_outputs(self, outputs: str | Sequence[str] | None) -> tuple[str, ...]:
        tensors = [spec.name for spec in self.outputs if spec.dtype is not None]
        if outputs is None:
            if not tensors:
                msg = (
                    f"{self.path}: no output is a tensor ({', '.join(s.describe() for s in self.outputs)}). "
                    "Export sklearn classifiers with options={'zipmap': False}."
                )
                raise InferenceError(msg)
            return tuple(tensors)
        wanted = [outputs] if isinstance(outputs, str) else list(outputs)
        all_names = [spec.name for spec in self.outputs]
        for name in wanted:
            if name not in all_names:
                msg = f"{self.path} has no output {name!r}. {format_options(name, all_names, 'outputs')}"
                raise InferenceError(msg)
            if name not in tensors:
                msg = (
                    f"output {name!r} of {self.path} is not a tensor ({self._spec(name).type}); "
                    "export sklearn classifiers with options={'zipmap': False}."
                )
                raise InferenceError(msg)
        return tuple(wanted)

    def _spec(self, output: str) -> TensorSpec:
        return next(spec for spec in self.outputs if spec.name == output)

    # ------------------------------------------------------------------ pickling and dask tokens
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runtime"] = {}  # sessions never travel; each process builds (or reuses) its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        options = (repr(self.backend), self._features, self._layout, self._max_objects, self.fill_value)
        scalars = (self.batch_size, self.output_names, self.nan, self.threads, self.squeeze)
        return ("distproc.OnnxModel", self.digest, repr(options), scalars)

    def __repr__(self) -> str:
        ins = ", ".join(spec.describe() for spec in self.inputs)
        outs = ", ".join(self._spec(name).describe() for name in self.output_names)
        return f"OnnxModel({self.path!r}, backend={self.backend!r}, inputs=[{ins}], outputs=[{outs}])"

    # ------------------------------------------------------------------ calling
    def __call__(self, data: Any = _NOTHING, /, **inputs: Any) -> Any:
        feeds = self._feeds(data, inputs)
        from dask.base import is_dask_collection

        lazy = [is_dask_collection(v) for v in _leaves(feeds)]
        if any(lazy):
            if not all(lazy):
                msg = "mix of dask-awkward and in-memory arrays; give every input as dask-awkward arrays"
                raise InferenceInputError(msg)
            return self._map_partitions(feeds)
        return self._apply(feeds)

    def _feeds(self, data: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        names = [spec.name for spec in self.inputs]
        if data is not _NOTHING:
            if inputs:
                msg = "give the model one positional input, or its inputs by name, not both"
                raise InferenceInputError(msg)
            if len(names) > 1:
                args = ", ".join(f"{n}=..." if n.isidentifier() else f"**{{{n!r}: ...}}" for n in names)
                msg = f"{self.path} has {len(names)} inputs; pass them by name: model({args})"
                raise InferenceInputError(msg)
            return {names[0]: data}
        for key in inputs:
            if key not in names:
                msg = f"{self.path} has no input {key!r}. {format_options(key, names, 'inputs')}"
                raise InferenceInputError(msg, input_name=key)
        missing = [n for n in names if n not in inputs]
        if missing:
            msg = f"input(s) {', '.join(map(repr, missing))} of {self.path} not given"
            raise InferenceInputError(msg, input_name=missing[0])
        return {n: inputs[n] for n in names}

    def _map_partitions(self, feeds: dict[str, Any]) -> Any:
        import dask
        import dask_awkward as dak
        from dask.base import tokenize

        metas = {
            name: {k: dask_awkward_meta(v) for k, v in value.items()}
            if isinstance(value, Mapping)
            else dask_awkward_meta(value)
            for name, value in feeds.items()
        }
        meta = self._apply(metas)
        # One graph key holds the model: workers fetch its bytes once, not once per partition task.
        model = dask.delayed(self, name=f"onnx-model-{tokenize(self)}", traverse=False)
        return dak.map_partitions(_apply_partition, model, feeds, meta=meta, label="onnx-inference")

    def _apply(self, feeds: Mapping[str, Any]) -> Any:
        with lazy_awkward_errors(_leaves(feeds)):
            return self._apply_eager(feeds)

    def _apply_eager(self, feeds: Mapping[str, Any]) -> Any:
        prepared = [
            prepare(
                spec,
                feeds[spec.name],
                features=self._features[spec.name],
                layout=self._layout[spec.name],
                max_objects=self._max_objects[spec.name],
                fill_value=self.fill_value,
            )
            for spec in self.inputs
        ]
        ref = next((p for p in prepared if p.layout == "objects"), prepared[0])
        if any(backend_of(c) == "typetracer" for p in prepared for c in p.columns):
            return self._assemble({n: self._typetracer(n) for n in self.output_names}, ref)
        rows = {p.spec.name: p.rows for p in prepared}
        if len(set(rows.values())) > 1:
            shown = ", ".join(
                f"{n!r} ({p.layout}): {r}" for (n, r), p in zip(rows.items(), prepared, strict=True)
            )
            msg = f"the inputs give different numbers of rows: {shown}; they must describe the same rows"
            raise InferenceInputError(msg)
        devices = {backend_of(c) for p in prepared for c in p.columns}
        xp = import_cupy() if devices == {"cuda"} else np
        if xp is np:
            for p in prepared:
                p.columns = [to_host(c) for c in p.columns]
        return self._assemble(self._predict(prepared, ref.rows, xp), ref)

    def _predict(self, prepared: list[Prepared], n_rows: int, xp: Any) -> dict[str, Any]:
        if n_rows == 0:
            return {name: xp.asarray(self._empty(name)) for name in self.output_names}
        backend, session, columnar = self._session(frozenset(p.spec.name for p in prepared if p.columnar))
        for p in prepared:
            p.feed_columns = p.spec.name in columnar
        size = self.batch_size
        results: list[Any] | None = None

        def fill(start: int, slot: int) -> dict[str, Any]:
            stop = min(n_rows, start + size)
            return {_fed_name(p): p.batch(start, stop, size, xp, slot) for p in prepared}

        starts = range(0, n_rows, size)
        # the next batch is laid out on another thread while onnxruntime runs this one (it releases the
        # GIL), where a core is left over by the session's threads: then the copy costs no wall time
        pipelined = xp is np and len(starts) > 1 and _spare_core(self.threads or default_threads())
        ahead = _filler().submit(fill, 0, 0) if pipelined else None
        for k, start in enumerate(starts):
            stop = min(n_rows, start + size)
            if ahead is not None:
                batch = ahead.result()
                ahead = _filler().submit(fill, starts[k + 1], (k + 1) % 2) if k + 1 < len(starts) else None
            else:
                batch = fill(start, 0)
            if self.nan == "raise":
                _check_nan(prepared, batch, start, xp)
            outs = [_as_xp(out, xp) for out in backend.run(session, batch, self.output_names)]
            for name, out in zip(self.output_names, outs, strict=True):
                if out.ndim == 0 or out.shape[0] != stop - start:
                    msg = (
                        f"output {name!r} of {self.path} has shape {out.shape} for a batch of {stop - start} "
                        "rows; distproc needs outputs with one entry per input row"
                    )
                    raise InferenceError(msg)
            if stop - start == n_rows:
                return dict(zip(self.output_names, outs, strict=True))
            if results is None:
                results = [xp.empty((n_rows, *out.shape[1:]), dtype=out.dtype) for out in outs]
            for result, out in zip(results, outs, strict=True):
                result[start:stop] = out
        return dict(zip(self.output_names, results or [], strict=True))

    def _session(
        self, columnar: frozenset[str] = frozenset()
    ) -> tuple[InferenceBackend, Any, frozenset[str]]:
        """This process's backend, session and the inputs it takes feature-major.

        *columnar* names the inputs that could be fed feature-major; the backend decides whether they
        are (``feeds_columns``: the CPU backend does; CUDA's IO binding sizes its outputs from the first
        axis of the inputs, so it does not).
        """
        runtime = self._runtime.get(columnar)
        if runtime is None:
            backend = resolve_backend(self.backend)
            fed = columnar if getattr(backend, "feeds_columns", False) else frozenset()
            session = get_session(self._model, self.digest, backend, self.threads, fed)
            wanted = backend.providers[0][0]
            if wanted not in session.get_providers():
                warnings.warn(
                    f"onnxruntime could not start {wanted} for {self.path} in this process (it provides "
                    f"{session.get_providers()}); running on the CPU.",
                    GPUUnavailableWarning,
                    stacklevel=3,
                )
                backend, fed = CPUBackend(), columnar
                session = get_session(self._model, self.digest, backend, self.threads, fed)
            runtime = self._runtime[columnar] = (backend, session, fed)
        return runtime

    def _empty(self, name: str) -> np.ndarray:
        spec = self._spec(name)
        trailing = tuple(1 if d is None else d for d in spec.trailing)
        return np.empty((0, *trailing), dtype=spec.dtype)

    def _typetracer(self, name: str) -> ak.Array:
        return ak.Array(
            ak.to_layout(self._squeezed(name, self._empty(name))).to_typetracer(forget_length=True)
        )

    def _squeezed(self, name: str, array: Any) -> Any:
        """An output declared ``(N, 1)`` as ``(N,)`` when ``squeeze`` is on."""
        spec = self._spec(name)
        if self.squeeze and spec.rank == 2 and spec.shape is not None and spec.shape[1] == 1:
            return array.reshape(array.shape[0])
        return array

    def _assemble(self, arrays: dict[str, Any], ref: Prepared) -> ak.Array:
        fields = {
            name: array if isinstance(array, ak.Array) else ak.Array(self._squeezed(name, array))
            for name, array in arrays.items()
        }
        result = next(iter(fields.values())) if len(fields) == 1 else ak.zip(fields, depth_limit=1)
        if ref.layout != "objects":
            return result
        if ref.offsets is None:  # typetracer
            return ak.unflatten(result, ref.counts)
        lists = ak.contents.ListOffsetArray(ak.index.Index(ref.offsets), result.layout)
        return ak.Array(lists)


def _spare_core(session_threads: int) -> bool:
    """Whether this process may use more CPUs than the session's threads."""
    return len(os.sched_getaffinity(0)) > session_threads if hasattr(os, "sched_getaffinity") else False


@functools.cache
def _filler() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that lays out the next batch while a session runs (one per process)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="distproc-batch-fill")


# A forked child (a fork-based process pool) inherits the executor but not its thread: it makes its own.
os.register_at_fork(after_in_child=_filler.cache_clear)


def _per_input(value: Any, what: str, names: list[str], source: str) -> dict[str, Any]:
    """A per-input option: one value for every input, or a mapping input name -> value."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(names, value)
    for key in value:
        if key not in names:
            hint = format_options(key, names, "inputs")
            msg = f"{what} names input {key!r}, which {source} does not have. {hint}"
            raise InferenceError(msg)
    default = inspect.signature(OnnxModel).parameters[what].default  # for inputs the mapping leaves out
    return {n: value.get(n, default) for n in names}


def _apply_partition(model: OnnxModel, feeds: Mapping[str, Any]) -> Any:
    """Run *model* on one partition (the task dask-awkward maps over partitions)."""
    return model._apply(feeds)


def _as_xp(array: Any, xp: Any) -> Any:
    if xp is np:
        return to_host(array)
    return array if is_cupy(array) else xp.asarray(array)


def _fed_name(p: Prepared) -> str:
    """The session input that *p* is fed to (a columnar input has its own, see ``columnar_model``)."""
    return columnar_name(p.spec.name) if p.feed_columns else p.spec.name


def _check_nan(prepared: list[Prepared], batch: Mapping[str, Any], start: int, xp: Any) -> None:
    for p in prepared:
        array = p.as_rows(batch[_fed_name(p)])
        if array.dtype.kind != "f":
            continue
        mask = xp.isnan(array)
        if not bool(mask.any()):
            continue
        n_feat = len(p.names)
        per_feature = mask.reshape(len(array), -1, n_feat).any(axis=(0, 1))
        bad_rows = mask.reshape(len(array), -1).any(axis=1)
        names = [n for n, bad in zip(p.names, to_host(per_feature).tolist(), strict=True) if bad]
        first = start + int(to_host(bad_rows).argmax())
        msg = (
            f"input {p.spec.describe()}: NaN in feature(s) {', '.join(map(repr, names))} "
            f"({int(bad_rows.sum())} row(s) of this batch, first at row {first} of the {p.layout!r} rows). "
            "nan='raise' rejects NaN; fill them first (e.g. ak.nan_to_num) or use nan='pass' to give them "
            "to the model."
        )
        raise InferenceInputError(msg, input_name=p.spec.name)


def _leaves(feeds: Mapping[str, Any]) -> list[Any]:
    """The arrays of *feeds* (input name -> array, or -> mapping of feature name -> array)."""
    return [
        v for value in feeds.values() for v in (value.values() if isinstance(value, Mapping) else [value])
    ]
