"""Inference backends: which onnxruntime execution provider runs a batch, and how data reach it.

A backend is a small object satisfying :class:`InferenceBackend` (like pyhf's tensor backends). It is
passed to :class:`~distproc.inference.OnnxModel` by name or as an instance and travels with the model to
the Dask workers: there is no module-level "current backend", because global state set on the client
never reaches a worker process.

``onnxruntime`` and ``cupy`` are imported inside the backends, when first used. Only one of the
``onnxruntime`` (CPU) and ``onnxruntime-gpu`` distributions may be installed in an environment at a time
(both write the ``onnxruntime`` module folder, and with both the CPU build can win). The ``gpu`` extra
installs ``cupy-cuda13x`` and ``onnxruntime-gpu``; then ``pip uninstall -y onnxruntime`` (distproc's CPU
default) and ``pip install --force-reinstall --no-deps onnxruntime-gpu`` (the uninstall removed shared
files) leave the GPU build alone (README "GPU workers").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from distproc.exceptions import BackendUnavailableError, GPUUnavailableWarning, InferenceError, format_options

__all__ = (
    "BACKENDS",
    "CPUBackend",
    "CUDABackend",
    "InferenceBackend",
    "available_backends",
    "get_backend",
    "resolve_backend",
)

_GPU_INSTALL_HINT = (
    "Install the GPU runtime in place of the CPU one (onnxruntime and onnxruntime-gpu share the module "
    "folder `onnxruntime/`, so only one may be installed):\n"
    "    pip install 'distproc[gpu]'\n"
    "    pip uninstall -y onnxruntime\n"
    "    pip install --force-reinstall --no-deps onnxruntime-gpu"
)

# ONNX element types (as onnxruntime spells them) -> numpy dtypes.
ORT_DTYPES: dict[str, np.dtype] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in {
        "float": "float32",
        "double": "float64",
        "float16": "float16",
        "int8": "int8",
        "int16": "int16",
        "int32": "int32",
        "int64": "int64",
        "uint8": "uint8",
        "uint16": "uint16",
        "uint32": "uint32",
        "uint64": "uint64",
        "bool": "bool",
    }.items()
}


def import_onnxruntime() -> Any:
    """Import ``onnxruntime``; a missing package becomes a :class:`BackendUnavailableError`."""
    try:
        import onnxruntime
    except ImportError as err:
        msg = (
            "onnxruntime is not installed in this process's environment.\n"
            "    pip install onnxruntime        (CPU)\n"
            "    pip install 'distproc[gpu]'    (CUDA; then see README 'GPU workers')"
        )
        raise BackendUnavailableError(msg) from err
    return onnxruntime


def import_cupy() -> Any:
    """Import ``cupy``; a missing package becomes a :class:`BackendUnavailableError`."""
    try:
        import cupy
    except ImportError as err:
        msg = f"The CUDA backend with IO binding needs CuPy, which is not installed.\n{_GPU_INSTALL_HINT}"
        raise BackendUnavailableError(msg) from err
    return cupy


def is_cupy(array: Any) -> bool:
    """Whether *array* is a CuPy array (checked without importing CuPy)."""
    return type(array).__module__.split(".", 1)[0] == "cupy"


def to_host(array: Any) -> Any:
    """A NumPy view or copy of *array* (CuPy arrays are copied from the device)."""
    return array.get() if is_cupy(array) else array


@runtime_checkable
class InferenceBackend(Protocol):
    """What distproc needs from an inference backend.

    Attributes
    ----------
    name : str
        Short name, as in :data:`BACKENDS`.
    providers : list of (str, dict)
        onnxruntime execution providers with their options, in order of preference, used to create the
        session (e.g. ``[("CPUExecutionProvider", {})]``).
    feeds_columns : bool, optional
        Whether distproc may give this backend a ``(rows, features)`` input feature-major, as
        ``(features, rows)`` under another input name, to a session whose graph transposes it back
        (cheaper to lay out). Backends without the attribute get every input as the model declares it.
    """

    name: str

    @property
    def providers(self) -> list[tuple[str, dict[str, str]]]:
        """Execution providers with their options, in order of preference."""
        ...

    def check(self) -> None:
        """Raise :class:`BackendUnavailableError` when this backend cannot run in this process."""
        ...

    def run(self, session: Any, batch: Mapping[str, Any], output_names: Sequence[str]) -> list[Any]:
        """Run *session* on one batch (input name -> array); return the named outputs, in order.

        The arrays of *batch* are only valid during the call (distproc reuses their buffers).
        """
        ...


class CPUBackend:
    """Run on the CPU with onnxruntime's ``CPUExecutionProvider``; CuPy inputs are copied to the host.

    Examples
    --------
    >>> from distproc.inference import CPUBackend
    >>> CPUBackend().providers
    [('CPUExecutionProvider', {})]
    """

    name = "cpu"
    feeds_columns = True

    @property
    def providers(self) -> list[tuple[str, dict[str, str]]]:
        return [("CPUExecutionProvider", {})]

    def check(self) -> None:
        import_onnxruntime()

    def run(self, session: Any, batch: Mapping[str, Any], output_names: Sequence[str]) -> list[Any]:
        return session.run(list(output_names), {name: to_host(array) for name, array in batch.items()})

    def __repr__(self) -> str:
        return "CPUBackend()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


class CUDABackend:
    """Run on an NVIDIA GPU with onnxruntime's ``CUDAExecutionProvider``.

    With ``io_binding=True`` (the default) inputs and outputs are bound on the device through
    onnxruntime's IO binding with CuPy buffers: CuPy inputs (e.g. from awkward arrays on the ``cuda``
    backend) are used in place, NumPy inputs are copied to the device once, and outputs are written into
    preallocated CuPy arrays. The caller gets CuPy outputs for CuPy inputs and NumPy outputs for NumPy
    inputs. With ``io_binding=False`` it is a plain ``session.run`` on host arrays.

    Needs ``onnxruntime-gpu`` (in place of ``onnxruntime``) and, for IO binding, ``cupy``: both come with
    ``pip install 'distproc[gpu]'``.

    Parameters
    ----------
    device_id : int
        CUDA device ordinal.
    io_binding : bool
        Bind inputs/outputs on the device with CuPy (no host round trip for data already on the GPU).
    provider_options : mapping, optional
        Extra ``CUDAExecutionProvider`` options (e.g. ``{"arena_extend_strategy": "kSameAsRequested"}``).
        TF32 matrix products are off (``use_tf32=0``) so that scores equal the CPU's within float32
        rounding; ``{"use_tf32": "1"}`` turns them on (faster on Ampere and newer, differences ~1e-4).

    Examples
    --------
    >>> from distproc.inference import CUDABackend
    >>> CUDABackend(device_id=1).providers[0]
    ('CUDAExecutionProvider', {'device_id': '1', 'use_tf32': '0'})
    """

    name = "cuda"
    feeds_columns = False  # IO binding sizes the outputs from the inputs' first axis

    def __init__(
        self,
        device_id: int = 0,
        *,
        io_binding: bool = True,
        provider_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.device_id = int(device_id)
        self.io_binding = bool(io_binding)
        self.provider_options = {str(k): str(v) for k, v in (provider_options or {}).items()}

    @property
    def providers(self) -> list[tuple[str, dict[str, str]]]:
        # TF32 matmuls (onnxruntime's default on Ampere and newer) differ from the CPU by ~1e-4.
        options = {"device_id": str(self.device_id), "use_tf32": "0", **self.provider_options}
        return [("CUDAExecutionProvider", options), ("CPUExecutionProvider", {})]

    def check(self) -> None:
        ort = import_onnxruntime()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            msg = (
                f"onnxruntime {ort.__version__} in this environment has no CUDAExecutionProvider "
                f"(available: {', '.join(ort.get_available_providers())}).\n{_GPU_INSTALL_HINT}"
            )
            raise BackendUnavailableError(msg)
        if self.io_binding:
            cupy = import_cupy()
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except cupy.cuda.runtime.CUDARuntimeError as err:
                msg = f"CuPy cannot reach a CUDA device: {err}"
                raise BackendUnavailableError(msg) from err
            if self.device_id >= count:
                msg = f"CUDA device {self.device_id} asked for, but this machine has {count} device(s)."
                raise BackendUnavailableError(msg)

    def run(self, session: Any, batch: Mapping[str, Any], output_names: Sequence[str]) -> list[Any]:
        if not self.io_binding:
            return session.run(list(output_names), {name: to_host(array) for name, array in batch.items()})
        cupy = import_cupy()
        on_device = any(is_cupy(array) for array in batch.values())
        binding = session.io_binding()
        with cupy.cuda.Device(self.device_id):
            keep = []  # the device buffers must outlive the run
            n_rows = 0
            for name, array in batch.items():
                device = cupy.ascontiguousarray(cupy.asarray(array))
                keep.append(device)
                n_rows = device.shape[0] if device.ndim else 1
                binding.bind_input(
                    name, "cuda", self.device_id, device.dtype.type, tuple(device.shape), device.data.ptr
                )
            outputs: list[Any] = []
            declared = {out.name: out for out in session.get_outputs()}
            for name in output_names:
                shape = _output_shape(declared[name].shape, n_rows)
                dtype = ORT_DTYPES.get(declared[name].type)
                if shape is None or dtype is None:
                    binding.bind_output(name, "cuda", self.device_id)  # onnxruntime allocates it
                    outputs.append(None)
                    continue
                out = cupy.empty(shape, dtype=dtype)
                binding.bind_output(name, "cuda", self.device_id, out.dtype.type, shape, out.data.ptr)
                outputs.append(out)
            cupy.cuda.get_current_stream().synchronize()
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            if any(out is None for out in outputs):
                copied = binding.copy_outputs_to_cpu()
                outputs = [cupy.asarray(c) if o is None else o for o, c in zip(outputs, copied, strict=True)]
        return outputs if on_device else [out.get() for out in outputs]

    def __repr__(self) -> str:
        return f"CUDABackend(device_id={self.device_id}, io_binding={self.io_binding}" + (
            f", provider_options={self.provider_options!r})" if self.provider_options else ")"
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and repr(other) == repr(self)

    def __hash__(self) -> int:
        return hash(repr(self))


def _output_shape(declared: Sequence[Any] | None, n_rows: int) -> tuple[int, ...] | None:
    """The concrete shape of an output for *n_rows* rows, or None when a non-batch axis is dynamic."""
    if not declared:
        return None
    rest = declared[1:]
    if not all(isinstance(dim, int) and dim >= 0 for dim in rest):
        return None
    return (n_rows, *rest)


#: Backends by name; ``"auto"`` is resolved in each process by :func:`resolve_backend`.
BACKENDS: dict[str, type] = {"cpu": CPUBackend, "cuda": CUDABackend}


def available_backends() -> tuple[str, ...]:
    """Names accepted for ``backend=``: ``"auto"`` and the keys of :data:`BACKENDS`.

    Examples
    --------
    >>> from distproc.inference import available_backends
    >>> available_backends()
    ('auto', 'cpu', 'cuda')
    """
    return ("auto", *BACKENDS)


def get_backend(spec: str | InferenceBackend) -> str | InferenceBackend:
    """Validate a backend given by name or instance, without importing anything.

    Returns the instance for a registered name, ``"auto"`` unchanged, or *spec* itself when it is a
    backend instance.

    Raises
    ------
    InferenceError
        For an unknown name (the message lists the valid ones) or an object that is not a backend.

    Examples
    --------
    >>> from distproc.inference import get_backend
    >>> get_backend("cpu")
    CPUBackend()
    >>> get_backend("gpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    distproc.exceptions.InferenceError: unknown inference backend 'gpu'. Did you mean 'cpu'? Available ...
    """
    if isinstance(spec, str):
        name = spec.lower()
        if name == "auto":
            return "auto"
        if name not in BACKENDS:
            hint = format_options(spec, available_backends(), "backends")
            msg = f"unknown inference backend {spec!r}. {hint}"
            raise InferenceError(msg)
        return BACKENDS[name]()
    if isinstance(spec, InferenceBackend):
        return spec
    msg = (
        f"backend must be one of {', '.join(map(repr, available_backends()))} or an object with `name`, "
        f"`providers`, `check()` and `run(session, batch, output_names)`; given {type(spec).__name__}"
    )
    raise InferenceError(msg)


def _cuda_usable() -> bool:
    try:
        CUDABackend().check()
    except BackendUnavailableError:
        return False
    return True


def resolve_backend(spec: str | InferenceBackend) -> InferenceBackend:
    """The backend to use in this process.

    ``"auto"`` picks :class:`CUDABackend` when onnxruntime has the CUDAExecutionProvider and CuPy sees a
    GPU, else :class:`CPUBackend`. A backend asked for explicitly that cannot run here (e.g. ``"cuda"``
    on a machine without GPU) falls back to the CPU with a :class:`GPUUnavailableWarning` saying why.

    Examples
    --------
    >>> from distproc.inference import resolve_backend
    >>> resolve_backend("cpu")
    CPUBackend()
    """
    backend = get_backend(spec)
    if isinstance(backend, str):  # "auto"
        return CUDABackend() if _cuda_usable() else CPUBackend()
    try:
        backend.check()
    except BackendUnavailableError as err:
        if isinstance(backend, CPUBackend):
            raise
        warnings.warn(
            f"inference backend {backend!r} cannot run in this process; falling back to the CPU. {err}",
            GPUUnavailableWarning,
            stacklevel=3,
        )
        return CPUBackend()
    return backend
