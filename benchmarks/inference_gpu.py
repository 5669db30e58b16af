"""CPU vs CUDA ONNX inference, with and without CuPy IO binding, for a model of about 0.7M parameters.

One prepared script for a GPU machine (needs the ``gpu`` extra, CuPy and onnxruntime-gpu, with the CPU
onnxruntime removed: README "GPU workers"). It always runs the CPU part; without a usable GPU it prints why
the GPU part is skipped and exits 0.

Model: MLP 16-480-480-480-480-1 (701k parameters), one row per jet of NanoAOD-like jagged events.
Modes, each as rows/s and end-to-end time per chunk (awkward chunk in, jagged scores out):

``cpu``                    OnnxModel(backend="cpu") on host awkward chunks
``cpu-raw``                bare onnxruntime CPU session on the same rows as a flat NumPy array
``cuda-host``              CUDABackend(io_binding=False): host arrays through ``session.run``
``cuda-iobinding``         CUDABackend(): host chunk copied to the device once per batch, outputs bound on
                           the device (CuPy)
``cuda-device``            CUDABackend(): the chunk already on the GPU (``ak.to_backend(x, "cuda")``, or a
                           CuPy matrix when awkward's CUDA kernels are missing): no host round trip
``cuda-raw``               bare onnxruntime session + IO binding on a CuPy matrix (GPU baseline)
``*-tf32``                 the same with TF32 matrix products (``use_tf32=1``; distproc's default is 0, which
                           keeps GPU scores within ~1e-7 of the CPU's instead of ~1e-4)

    python benchmarks/inference_gpu.py                       # 1M events on GPU, 50k on CPU
    python benchmarks/inference_gpu.py --events 20000 --cpu-events 5000
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import FEATURES, make_events, make_mlp  # the CPU benchmark's generators

from distproc.inference import BackendUnavailableError, CUDABackend, OnnxModel

GPU_FEATURES = [*FEATURES, "hfsigmaEtaEta", "hfsigmaPhiPhi", "rawFactor", "area", "nConst", "puId"]
SIZES = (len(GPU_FEATURES), 480, 480, 480, 480, 1)


def n_params(sizes: tuple[int, ...]) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def gpu_status() -> str | None:
    """None when the GPU part can run, else the reason it cannot."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed"
    try:
        CUDABackend().check()
    except BackendUnavailableError as err:
        return str(err).splitlines()[0]
    return None


def time_chunks(
    chunks: list[Any], fn: Callable[[Any], Any], repeat: int, sync: Callable[[], object]
) -> list[float]:
    """Seconds per chunk in the fastest of *repeat* passes (after a warm-up call)."""
    fn(chunks[0])
    sync()
    best: list[float] = []
    for _ in range(max(1, repeat)):
        times = []
        for chunk in chunks:
            start = time.perf_counter()
            fn(chunk)
            sync()
            times.append(time.perf_counter() - start)
        if not best or sum(times) < sum(best):
            best = times
    return best


def report(mode: str, rows: int, per_chunk: list[float], results: dict[str, float]) -> None:
    total = sum(per_chunk)
    results[mode] = rows / total
    rate, median_ms = rows / total / 1e6, 1e3 * statistics.median(per_chunk)
    print(f"{mode:15s} {rate:8.2f} M rows/s  chunk median {median_ms:8.1f} ms  total {total:7.3f} s")


def flat_rows(chunk: ak.Array) -> np.ndarray:
    return np.ascontiguousarray(np.stack([ak.to_numpy(ak.flatten(chunk.Jet[f])) for f in GPU_FEATURES], 1))


def run_cpu(args: argparse.Namespace, onnx_bytes: bytes, results: dict[str, float]) -> None:
    events = make_events(args.cpu_events, features=GPU_FEATURES)
    chunks = [events[i : i + args.chunk] for i in range(0, len(events), args.chunk)]
    rows = int(ak.sum(ak.num(events.Jet)))
    model = OnnxModel.from_bytes(onnx_bytes, backend="cpu", threads=args.threads, batch_size=args.batch_size)
    report("cpu", rows, time_chunks(chunks, lambda c: model(c.Jet), args.repeat, lambda: None), results)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    flats = {id(c): flat_rows(c) for c in chunks}

    def raw(chunk: ak.Array) -> None:
        x = flats[id(chunk)]
        for s in range(0, len(x), args.batch_size):
            session.run(["y"], {"x": x[s : s + args.batch_size]})

    report("cpu-raw", rows, time_chunks(chunks, raw, args.repeat, lambda: None), results)


def raw_bound(session: Any, bs: int) -> Callable[[Any], None]:
    """A bare onnxruntime loop with IO binding over a CuPy matrix (the GPU baseline)."""
    import cupy

    def raw(x: Any) -> None:
        for s in range(0, len(x), bs):
            part = cupy.ascontiguousarray(x[s : s + bs])
            out = cupy.empty((len(part), 1), dtype=cupy.float32)
            binding = session.io_binding()
            binding.bind_input("x", "cuda", 0, np.float32, tuple(part.shape), part.data.ptr)
            binding.bind_output("y", "cuda", 0, np.float32, tuple(out.shape), out.data.ptr)
            session.run_with_iobinding(binding)

    return raw


def run_gpu(args: argparse.Namespace, onnx_bytes: bytes, results: dict[str, float]) -> None:
    import cupy

    sync = cupy.cuda.Device(0).synchronize
    events = make_events(args.events, features=GPU_FEATURES)
    chunks = [events[i : i + args.chunk] for i in range(0, len(events), args.chunk)]
    rows = int(ak.sum(ak.num(events.Jet)))
    bs = args.gpu_batch_size
    host = OnnxModel.from_bytes(onnx_bytes, backend=CUDABackend(io_binding=False), batch_size=bs)
    report("cuda-host", rows, time_chunks(chunks, lambda c: host(c.Jet), args.repeat, sync), results)
    bound = OnnxModel.from_bytes(onnx_bytes, backend=CUDABackend(), batch_size=bs)
    report("cuda-iobinding", rows, time_chunks(chunks, lambda c: bound(c.Jet), args.repeat, sync), results)

    try:  # awkward on the device: jets stay there; needs awkward's CUDA kernels for some operations
        device_chunks = [ak.to_backend(c.Jet, "cuda") for c in chunks]
        check = bound(device_chunks[0])
        assert ak.backend(check) == "cuda"
        label, inputs = "cuda-device", device_chunks
    except Exception as err:  # noqa: BLE001 - any failure here only changes which device input is timed
        print(f"(awkward on cuda unavailable: {type(err).__name__}: {err}; timing a CuPy matrix instead)")
        label, inputs = "cuda-device*", [cupy.asarray(flat_rows(c)) for c in chunks]
    report(label, rows, time_chunks(inputs, bound, args.repeat, sync), results)
    matrices = [cupy.asarray(flat_rows(c)) for c in chunks]
    for suffix, tf32 in (("", "0"), ("-tf32", "1")):
        backend = CUDABackend(provider_options={"use_tf32": tf32})
        if tf32 == "1":
            fast = OnnxModel.from_bytes(onnx_bytes, backend=backend, batch_size=bs)
            report(label + suffix, rows, time_chunks(inputs, fast, args.repeat, sync), results)
        session = ort.InferenceSession(
            onnx_bytes,
            providers=[name for name, _ in backend.providers],
            provider_options=[opts for _, opts in backend.providers],
        )
        report(
            "cuda-raw" + suffix,
            rows,
            time_chunks(matrices, raw_bound(session, bs), args.repeat, sync),
            results,
        )
    if args.profile:
        import cProfile
        import pstats

        with cProfile.Profile() as profile:
            for chunk in inputs:
                bound(chunk)
            sync()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    cpu_scores = OnnxModel.from_bytes(onnx_bytes, backend="cpu")(chunks[0].Jet[:2000])
    gpu_scores = bound(chunks[0].Jet[:2000])
    diff = float(np.max(np.abs(ak.to_numpy(ak.flatten(cpu_scores)) - ak.to_numpy(ak.flatten(gpu_scores)))))
    print(f"max |cpu - cuda| score difference on 2000 events: {diff:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events for the GPU modes")
    parser.add_argument("--cpu-events", type=int, default=50_000, help="events for the CPU modes")
    parser.add_argument("--chunk", type=int, default=200_000, help="events per chunk")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU intra-op threads")
    parser.add_argument("--batch-size", type=int, default=65536, help="rows per CPU session.run")
    parser.add_argument("--gpu-batch-size", type=int, default=262144, help="rows per GPU session.run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile the cuda-device mode")
    args = parser.parse_args()

    onnx_bytes = make_mlp(SIZES)
    print(f"model {'-'.join(map(str, SIZES))}: {n_params(SIZES)} parameters; onnxruntime {ort.__version__}")
    results: dict[str, float] = {}
    run_cpu(args, onnx_bytes, results)
    reason = gpu_status()
    if reason is not None:
        print(f"SKIP GPU part: {reason}. CPU part done; nothing else to measure on this machine.")
        print(f"gpu inference skipped cpu_rows_s={results['cpu']:.0f}")
        return 0
    run_gpu(args, onnx_bytes, results)
    device = next(k for k in results if k.startswith("cuda-device") and not k.endswith("-tf32"))
    print(
        f"gpu inference cpu_rows_s={results['cpu']:.0f} cuda_host_rows_s={results['cuda-host']:.0f} "
        f"cuda_iobinding_rows_s={results['cuda-iobinding']:.0f} cuda_device_rows_s={results[device]:.0f} "
        f"cuda_raw_rows_s={results['cuda-raw']:.0f} "
        f"device_overhead={results['cuda-raw'] / results[device] - 1:.0%} "
        f"tf32_device_rows_s={results[device + '-tf32']:.0f} tf32_raw_rows_s={results['cuda-raw-tf32']:.0f} "
        f"speedup_vs_cpu={results[device] / results['cpu']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
