"""Start-up cost of big jobs: time to the first task, client memory, tasks and bytes per task, vs coffea.

A job is D datasets x F files (symlinks to one small generated ttbar file of 4 partitions) x K shape
variations. distproc runs a :class:`distproc.Processor` with K :class:`distproc.systematics.Scale`
variations in ``shape_variations`` whose ``process_variation`` fills one histogram; coffea's dask-awkward
path (``coffea.dataset_tools.apply_to_fileset`` + ``dask.compute``) runs the same fill with ``hist.dask``,
once for the nominal and once per direction of each of the K scale variations. Both run on one distributed
LocalCluster of 2 single-threaded workers, started once; preprocessing is done (and cached under
``benchmarks/.data/``) before anything is timed.

Every (framework, D, F, K) runs in a fresh client process that connects to the cluster (over TLS, with
the cluster's certificate passed on its standard input), reports its
memory, and calls the run. A scheduler plugin in this process records when the first partition task
started on a worker (the compute start the worker reports) and how many finished; once the first has
started and 4 have finished the client process is stopped (so the jobs are not run to the end: the metric
is the time to the first task) and reports its peak RSS (``VmHWM``). The tasks submitted are counted by
the scheduler plugin. distproc jobs run ``--repeat`` times (default 3; the median times and the highest
RSS are shown), coffea's once. The bytes per task come from pickling the graph as ``distributed.Client`` does
(``serialize(ToPickle(graph))``), in another fresh process, divided by the number of tasks; the largest
task pickled alone is shown too.

    python benchmarks/scale.py                                   # default configurations (minutes)
    python benchmarks/scale.py --configs 10x25x0,10x25x10        # D x F x K, distproc
    python benchmarks/scale.py --coffea-configs 10x25x0          # coffea only on these
    python benchmarks/scale.py --profile 100x25x10               # pyinstrument of distproc's client
    python benchmarks/scale.py --full-run                        # only the full run below
    python benchmarks/scale.py --full-run --profile-scheduler F  # ... with the scheduler under cProfile
    python benchmarks/scale.py --dask                            # dask-mode jobs only (see below)

The last line reads ``scale first_task_s=X rss_mb=Y`` for distproc's D=100, F=25, K=10 job.

``--full-run`` runs one whole job of 10^5 partitions (``--full-partitions``) of a processor that does
almost nothing (it counts the events of a virtual NanoEvents chunk, so no branch is read): symlinks to
one 4,000-event file, 100 partitions of 40 events each. The scheduler runs in its own process
(``python -m distributed.cli.dask_scheduler``), the workers in two processes of four threads each, the
client in a fresh process with the progress bar on. It reports the scheduler's CPU time per partition
(user + system from ``/proc/PID/stat``, the whole run including the reduction), the client's and the
workers', the client's peak RSS, and the time from the last partition task's end (its compute stop, from a
scheduler plugin) to ``distproc.run`` returning. The scheduler's CPU per second while idle (workers and a
client connected, measured for 5 s before the run) is printed too, with the CPU beyond that rate per
partition: on a loaded machine the run's wall time, and so the idle share, moves a lot. The run options
``--partitions-per-task N``, ``--split-every N`` and ``--no-progress`` compare the choices the engine
made; ``--profile-scheduler FILE`` runs the scheduler under cProfile (CPU time) and prints its profile.
Its last line reads ``scale full_run scheduler_ms_per_partition=X client_rss_mb=Y``.

``--dask`` runs only the dask-mode jobs (``--dask-configs``): coffea's dask-mode processor above, unchanged,
through ``distproc.run(..., mode="dask")`` on the fileset coffea's ``preprocess`` wrote (so both start from
the same steps; distproc opens nothing to plan). Its last line reads ``scale dask first_task_s=X
rss_mb=Y`` for the D=100, F=25, K=10 job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, distproc_local_client, ensure_sample, load_line
from distributed.diagnostics.plugin import SchedulerPlugin

import distproc
from distproc.systematics import Scale, ShapeVariations

#: Events per partition; each generated file holds 4 partitions.
CHUNK = 1000
PARTS_PER_FILE = 4
DEFAULT_CONFIGS = "10x25x0,10x25x10,100x25x0,100x25x10,1000x1x0,1000x1x10"
DEFAULT_COFFEA = "10x25x0,10x25x10,100x25x10,1000x1x0"
DEFAULT_DASK = "100x25x10,1000x1x0,1000x1x10"
#: The client process is stopped once the first task started and this many finished.
DONE_TO_STOP = 4


def variation_names(k: int) -> list[str]:
    return ["nominal", *(f"jes{i}_{d}" for i in range(k) for d in ("up", "down"))]


def jet_hist() -> Any:
    import hist

    return hist.Hist.new.Reg(50, 0.0, 500.0, name="pt").Weight()


class DistprocScale(distproc.Processor):
    """K jet-energy-scale variations (1 %, 2 %, ...) declared as shape variations; one histogram."""

    def __init__(self, k: int) -> None:
        self.shape_variations = ShapeVariations(*(Scale(f"jes{i}", 0.01 * (i + 1)) for i in range(k)))

    def process_variation(self, events: Any, variation: str) -> Any:
        import awkward as ak

        pt = events.Jet.pt
        h = jet_hist()
        h.fill(pt=ak.flatten(pt), weight=ak.flatten(ak.broadcast_arrays(events.genWeight, pt)[0]))
        return {"jet_pt": h}


def coffea_processor(k: int) -> Any:
    """The same analysis as a coffea dask-awkward user writes it (hist.dask, one fill per variation)."""
    from coffea.processor import ProcessorABC

    class CoffeaScale(ProcessorABC):
        def __init__(self, k: int) -> None:
            self.k = k

        def process(self, events: Any) -> Any:
            import dask_awkward as dak
            import hist.dask as hda

            pt = events.Jet.pt
            weight = dak.flatten(dak.broadcast_arrays(events.genWeight, pt)[0])
            h = (
                hda.Hist.new.StrCat(variation_names(self.k), name="variation")
                .Reg(50, 0.0, 500.0, name="pt")
                .Weight()
            )
            h.fill(variation="nominal", pt=dak.flatten(pt), weight=weight)
            for i in range(self.k):
                for direction, factor in (("up", 1 + 0.01 * (i + 1)), ("down", 1 - 0.01 * (i + 1))):
                    h.fill(variation=f"jes{i}_{direction}", pt=dak.flatten(pt * factor), weight=weight)
            return {"jet_pt": h}

        def postprocess(self, accumulator: Any) -> Any:
            return accumulator

    return CoffeaScale(k)


# --- inputs --------------------------------------------------------------------------------------------
def base_file() -> str:
    return ensure_sample("ttbar", CHUNK * PARTS_PER_FILE, 1, seed=2).files[0]


def fileset(d: int, f: int) -> dict[str, list[str]]:
    """D datasets of F symlinks each to the base file (created once under ``.data/scale-links``)."""
    target = base_file()
    out = {}
    for i in range(d):
        directory = DATA_DIR / "scale-links" / f"d{i:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for j in range(f):
            link = directory / f"f{j:03d}.root"
            if not link.is_symlink():
                link.symlink_to(target)
            paths.append(str(link))
        out[f"dataset{i:04d}"] = paths
    return out


CACHE_DIR = DATA_DIR / "scale-distproc-cache"


def coffea_prep_path(d: int, f: int) -> Path:
    return DATA_DIR / f"scale-coffea-prep-{d}x{f}.json"


def prepare(framework: str, d: int, f: int, client: Any) -> None:
    """Preprocess once (cached on disk): distproc's entry counts, coffea's runnable fileset (also the
    input of the dask-mode jobs)."""
    if framework == "distproc":
        from distproc.fileset import normalize_fileset
        from distproc.partitioning import plan_partitions

        table, _ = plan_partitions(
            normalize_fileset(fileset(d, f)), chunksize=CHUNK, client=client, cache_dir=CACHE_DIR
        )
        assert len(table) == d * f * PARTS_PER_FILE, len(table)
        return
    path = coffea_prep_path(d, f)
    if path.exists():
        return
    from coffea.dataset_tools import preprocess

    spec = {name: {"files": {p: "Events" for p in paths}} for name, paths in fileset(d, f).items()}
    runnable, _ = preprocess(spec, step_size=CHUNK, align_clusters=False, save_form=False)
    steps = sum(len(x["steps"]) for ds in runnable.values() for x in ds["files"].values())
    assert steps == d * f * PARTS_PER_FILE, steps
    path.write_text(json.dumps(runnable))


# --- the client process --------------------------------------------------------------------------------
def _vm_hwm_mib() -> float:
    """Peak RSS of this process (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def child(framework: str, d: int, f: int, k: int, address: str, profile: str | None) -> None:
    """Connect, report memory, run the job until the parent sends SIGUSR1, then report the peak RSS.

    The cluster's TLS certificate (a pickled :class:`distributed.security.Security`) comes on stdin.
    """
    import dask
    from distributed import Client

    if framework == "coffea":
        from coffea.dataset_tools import apply_to_fileset
        from coffea.nanoevents import NanoAODSchema

    if framework in ("coffea", "dask"):
        runnable = json.loads(coffea_prep_path(d, f).read_text())
    else:
        files = fileset(d, f)
    client = Client(address, security=pickle.loads(sys.stdin.buffer.read()))
    profiler = None
    if profile:
        import pyinstrument

        profiler = pyinstrument.Profiler(interval=0.001)

    def stop(*_: Any) -> None:
        if profiler is not None:
            profiler.stop()
            Path(profile).write_text(profiler.output_text(unicode=False, color=False))
        _emit(event="end", peak_rss_mib=_vm_hwm_mib())
        os._exit(0)

    signal.signal(signal.SIGUSR1, stop)
    _emit(event="ready", rss_mib=_vm_hwm_mib())
    if profiler is not None:
        profiler.start()
    _emit(event="t0", t=time.time())
    if framework == "coffea":
        out = apply_to_fileset(coffea_processor(k), runnable, schemaclass=NanoAODSchema)
        dask.compute(out)
    elif framework == "dask":
        distproc.run(coffea_processor(k), runnable, cluster=client, mode="dask", progress=False)
    else:
        distproc.run(
            DistprocScale(k), files, cluster=client, chunksize=CHUNK, cache_dir=str(CACHE_DIR), progress=False
        )
    _emit(event="finished", t=time.time())
    stop()


def pickle_child(framework: str, d: int, f: int, k: int) -> None:
    """Pickle the job's graph as ``distributed.Client`` does; report bytes per task."""
    from dask.highlevelgraph import HighLevelGraph
    from distributed.protocol import serialize
    from distributed.protocol.serialize import ToPickle

    if framework == "coffea":
        import dask
        from coffea.dataset_tools import apply_to_fileset
        from coffea.nanoevents import NanoAODSchema

        runnable = json.loads(coffea_prep_path(d, f).read_text())
        out = apply_to_fileset(coffea_processor(k), runnable, schemaclass=NanoAODSchema)
        collections, _ = dask.base.unpack_collections(out, traverse=True)
        graph = dask.base.collections_to_dsk(collections, optimize_graph=True)
        tasks = dict(graph)
    else:
        from distproc.engine import build_graph
        from distproc.fileset import normalize_fileset
        from distproc.partitioning import plan_partitions

        if framework == "dask":
            from distproc.engine.dask_mode import DaskModeProcessor

            job = normalize_fileset(json.loads(coffea_prep_path(d, f).read_text()))
            processor: Any = DaskModeProcessor(coffea_processor(k))
        else:
            job, processor = normalize_fileset(fileset(d, f)), DistprocScale(k)
        table, _ = plan_partitions(job, chunksize=CHUNK, cache_dir=CACHE_DIR)
        tasks, _, _ = build_graph(processor, table, schema="nanoaod", retries=3, split_every=8)
        graph = HighLevelGraph.from_collections(id(tasks), tasks, dependencies=())
    header, frames = serialize(ToPickle(graph), on_error="raise")
    total = sum(len(x) for x in frames) + len(pickle.dumps(header))
    # distproc's processor and partition table are data keys shared by every task: shown apart
    shared = {k: v for k, v in tasks.items() if isinstance(k, str) and k.startswith("distproc-")}
    others = [v for k, v in tasks.items() if k not in shared]
    sample = random.Random(0).sample(others, min(len(others), 300))
    largest = max(len(pickle.dumps(t, protocol=5)) if _plain(t) else _cloud_len(t) for t in sample)
    _emit(
        tasks=len(tasks),
        graph_bytes=total,
        bytes_per_task=total / len(tasks),
        largest_task=largest,
        shared_bytes={k.split("-")[1]: len(pickle.dumps(v, protocol=5)) for k, v in shared.items()},
    )


def _plain(obj: Any) -> bool:
    try:
        pickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001  (not plain-picklable: distributed falls back to cloudpickle)
        return False
    return True


def _cloud_len(obj: Any) -> int:
    import cloudpickle

    return len(cloudpickle.dumps(obj, protocol=5))


# --- the parent ----------------------------------------------------------------------------------------
class Probe(SchedulerPlugin):
    """Scheduler plugin: tasks submitted, earliest compute start reported by workers, tasks finished."""

    name = "scale-probe"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.keys: set[Any] = set()
        self.submitted_at: float | None = None
        self.first_start: float | None = None
        self.done = 0

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        self.keys.update(tasks)  # a later graph lists the earlier keys it refers to again
        self.submitted_at = time.time()

    @property
    def submitted(self) -> int:
        return len(self.keys)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or finish != "memory":
            return
        for ss in kwargs.get("startstops") or ():
            if ss.get("action") == "compute":
                t = float(ss["start"])
                self.first_start = t if self.first_start is None else min(self.first_start, t)
        self.done += 1


def measure(
    framework: str,
    config: tuple[int, int, int],
    expected_tasks: int,
    address: str,
    security: Any,
    probe: Probe,
    scheduler: Any,
    profile: str | None,
) -> dict[str, Any]:
    """One configuration in a fresh client process (connecting with *security*); returns the figures.

    The client is stopped once the first task started, :data:`DONE_TO_STOP` finished and the scheduler
    holds all *expected_tasks* of the job.
    """
    d, f, k = config
    while scheduler.tasks:  # the previous client's tasks are being released
        time.sleep(0.05)
    probe.reset()
    cmd = [sys.executable, __file__, "--child", framework, f"{d}x{f}x{k}", "--address", address]
    if profile:
        cmd += ["--profile-out", profile]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.stdin.buffer.write(pickle.dumps(security))  # the certificate: not on the command line
    proc.stdin.close()
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 1800
    while time.time() < deadline and proc.poll() is None:
        started = probe.first_start is not None and probe.done >= DONE_TO_STOP
        if started and probe.submitted >= expected_tasks:
            break
        time.sleep(0.02)
    submitted, submitted_at = probe.submitted, probe.submitted_at
    first_start, done = probe.first_start, probe.done
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(10)
    events = {x["event"]: x for x in lines}
    t0 = events["t0"]["t"]
    return {
        "framework": framework,
        "config": (d, f, k),
        "partitions": d * f * PARTS_PER_FILE,
        "first_task_s": None if first_start is None else first_start - t0,
        "all_submitted_s": None if submitted_at is None else submitted_at - t0,
        "done_when_stopped": done,
        "rss_ready_mib": events["ready"]["rss_mib"],
        "peak_rss_mib": events.get("end", {}).get("peak_rss_mib"),
        "tasks_submitted": submitted,
    }


def pickled(framework: str, d: int, f: int, k: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--pickle", framework, f"{d}x{f}x{k}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the full run --------------------------------------------------------------------------------------
FULL_CHUNK = 40  # events per partition of the full run: 100 partitions per 4,000-event file
FULL_PER_FILE = CHUNK * PARTS_PER_FILE // FULL_CHUNK


class CountEvents(distproc.Processor):
    """Almost nothing: the number of events of each dataset (no branch is read)."""

    def process(self, events: Any) -> Any:
        return {"events": {events.metadata["dataset"]: len(events)}}


def full_fileset(partitions: int) -> dict[str, list[str]]:
    """Symlinks to the base file, enough for *partitions* partitions of FULL_CHUNK events, 100 per dataset."""
    target = base_file()
    files = -(-partitions // FULL_PER_FILE)
    out: dict[str, list[str]] = {}
    for j in range(files):
        directory = DATA_DIR / "scale-full-links" / f"d{j // 100:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        link = directory / f"f{j % 100:03d}.root"
        if not link.is_symlink():
            link.symlink_to(target)
        out.setdefault(f"dataset{j // 100:04d}", []).append(str(link))
    return out


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process *pid* (``/proc/PID/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LastPartition(SchedulerPlugin):
    """Scheduler plugin of the full run: the latest compute stop of distproc's partition tasks."""

    name = "scale-last-partition"

    def __init__(self) -> None:
        self.last_stop = 0.0
        self.partitions = 0
        self.tasks = 0

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or finish != "memory" or not isinstance(key, tuple):
            return
        if not str(key[0]).startswith("distproc-process-"):
            return
        self.tasks += 1
        self.partitions += key[2] - key[1]  # a partition task's key is (name, lo, hi)
        for ss in kwargs.get("startstops") or ():
            if ss.get("action") == "compute":
                self.last_stop = max(self.last_stop, float(ss["stop"]))


#: Seconds the full run measures the scheduler's CPU while idle (workers and a client connected).
IDLE_SECONDS = 5.0


def _import_engine() -> None:
    """On the scheduler: import what a run's plugins need (a fresh scheduler's one-time cost)."""
    import distproc.engine.ledger  # noqa: F401


def full_child(scheduler_file: str, partitions: int, options: dict[str, Any]) -> None:
    """The full run's client process: run the whole job (with the run *options*), report times and the
    peak RSS."""
    from distributed import Client

    files = full_fileset(partitions)
    with Client(scheduler_file=scheduler_file) as client:
        _emit(event="ready", rss_mib=_vm_hwm_mib())
        start, cpu = time.time(), sum(os.times()[:2])
        result = distproc.run(
            CountEvents(),
            files,
            cluster=client,
            chunksize=FULL_CHUNK,
            cache_dir=str(CACHE_DIR),
            max_chunks=None,
            **{"progress": True, **options},
        )
        end = time.time()
        cpu = sum(os.times()[:2]) - cpu
        events = sum(result.output["events"].values())
        _emit(event="finished", t0=start, t=end, events=events, partial=result.partial, cpu_s=cpu)
    _emit(event="end", peak_rss_mib=_vm_hwm_mib())


def _module_cmd(cli: str, scheduler_file: str) -> list[str]:
    """``python -m distributed.cli.<cli>`` with the scheduler file and no dashboard."""
    return [
        sys.executable,
        "-m",
        f"distributed.cli.{cli}",
        "--scheduler-file",
        scheduler_file,
        "--no-dashboard",
    ]


def full_run(
    partitions: int, options: dict[str, Any], nworkers: int = 2, nthreads: int = 4, profile: str = ""
) -> None:
    """Scheduler, workers and client in their own processes; one whole job of *partitions* partitions
    with the run *options* (``partitions_per_task``, ``split_every``; unset: the defaults).

    With *profile*, the scheduler runs under cProfile and the top of its profile is printed (the figures
    then include the profiler's own cost).
    """
    from distributed import Client

    from distproc.fileset import normalize_fileset
    from distproc.partitioning import plan_partitions

    print(
        f"{load_line()}; full run: {partitions:,} partitions of {FULL_CHUNK} events, options {options}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        scheduler_file = str(Path(tmp) / "scheduler.json")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        cmd = _module_cmd("dask_scheduler", scheduler_file)
        if profile:  # CPU time, not wall time: the machine is shared
            code = (
                "import cProfile, runpy, sys, time; sys.argv[0] = 'dask-scheduler'; "
                "p = cProfile.Profile(time.process_time); p.enable()\n"
                "try: runpy.run_module('distributed.cli.dask_scheduler', run_name='__main__')\n"
                f"finally: p.disable(); p.dump_stats({profile!r})"
            )
            cmd[1:3] = ["-c", code]
        scheduler = subprocess.Popen([*cmd, "--port", "0"], **quiet)
        workers = subprocess.Popen(
            [
                *_module_cmd("dask_worker", scheduler_file),
                "--nworkers",
                str(nworkers),
                "--nthreads",
                str(nthreads),
            ],
            **quiet,
        )
        try:
            while not Path(scheduler_file).exists():
                time.sleep(0.1)
            with Client(scheduler_file=scheduler_file) as client:
                client.wait_for_workers(nworkers)
                table, _ = plan_partitions(  # preprocessing, cached: not part of the figures
                    normalize_fileset(full_fileset(partitions)),
                    chunksize=FULL_CHUNK,
                    client=client,
                    cache_dir=CACHE_DIR,
                )
                client.register_plugin(LastPartition())
                worker_pids = list(client.run(os.getpid).values())
                client.run_on_scheduler(_import_engine)  # once per scheduler, not per partition
                idle_cpu, idle_start = _proc_cpu_s(scheduler.pid), time.monotonic()
                time.sleep(IDLE_SECONDS)
                idle_rate = (_proc_cpu_s(scheduler.pid) - idle_cpu) / (time.monotonic() - idle_start)
                sched_cpu = _proc_cpu_s(scheduler.pid)
                worker_cpu = sum(_proc_cpu_s(pid) for pid in worker_pids)
                out = subprocess.run(
                    [
                        *(sys.executable, __file__, "--full-child", str(partitions)),
                        *("--address", scheduler_file, "--full-options", json.dumps(options)),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                sched_cpu = _proc_cpu_s(scheduler.pid) - sched_cpu
                worker_cpu = sum(_proc_cpu_s(pid) for pid in worker_pids) - worker_cpu

                def probe(dask_scheduler: Any) -> tuple[float, int, int]:
                    plugin = dask_scheduler.plugins[LastPartition.name]
                    return plugin.last_stop, plugin.partitions, plugin.tasks

                last_stop, done, tasks = client.run_on_scheduler(probe)
        finally:
            workers.terminate()
            scheduler.terminate()
            workers.wait(60)
            scheduler.wait(60)
    events = {}
    for line in out.stdout.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            events[item["event"]] = item
    finished = events["finished"]
    n = len(table)
    wall = finished["t"] - finished["t0"]
    print(
        f"{n:,} partitions ({done:,} in {tasks:,} partition tasks seen by the scheduler, "
        f"{finished['events']:,} events, "
        f"partial={finished['partial']}) in {wall:.1f} s: scheduler CPU {sched_cpu:.1f} s "
        f"({1e3 * sched_cpu / n:.3f} ms per partition), client CPU {finished['cpu_s']:.1f} s "
        f"({1e3 * finished['cpu_s'] / n:.3f} ms per partition), workers CPU {worker_cpu:.1f} s; "
        f"client peak RSS {events['end']['peak_rss_mib']:.0f} MiB "
        f"(connected {events['ready']['rss_mib']:.0f}); "
        f"last partition -> result {finished['t'] - last_stop:.2f} s  [{load_line()}]",
        flush=True,
    )
    beyond = sched_cpu - idle_rate * wall
    print(
        f"scheduler idle {1e3 * idle_rate:.1f} ms/s before the run; beyond that rate over the run's "
        f"{wall:.1f} s: {1e3 * beyond / n:.3f} ms per partition",
        flush=True,
    )
    if profile:
        import pstats

        pstats.Stats(profile).sort_stats("tottime").print_stats(40)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(60)
    print(
        f"scale full_run scheduler_ms_per_partition={1e3 * sched_cpu / n:.3f} "
        f"client_rss_mb={events['end']['peak_rss_mib']:.0f}"
    )


def parse_configs(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in item.split("x")) for item in text.split(",") if item]  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="distproc jobs, DxFxK,...")
    parser.add_argument("--coffea-configs", default=DEFAULT_COFFEA, help="coffea jobs ('' for none)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="distproc runs per job (median time, highest RSS)"
    )
    parser.add_argument("--profile", default="", help="DxFxK: pyinstrument distproc's client on that job")
    parser.add_argument("--dask", action="store_true", help="only the dask-mode jobs (--dask-configs)")
    parser.add_argument("--dask-configs", default=DEFAULT_DASK, help="dask-mode jobs, DxFxK,...")
    parser.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "DxFxK"), help=argparse.SUPPRESS)
    parser.add_argument("--pickle", nargs=2, metavar=("FRAMEWORK", "DxFxK"), help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--full-run", action="store_true", help="only the full run of --full-partitions")
    parser.add_argument("--full-partitions", type=int, default=100_000)
    parser.add_argument("--full-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--full-options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--partitions-per-task", type=int, help="with --full-run: the run option")
    parser.add_argument("--split-every", type=int, help="with --full-run: the run option")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="with --full-run"
    )
    parser.add_argument(
        "--profile-scheduler", default="", help="with --full-run: cProfile the scheduler into this file"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Missing cross-reference", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Passing a dict to preprocess", category=DeprecationWarning)
    if args.child:
        d, f, k = parse_configs(args.child[1])[0]
        child(args.child[0], d, f, k, args.address, args.profile_out)
        return
    if args.pickle:
        d, f, k = parse_configs(args.pickle[1])[0]
        pickle_child(args.pickle[0], d, f, k)
        return
    if args.full_child:
        full_child(args.address, args.full_child, json.loads(args.full_options))
        return
    if args.full_run:
        given = {
            "partitions_per_task": args.partitions_per_task,
            "split_every": args.split_every,
            "progress": args.progress,
        }
        options = {k: v for k, v in given.items() if v is not None}
        full_run(args.full_partitions, options, profile=args.profile_scheduler)
        return

    jobs = [("distproc", c) for c in parse_configs(args.configs)]
    jobs += [("coffea", c) for c in parse_configs(args.coffea_configs)]
    if args.dask:
        jobs = [("dask", c) for c in parse_configs(args.dask_configs)]
    profile_config = tuple(parse_configs(args.profile)[0]) if args.profile else None
    print(f"{load_line()}; {CHUNK} events per partition, {PARTS_PER_FILE} partitions per file", flush=True)
    results = []
    with distproc_local_client(2) as client:
        scheduler = client.cluster.scheduler
        probe = Probe()
        scheduler.add_plugin(probe, name=Probe.name)
        for framework, (d, f, k) in jobs:
            start = time.perf_counter()
            prepare(framework, d, f, client)
            prep = time.perf_counter() - start
            profile = None
            if framework == "distproc" and (d, f, k) == profile_config:
                profile = str(Path(tempfile.gettempdir()) / f"scale-profile-{os.getpid()}.txt")
            sizes = pickled(framework, d, f, k)
            rows = [
                measure(
                    framework,
                    (d, f, k),
                    sizes["tasks"],
                    client.scheduler.address,
                    client.security,
                    probe,
                    scheduler,
                    profile if i == 0 else None,
                )
                for i in range(args.repeat if framework != "coffea" else 1)
            ]
            row = _median_row(rows)
            row.update(sizes)
            row["prep_s"] = prep
            results.append(row)
            print(
                f"{framework:8s} D={d:<5d} F={f:<3d} K={k:<3d} {row['partitions']:>6d} partitions: "
                f"first task {_fmt(row['first_task_s'])} s (all tasks in {_fmt(row['all_submitted_s'])} s; "
                f"runs: {', '.join(_fmt(x) for x in row['first_task_s_all'])} s), "
                f"client peak RSS {_fmt(row['peak_rss_mib'], 0)} MiB "
                f"(connected {row['rss_ready_mib']:.0f}), {row['tasks_submitted']} tasks submitted, "
                f"{row['bytes_per_task']:,.0f} B/task pickled (largest task {row['largest_task']:,} B"
                + "".join(f", {k} {v:,} B" for k, v in row["shared_bytes"].items())
                + ")"
                f"  [{load_line()}]",
                flush=True,
            )
            if profile:
                with contextlib.suppress(OSError):
                    print(Path(profile).read_text())
                    Path(profile).unlink()
    print_table(results)
    main_row = next(
        (r for r in results if r["framework"] == "distproc" and r["config"] == (100, 25, 10)), None
    )
    if main_row is not None:
        print(f"scale first_task_s={main_row['first_task_s']:.2f} rss_mb={main_row['peak_rss_mib']:.0f}")
    _print_dask_line(results)


def _print_dask_line(results: list[dict[str, Any]]) -> None:
    """The last line of ``--dask``: the D=100, F=25, K=10 dask-mode job."""
    row = next((r for r in results if r["framework"] == "dask" and r["config"] == (100, 25, 10)), None)
    if row is not None:
        print(f"scale dask first_task_s={row['first_task_s']:.2f} rss_mb={row['peak_rss_mib']:.0f}")


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median times and the highest peak RSS of repeated measurements of one job."""
    import statistics

    row = dict(rows[0])
    for key in ("first_task_s", "all_submitted_s"):
        values = [r[key] for r in rows if r[key] is not None]
        row[key] = statistics.median(values) if values else None
        row[f"{key}_all"] = [r[key] for r in rows]
    row["peak_rss_mib"] = max((r["peak_rss_mib"] or 0) for r in rows) or None
    return row


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print(
        "| framework | D | F | K | partitions | tasks submitted | first task (s) | all tasks in (s) "
        "| client peak RSS (MiB) | bytes/task (graph) | largest task (B) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d, f, k = r["config"]
        print(
            f"| {r['framework']} | {d} | {f} | {k} | {r['partitions']:,} | {r['tasks_submitted']:,} | "
            f"{_fmt(r['first_task_s'])} | {_fmt(r['all_submitted_s'])} | {_fmt(r['peak_rss_mib'], 0)} | "
            f"{r['bytes_per_task']:,.0f} | {r['largest_task']:,} |"
        )
    print()


if __name__ == "__main__":
    main()
