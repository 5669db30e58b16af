"""Event throughput of distproc against coffea's futures Runner and the raw uproot I/O floor, side by side.

One invocation, the same generated ttbar files (default 10M events in 10 files, cached under
``benchmarks/.data/``), the same partitions (``--chunksize``, default 100 000 events, for all three) and
the same number of worker processes (``--workers``, default: one per core):

1. **floor** - raw ``uproot`` read of exactly the branches the analysis uses (``Jet_pt``, ``Jet_eta``,
   ``nJet``, ``genWeight``), one partition per task on a ``ProcessPoolExecutor`` of ``--workers``
   processes; nothing is computed;
2. **coffea** - ``coffea.processor.Runner`` with ``FuturesExecutor(workers=N)`` and ``NanoAODSchema``,
   the analysis written as a coffea user writes it (plain awkward + numpy);
3. **distproc** - ``distproc.run`` on distproc's LocalCluster of N workers, the analysis written with
   distproc's API (:class:`distproc.systematics.BinnedLookup` with up/down variations).

The analysis: jet pT corrected as ``pt * sf[np.digitize(pt, bins)]`` for the nominal, up and down tables;
events with at least 4 jets of corrected pT > 25 GeV and |eta| < 2.4; a genWeight-weighted HT histogram
with a ``variation`` axis. The coffea and distproc histograms are compared bin by bin.

Pools and the cluster are started first (timed apart, with a warm-up task that imports the readers in
every worker) and every run is the wall time of one complete call (preprocessing included, with an empty
preprocessing cache for coffea and distproc). The three runs are interleaved ``--rounds`` times (default 3)
and the medians are used. The CPU time the worker processes (and this process) spent is printed too:
it depends less than wall time on what else runs on the machine.

    python benchmarks/throughput.py                        # 10M events (generated once, ~90 s), 3 rounds
    python benchmarks/throughput.py --events 1000000       # quick check
    python benchmarks/throughput.py --profile              # + pyinstrument of one distproc partition
    python benchmarks/throughput.py --ablation             # + distproc with its worker optimisations off
    python benchmarks/throughput.py --tls-cost             # + distproc on a plain-TCP cluster: TLS/plain
    python benchmarks/throughput.py --dask                 # only the dask-mode comparison (below)

distproc's cluster uses TLS with the run's certificate (its default); ``--tls-cost`` adds a row
**plain**, the same run on a second local cluster started with ``security=False``, interleaved with the
others, and prints ``tls/plain`` for wall and CPU time; as both vary by more than 2 % from round to
round on a shared machine, it also measures the CPU time per task of 3000 trivial tasks on each cluster
(what TLS adds to every task's messages) and scales that to the run's tasks.

The last line reads ``distproc/coffea=X.XX distproc/floor=Y.YY``.

``--dask`` runs only the dask-awkward comparison: the same analysis written as a coffea dask-mode user
writes it (:class:`CoffeaDaskHT`: ``dask_awkward`` and ``hist.dask``), on the same files preprocessed once
by ``coffea.dataset_tools.preprocess`` (steps of ``--chunksize``), run by coffea (``apply_to_fileset`` +
``dask.compute``) and by ``distproc.run(..., mode="dask")``, both on one LocalCluster of ``--workers``
single-threaded workers, interleaved ``--rounds`` times; the histograms are compared bin by bin. Its last
line reads ``dask distproc/coffea=X.XX``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea.processor import ProcessorABC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import distproc_local_client, ensure_sample, load_line, worker_malloc_env

import distproc
from distproc.systematics import BinnedLookup, fill_varied

#: The branches the analysis reads (what the I/O floor reads).
BRANCHES = ["Jet_pt", "Jet_eta", "nJet", "genWeight"]
#: Jet pT bin edges of the scale factors and the factors themselves: ``sf[np.digitize(pt, BINS)]``, so
#: index 0 is below the first edge and the last index at or above the last edge.
BINS = np.array([30.0, 40.0, 50.0, 70.0, 100.0, 150.0, 250.0])
SF = {
    "nominal": np.array([0.90, 0.95, 0.97, 0.99, 1.00, 1.01, 1.02, 1.03]),
    "up": np.array([0.93, 0.98, 0.99, 1.01, 1.02, 1.03, 1.04, 1.06]),
    "down": np.array([0.87, 0.92, 0.95, 0.97, 0.98, 0.99, 1.00, 1.00]),
}


def ht_hist(cls: type = hist.Hist) -> hist.Hist:
    """The output histogram: variation x HT, weighted (*cls*: ``hist.Hist`` or ``hist.dask.Hist``)."""
    return (
        cls.new.StrCat(list(SF), name="variation").Reg(60, 0.0, 1500.0, name="ht", label="HT [GeV]").Weight()
    )


def fill_ht(h: Any, variation: str, pt: Any, eta: Any, weight: Any) -> None:
    """Events with at least 4 jets of pT > 25 GeV and |eta| < 2.4: their HT, weighted (awkward arrays and
    ``hist.Hist``, or dask-awkward arrays and ``hist.dask.Hist``)."""
    good = (pt > 25) & (abs(eta) < 2.4)
    selected = ak.sum(good, axis=1) >= 4
    ht = ak.sum(pt[good], axis=1)
    h.fill(variation=variation, ht=ht[selected], weight=weight[selected])


# --- coffea, as a coffea user writes it ----------------------------------------------------------------
class CoffeaHT(ProcessorABC):
    """The analysis in plain awkward + numpy."""

    def process(self, events):
        jets = events.Jet
        h = ht_hist()
        for variation, sf in SF.items():
            pt = jets.pt
            flat = ak.flatten(pt)
            pt = pt * ak.unflatten(sf[np.digitize(flat, BINS)], ak.num(pt))
            fill_ht(h, variation, pt, jets.eta, events.genWeight)
        return {"ht": h}

    def postprocess(self, accumulator):
        return accumulator


# --- distproc, as a distproc user writes it ------------------------------------------------------------
class DistprocHT(distproc.Processor):
    """The analysis with distproc's systematics API: every variation of the jet pT at once.

    :meth:`BinnedLookup.varied` gives the nominal and the up/down tables as one
    :class:`distproc.systematics.Varied`; the selection, the per-event sums and the fill run on it for all
    variations (a keep mask instead of a new jagged array per selection, flat per-event sums).
    """

    def __init__(self) -> None:
        self.jet_sf = BinnedLookup(
            edges=[-math.inf, *BINS, math.inf],
            values=SF["nominal"],
            variations={"up": SF["up"], "down": SF["down"]},
            inputs=("pt",),
            name="jet_sf",
        )

    def process(self, events):
        jets = events.Jet
        pt = jets.pt
        pt = pt * self.jet_sf.varied(pt)
        good = (pt > 25) & (abs(jets.eta) < 2.4)
        selected = ak.sum(good, axis=1) >= 4
        ht = ak.sum(pt[good], axis=1)
        return {"ht": fill_varied(ht_hist(), ht=ht[selected], weight=events.genWeight)}


# --- the same analysis as a coffea dask-mode user writes it ---------------------------------------------
def sf_correction() -> Any:
    """The scale factors as a correctionlib correction (inputs: variation, pt): the lookup a CMS analysis
    writes, which correctionlib evaluates on ``dask_awkward`` arrays partition by partition."""
    import correctionlib.schemav2 as cs

    def binning(values: np.ndarray) -> cs.Binning:
        return cs.Binning(
            nodetype="binning",
            input="pt",
            edges=[0.0, *map(float, BINS), "inf"],
            content=[float(v) for v in values],
            flow="clamp",
        )

    correction = cs.Correction(
        name="jet_sf",
        version=1,
        inputs=[cs.Variable(name="variation", type="string"), cs.Variable(name="pt", type="real")],
        output=cs.Variable(name="sf", type="real"),
        data=cs.Category(
            nodetype="category",
            input="variation",
            content=[cs.CategoryItem(key=k, value=binning(v)) for k, v in SF.items()],
        ),
    )
    return correction.to_evaluator()


class CoffeaDaskHT(ProcessorABC):
    """The analysis on ``dask_awkward`` arrays with a ``hist.dask`` histogram (coffea's dask mode).

    *lookup* is how the scale factor is looked up: ``"where"`` (``ak.where`` over the bin edges, seven
    awkward broadcasts per variation: ``np.digitize`` does not take dask arrays) or ``"correctionlib"``
    (:func:`sf_correction`, evaluated by correctionlib partition by partition).
    """

    def __init__(self, lookup: str = "where") -> None:
        self.lookup = lookup
        self.sf = sf_correction() if lookup == "correctionlib" else None

    def process(self, events):
        import hist.dask as hda

        jets = events.Jet
        h = ht_hist(hda.Hist)
        for variation, sf in SF.items():
            if self.sf is not None:
                factor = self.sf.evaluate(variation, jets.pt)
            else:
                factor = jets.pt * 0.0 + sf[0]
                for edge, value in zip(BINS, sf[1:], strict=True):
                    factor = ak.where(jets.pt >= edge, value, factor)
            fill_ht(h, variation, jets.pt * factor, jets.eta, events.genWeight)
        return {"ht": h}

    def postprocess(self, accumulator):
        return accumulator


def dask_comparison(args: argparse.Namespace) -> None:
    """coffea's dask path vs distproc's dask mode on the same preprocessed files (``--dask``)."""
    import dask
    from coffea.dataset_tools import apply_to_fileset, preprocess
    from coffea.nanoevents import NanoAODSchema

    info = ensure_sample("ttbar", args.events, args.files)
    with distproc_local_client(args.workers) as client:
        client.run(_warm_up, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # coffea suggests its pydantic fileset API for plain dicts
            runnable, _ = preprocess(
                {"ttbar": {"files": {p: "Events" for p in info.files}}},
                step_size=args.chunksize,
                save_form=False,
            )
        nparts = sum(len(f["steps"]) for f in runnable["ttbar"]["files"].values())
        print(
            f"dask mode: {info.events:,} ttbar events, {len(info.files)} files, {nparts} steps of about "
            f"{args.chunksize:,} events, {args.workers} workers, scale factors by {args.lookup}; "
            f"{load_line()}",
            flush=True,
        )
        timer = Timer(list(client.run(os.getpid).values()))

        def coffea_run() -> Any:
            (out,) = dask.compute(
                apply_to_fileset(CoffeaDaskHT(args.lookup), runnable, schemaclass=NanoAODSchema)
            )
            return out["ttbar"]["ht"]

        def distproc_run() -> Any:
            result = distproc.run(
                CoffeaDaskHT(args.lookup), runnable, cluster=client, mode="dask", progress=False
            )
            assert not result.partial, result.report.failures
            return result.output["ttbar"]["ht"]

        runs = {"coffea": coffea_run, "distproc": distproc_run}
        outputs, times, cpus = interleaved(
            runs, dict.fromkeys(runs, timer), args.rounds, info.events, "dask round"
        )
    print("dask mode distproc vs coffea: " + histogram_check(outputs["distproc"], outputs["coffea"]))
    cpu = {k: statistics.median(float(c.sum()) for c in v) for k, v in cpus.items()}
    print(
        "CPU seconds per run, workers + this process (less load-dependent than wall time): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f"; dask cpu distproc/coffea={cpu['coffea'] / cpu['distproc']:.2f}"
    )
    ratio = statistics.median(times["coffea"]) / statistics.median(times["distproc"])
    print(f"dask distproc/coffea={ratio:.2f}")


# --- the I/O floor -------------------------------------------------------------------------------------
def _warm_up(seconds: float) -> int:
    """Import the readers in a pool process and stay busy long enough that every process gets one.

    Also silences coffea's per-chunk "Missing cross-reference" schema warnings there (distproc does so
    in its workers), so that neither run spends its time writing them to the terminal.
    """
    import coffea.nanoevents  # noqa: F401
    import uproot  # noqa: F401

    warnings.filterwarnings("ignore", message="Missing cross-reference", category=RuntimeWarning)
    time.sleep(seconds)
    return os.getpid()


def _floor_read(path: str, start: int, stop: int) -> int:
    """Read one partition's branches with plain uproot; returns the number of events."""
    import uproot

    with uproot.open(path) as file:
        arrays = file["Events"].arrays(BRANCHES, entry_start=start, entry_stop=stop)
    return len(arrays)


def partitions(files: list[str], chunksize: int) -> list[tuple[str, int, int]]:
    """The partitions distproc plans (coffea's rule: :func:`distproc.partitioning._split`)."""
    import uproot

    from distproc.partitioning import _split

    out = []
    for path in files:
        with uproot.open(path) as file:
            n = file["Events"].num_entries
        out += [(path, a, b) for a, b in _split(n, chunksize)]
    return out


def run_floor(pool: concurrent.futures.Executor, parts: list[tuple[str, int, int]]) -> int:
    futures = [pool.submit(_floor_read, *p) for p in parts]
    return sum(f.result() for f in futures)


def start_pools(workers: int) -> dict[str, Any]:
    """Start the floor pool, coffea's loky pool and distproc's cluster; each timed with its warm-up."""
    import loky

    started: dict[str, Any] = {}
    t0 = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    floor_pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn)
    pids = {f.result() for f in [floor_pool.submit(_warm_up, 1.0) for _ in range(workers)]}
    started["floor"] = (floor_pool, time.perf_counter() - t0, len(pids))

    t0 = time.perf_counter()
    coffea_pool = loky.ProcessPoolExecutor(max_workers=workers)
    pids = {f.result() for f in [coffea_pool.submit(_warm_up, 1.0) for _ in range(workers)]}
    started["coffea"] = (coffea_pool, time.perf_counter() - t0, len(pids))
    return started


def histogram_check(a: hist.Hist, b: hist.Hist) -> str:
    """Assert bin-by-bin equality of two weighted histograms (relative 1e-12: partial sums are added in
    a different order) and describe the comparison."""
    va, vb = a.values(flow=True), b.values(flow=True)
    wa, wb = a.variances(flow=True), b.variances(flow=True)
    assert list(a.axes[0]) == list(b.axes[0]), (list(a.axes[0]), list(b.axes[0]))
    np.testing.assert_allclose(va, vb, rtol=1e-12, atol=0)
    np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=0)
    rel = np.abs(va - vb) / np.maximum(np.abs(vb), 1e-300)
    exact = int(np.sum(va == vb))
    return (
        f"histograms equal bin by bin: {va.size} bins x (value, variance) per histogram, {exact} values "
        f"bit-identical, max relative difference {rel.max():.1e}; sum of weights per variation "
        + ", ".join(f"{v}={a[{'variation': v}].sum().value:.6g}" for v in SF)
    )


def profile_partition(parts: list[tuple[str, int, int]]) -> None:
    """pyinstrument of distproc's partition task, in this process, on the first partition (warm)."""
    import pickle

    import cloudpickle
    import pyinstrument

    from distproc.fileset import normalize_fileset
    from distproc.partitioning import plan_partitions

    files = sorted({p[0] for p in parts})
    with tempfile.TemporaryDirectory() as cache:
        table, _ = plan_partitions(
            normalize_fileset({"ttbar": files}), chunksize=parts[0][2] - parts[0][1], cache_dir=cache
        )
    from distproc.engine import process_partition
    from distproc.engine.worker import WorkerOptions

    payload = ("profile", cloudpickle.dumps(DistprocHT()), WorkerOptions(retries=0))
    process_partition(payload, table, 0)  # warm: imports, processor unpickled
    profiler = pyinstrument.Profiler(interval=0.0005)
    profiler.start()
    for i in range(1, min(6, len(table))):
        part = process_partition(payload, table, i)
        assert not part.failures, part.failures
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    print(f"pickled partition output: {len(pickle.dumps(part))} bytes")


class Timer:
    """Wall time of a call, the CPU time (user, system) its worker processes spent meanwhile, and this
    (main) process's CPU time (coffea merges outputs here; distproc's client and scheduler live here)."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.procs = [psutil.Process(pid) for pid in pids]
        self.main = psutil.Process()

    def _cpu(self) -> np.ndarray:
        workers = np.sum([tuple(p.cpu_times())[:2] for p in self.procs], axis=0)
        return np.array([*workers, sum(tuple(self.main.cpu_times())[:2])])

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, np.ndarray]:
        cpu, start = self._cpu(), time.perf_counter()
        out = fn(*args, **kwargs)
        return out, time.perf_counter() - start, self._cpu() - cpu


def _inc(x: int) -> int:
    return x + 1


def messaging_cpu_per_task(clients: dict[str, Any], tasks: int = 3000, rounds: int = 5) -> dict[str, float]:
    """CPU milliseconds per trivial task (this process and the workers), for each cluster: what TLS adds
    to every task's messages, measured apart from the analysis (interleaved rounds, medians)."""
    import psutil

    per_task: dict[str, list[float]] = {name: [] for name in clients}
    for r in range(rounds):
        for name, client in clients.items():
            procs = [psutil.Process(), *map(psutil.Process, client.run(os.getpid).values())]
            before = sum(sum(tuple(p.cpu_times())[:2]) for p in procs)
            client.gather(client.map(_inc, range(tasks), key=[f"inc-{r}-{i}" for i in range(tasks)]))
            after = sum(sum(tuple(p.cpu_times())[:2]) for p in procs)
            per_task[name].append((after - before) / tasks * 1e3)
    return {name: statistics.median(values) for name, values in per_task.items()}


def interleaved(
    runs: dict[str, Any], timers: dict[str, Timer], rounds: int, events: int, label: str = "round"
) -> tuple[dict[str, Any], dict[str, list[float]], dict[str, list[np.ndarray]]]:
    """Each of *runs* once per round, in turn, timed by its timer; returns the last outputs, the wall
    times and the CPU times, and prints each round."""
    outputs: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[np.ndarray]] = {k: [] for k in runs}
    for r in range(rounds):
        for name, fn in runs.items():
            outputs[name], wall, cpu = timers[name](fn)
            times[name].append(wall)
            cpus[name].append(cpu)
        print(
            f"{label} {r + 1}: "
            + "  ".join(f"{k} {v[-1]:6.2f} s {events / v[-1] / 1e6:5.2f} M ev/s" for k, v in times.items())
            + f"  [{load_line()}]",
            flush=True,
        )
    return outputs, times, cpus


#: distproc's worker-side optimisations that ``--ablation`` turns off one at a time, each through its
#: documented switch: an environment variable of the workers or a run option (README, "Worker tuning").
SWITCHES = {
    "malloc tuning": {"env": {"DISTPROC_MALLOC_TUNING": "0"}},
    "open-file reuse": {"run": {"open_files": 0}},
    "in-thread local reads": {"run": {"local_reads": "fsspec"}},
}


def _set_environ(env: dict[str, str]) -> None:
    os.environ.update(env)


def run_distproc(client: Any, files: list[str], chunksize: int, processor: Any = None, **options: Any) -> Any:
    """One ``distproc.run`` of *processor* (default :class:`DistprocHT`) from an empty preprocessing cache,
    with the run *options* given."""
    with tempfile.TemporaryDirectory() as cache:
        result = distproc.run(
            processor if processor is not None else DistprocHT(),
            {"ttbar": files},
            cluster=client,
            chunksize=chunksize,
            cache_dir=cache,
            progress=False,
            **options,
        )
    assert not result.partial, result.report.failures
    return result


def run_coffea(pool: Any, workers: int, files: list[str], chunksize: int) -> Any:
    from coffea.nanoevents import NanoAODSchema
    from coffea.processor import FuturesExecutor, Runner

    runner = Runner(
        executor=FuturesExecutor(pool=pool, workers=workers, status=False),
        schema=NanoAODSchema,
        chunksize=chunksize,
        metadata_cache={},
    )
    return runner({"ttbar": files}, CoffeaHT(), treename="Events")


def ablation(workers: int, files: list[str], chunksize: int, events: int, nparts: int) -> None:
    """distproc with its worker-side optimisations switched off, one at a time (a fresh cluster each)."""
    variants = {"as committed": (), **{f"no {s}": (s,) for s in SWITCHES}, "none of them": SWITCHES}
    for name, off in variants.items():
        env = {k: v for s in off for k, v in SWITCHES[s].get("env", {}).items()}
        options = {k: v for s in off for k, v in SWITCHES[s].get("run", {}).items()}
        with distproc_local_client(workers) as client:
            client.run(_set_environ, env)  # before the worker's first partition
            client.run(_warm_up, 0.0)
            timer = Timer(list(client.run(os.getpid).values()))
            _, wall, cpu = timer(run_distproc, client, files, chunksize, **options)
        print(
            f"ablation {name:26s}: {wall:6.2f} s {events / wall / 1e6:5.2f} M ev/s, worker CPU per partition "
            f"user {cpu[0] / nparts * 1e3:5.0f} ms sys {cpu[1] / nparts * 1e3:4.0f} ms  [{load_line()}]",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="events in total (default 10M)")
    parser.add_argument("--files", type=int, default=10, help="files the events are split into (default 10)")
    parser.add_argument("--chunksize", type=int, default=100_000, help="events per partition, all runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: cores)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--profile", action="store_true", help="pyinstrument one distproc partition")
    parser.add_argument(
        "--ablation", action="store_true", help="also run distproc with its worker optimisations off"
    )
    parser.add_argument(
        "--tls-cost", action="store_true", help="also run distproc on a plain-TCP cluster: TLS/plain"
    )
    parser.add_argument("--dask", action="store_true", help="only the dask-mode comparison with coffea")
    parser.add_argument(
        "--lookup",
        choices=("correctionlib", "where"),
        default="where",
        help="--dask: the scale-factor lookup of the dask-mode analysis (default where)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Missing cross-reference", category=RuntimeWarning)
    if args.dask:
        dask_comparison(args)
        return

    info = ensure_sample("ttbar", args.events, args.files)
    parts = partitions(info.files, args.chunksize)
    events, nparts = sum(b - a for _, a, b in parts), len(parts)
    print(
        f"{events:,} ttbar events, {len(info.files)} files, {nparts} partitions of <= {args.chunksize:,} "
        f"events (same for all three), {args.workers} worker processes; {load_line()}"
    )
    if args.profile:
        profile_partition(parts)

    pools = start_pools(args.workers)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(distproc_local_client(args.workers))
        cluster_start = time.perf_counter() - t0
        client.run(_warm_up, 0.0)
        trim = worker_malloc_env(client)
        for name, (_, seconds, n) in pools.items():
            print(f"start-up {name:8s}: {seconds:6.2f} s ({n} processes, warm-up task included)")
        print(f"start-up distproc: {cluster_start:6.2f} s (LocalCluster + client, {len(trim)} workers)")
        print(f"MALLOC_TRIM_THRESHOLD_ in the distproc workers: {sorted(trim.values(), key=str)}")
        assert all(v is None for v in trim.values()), trim
        distproc_pids = list(client.run(os.getpid).values())
        timers = {
            "floor": Timer(list(pools["floor"][0]._processes)),
            "coffea": Timer(list(pools["coffea"][0]._processes)),
            "distproc": Timer(distproc_pids),
            "engine": Timer(distproc_pids),
        }
        runs = {
            "floor": lambda: run_floor(pools["floor"][0], parts),
            "coffea": lambda: run_coffea(pools["coffea"][0], args.workers, info.files, args.chunksize),
            "distproc": lambda: run_distproc(client, info.files, args.chunksize),
            "engine": lambda: run_distproc(client, info.files, args.chunksize, CoffeaHT()),
        }
        if args.tls_cost:
            with warnings.catch_warnings():  # the insecure cluster is the point of this row
                warnings.simplefilter("ignore", distproc.cluster.InsecureClusterWarning)
                plain = stack.enter_context(distproc_local_client(args.workers, security=False))
            assert plain.scheduler.address.startswith("tcp://"), plain.scheduler.address
            assert client.scheduler.address.startswith("tls://"), client.scheduler.address
            plain.run(_warm_up, 0.0)
            timers["plain"] = Timer(list(plain.run(os.getpid).values()))
            runs["plain"] = lambda: run_distproc(plain, info.files, args.chunksize)
            messaging = messaging_cpu_per_task({"distproc": client, "plain": plain})
        outputs, times, cpus = interleaved(runs, timers, args.rounds, events)
    for pool, _, _ in pools.values():
        pool.shutdown()
    if args.ablation:
        ablation(args.workers, info.files, args.chunksize, events, nparts)

    assert outputs["floor"] == events, (outputs["floor"], events)
    for name in ("distproc", "engine", "plain")[: 3 if args.tls_cost else 2]:
        assert outputs[name].report.events == events, (name, outputs[name].report.events, events)
        print(f"{name} vs coffea: " + histogram_check(outputs[name].output["ht"], outputs["coffea"]["ht"]))
    rate = {k: events / statistics.median(v) for k, v in times.items()}
    for k in times:
        user, system, main_cpu = np.median(cpus[k], axis=0) / nparts * 1e3
        print(
            f"{k:8s}: {statistics.median(times[k]):7.2f} s  {rate[k] / 1e6:6.3f} M events/s   "
            f"CPU per partition: workers user {user:4.0f} ms + system {system:3.0f} ms, main process "
            f"{main_cpu:3.0f} ms"
        )
    per_cpu = {k: nparts / np.median([c[:2].sum() for c in cpus[k]]) for k in times}
    print(
        "partitions per worker-CPU-second (less load-dependent than wall time): "
        + ", ".join(f"{k} {v:.2f}" for k, v in per_cpu.items())
        + f"; distproc/coffea={per_cpu['distproc'] / per_cpu['coffea']:.2f}"
        f" distproc/floor={per_cpu['distproc'] / per_cpu['floor']:.2f}"
    )
    print(
        f"engine only (distproc running the coffea processor unchanged): engine/coffea="
        f"{rate['engine'] / rate['coffea']:.2f} engine/floor={rate['engine'] / rate['floor']:.2f}"
    )
    if args.tls_cost:
        cpu = {k: np.median([c.sum() for c in cpus[k]]) for k in ("distproc", "plain")}
        print(
            f"TLS cost: distproc (TLS) {statistics.median(times['distproc']):.3f} s, plain TCP "
            f"{statistics.median(times['plain']):.3f} s; tls/plain wall="
            f"{rate['plain'] / rate['distproc']:.3f} CPU (workers + main process)="
            f"{cpu['distproc'] / cpu['plain']:.3f}"
        )
        # Tasks of a run: one per partition, the tree reduction's, one per file for the entry counts.
        n_tasks = nparts + math.ceil(nparts / 7) + len(info.files)
        extra = (messaging["distproc"] - messaging["plain"]) * n_tasks / 1e3
        print(
            f"TLS cost per task (3000 trivial tasks, CPU of all processes): "
            f"{messaging['distproc']:.2f} ms TLS, {messaging['plain']:.2f} ms plain; x {n_tasks} tasks = "
            f"{extra:.3f} s of the plain run's {cpu['plain']:.2f} s CPU: {extra / cpu['plain']:.1%}"
        )
    print(f"coffea/floor={rate['coffea'] / rate['floor']:.2f}  ({load_line()})")
    vs_coffea, vs_floor = rate["distproc"] / rate["coffea"], rate["distproc"] / rate["floor"]
    print(f"distproc/coffea={vs_coffea:.2f} distproc/floor={vs_floor:.2f}")


if __name__ == "__main__":
    main()
