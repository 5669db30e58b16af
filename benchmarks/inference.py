"""Overhead of distproc's ONNX inference over raw onnxruntime, per chunk of jagged jets (CPU).

A processor-like per-chunk function scores every jet of every event with a 10-64-64-64-1 MLP through
``OnnxModel`` (awkward in, jagged awkward out); the baseline runs the same rows, already laid out as one
flat float32 NumPy array per chunk, through a bare ``onnxruntime.InferenceSession`` with the same thread
count and batch size. Everything is generated in the script (about 6 jets per event, variable count).

    python benchmarks/inference.py                 # 1M events
    python benchmarks/inference.py --events 20000  # quick check
    python benchmarks/inference.py --profile       # pyinstrument profile of the distproc path

distproc's own cost per chunk (everything but ``session.run``: checking and laying out the features,
assembling the jagged output) is measured apart from the model's time, as the calling thread's CPU time
outside ``session.run`` (robust against other work on the machine), so the overhead on a machine with
another raw rate can be predicted: own cost / raw time per chunk.

The last line reads ``inference overhead=X.X% distproc_rows_s=... raw_rows_s=... own_us_per_chunk=...``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Callable

import awkward as ak
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from distproc.inference import CPUBackend, OnnxModel
from distproc.inference.model import _filler

N_FEATURES = 10
FEATURES = ["pt", "eta", "phi", "mass", "btag", "qgl", "chEmEF", "neEmEF", "chHEF", "neHEF"]


def make_mlp(sizes: tuple[int, ...] = (N_FEATURES, 64, 64, 64, 1), seed: int = 0) -> bytes:
    """An MLP ``x[N, sizes[0]] -> y[N, sizes[-1]]`` (ReLU hidden layers, sigmoid output), as ONNX bytes."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        inits += [
            numpy_helper.from_array((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array((0.1 * rng.normal(size=b)).astype(np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"]),
            helper.make_node("Relu" if i < len(sizes) - 2 else "Sigmoid", [f"z{i}"], [f"a{i}"]),
        ]
        x = f"a{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto.SerializeToString()


def make_events(
    n_events: int, seed: int = 1, mean_jets: float = 6.0, features: list[str] | None = None
) -> ak.Array:
    """NanoAOD-like events with a jagged ``Jet`` collection of float32 fields (about 6 jets per event)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(mean_jets, n_events)
    n = int(counts.sum())
    names = features or FEATURES
    jets = {name: ak.unflatten(rng.normal(size=n).astype(np.float32), counts) for name in names}
    return ak.zip(
        {"Jet": ak.zip(jets), "MET_pt": rng.exponential(30, n_events).astype(np.float32)}, depth_limit=1
    )


class TimedCPUBackend(CPUBackend):
    """The CPU backend, adding up the wall-clock and calling-thread CPU time spent in ``session.run``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def run(self, session: ort.InferenceSession, batch: dict, output_names: list[str]) -> list:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return super().run(session, batch, output_names)
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.thread_time() - cpu


def _filler_cpu() -> float:
    """CPU seconds of the thread that lays out the next batch while the session runs (0 if unused)."""
    threads = getattr(_filler(), "_threads", ())
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in threads)


def own_cost(
    chunks: list[ak.Array], model: OnnxModel, backend: TimedCPUBackend, repeat: int
) -> tuple[float, float]:
    """distproc's own CPU seconds per chunk outside ``session.run`` (best of *repeat*): on the calling
    thread, and on the batch-layout thread (overlapping the session's run where a core is spare)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        backend.cpu = 0.0
        start, filler = time.thread_time(), _filler_cpu()
        for chunk in chunks:
            process(chunk, model)
        own = (time.thread_time() - start - backend.cpu) / len(chunks)
        best = min(best, (own, (_filler_cpu() - filler) / len(chunks)))
    return best


def process(events: ak.Array, model: OnnxModel) -> int:
    """The processor-like per-chunk function: score every jet, then count jets passing a cut."""
    score = model(events.Jet)  # jagged: one score per jet, aligned with events.Jet
    return int(np.count_nonzero(ak.to_numpy(ak.flatten(score)) > 0.5))


def raw_process(rows: np.ndarray, session: ort.InferenceSession, batch_size: int) -> int:
    """The baseline: the same rows as one flat float32 array, batched through a bare session."""
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        stop = min(start + batch_size, len(rows))
        out[start:stop] = session.run(["y"], {"x": rows[start:stop]})[0][:, 0]
    return int(np.count_nonzero(out > 0.5))


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=200_000, help="events per chunk")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile the distproc path with pyinstrument")
    args = parser.parse_args()

    onnx_bytes = make_mlp()
    events = make_events(args.events)
    chunks = [events[i : i + args.chunk] for i in range(0, len(events), args.chunk)]
    flat_rows = [
        np.ascontiguousarray(np.stack([ak.to_numpy(ak.flatten(c.Jet[f])) for f in FEATURES], axis=1))
        for c in chunks
    ]
    n_rows = sum(len(r) for r in flat_rows)
    print(
        f"{len(events)} events, {n_rows} jets ({n_rows / len(events):.2f}/event) in {len(chunks)} chunks; "
        f"threads={args.threads} batch_size={args.batch_size}"
    )

    timed = TimedCPUBackend()
    model = OnnxModel.from_bytes(onnx_bytes, backend=timed, threads=args.threads, batch_size=args.batch_size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])

    # same numbers from both paths
    check = ak.to_numpy(ak.flatten(model(chunks[0].Jet)))
    raw = session.run(["y"], {"x": flat_rows[0]})[0][:, 0]
    np.testing.assert_allclose(check, raw, atol=1e-6, rtol=0)

    def run_distproc() -> None:
        for chunk in chunks:
            process(chunk, model)

    def run_raw() -> None:
        for rows in flat_rows:
            raw_process(rows, session, args.batch_size)

    run_raw()  # warm both up (thread pools, caches)
    run_distproc()
    t_dist, t_raw = float("inf"), float("inf")
    for _ in range(args.repeat):  # interleaved, so drifts of a shared machine hit both
        t_raw = min(t_raw, best_of(1, run_raw))
        t_dist = min(t_dist, best_of(1, run_distproc))

    own, fill = own_cost(chunks, model, timed, args.repeat)
    raw_per_chunk = t_raw / len(chunks)

    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as profiler:
            run_distproc()
        print(profiler.output_text(unicode=False, color=False))

    dist_rate, raw_rate = n_rows / t_dist, n_rows / t_raw
    overhead = 100.0 * (t_dist / t_raw - 1.0)
    print(f"raw onnxruntime : {t_raw:7.3f} s  {raw_rate / 1e6:6.2f} M rows/s")
    print(f"distproc        : {t_dist:7.3f} s  {dist_rate / 1e6:6.2f} M rows/s  (awkward in, jagged out)")
    rows_per_chunk = n_rows / len(chunks)
    fast = rows_per_chunk / 8.3e6
    print(
        f"distproc own cost: {own * 1e6:.0f} us per chunk of {rows_per_chunk:.0f} rows on the calling thread "
        f"({own / rows_per_chunk * 1e9:.2f} ns/row), {100 * own / raw_per_chunk:.1f}% of this raw time per "
        f"chunk; at 8.3 M raw rows/s it would be {100 * own / fast:.1f}%"
    )
    if fill:
        print(
            f"batch layout on another thread while the session runs (a core is spare: {os.cpu_count()} "
            f"CPUs, {args.threads} session threads): {fill * 1e6:.0f} us per chunk; without a spare core it "
            f"adds to the above: {100 * (own + fill) / fast:.1f}% at 8.3 M raw rows/s"
        )
    print(
        f"inference overhead={overhead:.1f}% distproc_rows_s={dist_rate:.0f} raw_rows_s={raw_rate:.0f} "
        f"own_us_per_chunk={own * 1e6:.0f}" + (f" fill_us_per_chunk={fill * 1e6:.0f}" if fill else "")
    )


if __name__ == "__main__":
    main()
