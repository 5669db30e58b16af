"""The cost of checkpointing, and the time to resume a run interrupted at 90 %.

The throughput benchmark's job (``benchmarks/throughput.py``: the ``DistprocHT`` analysis over generated
ttbar files), on one LocalCluster started first:

1. **overhead** - ``distproc.run`` with ``checkpoint=None`` and with a fresh checkpoint directory,
   interleaved ``--rounds`` times (the order alternating, so a drift of the machine's load hits both);
   the overhead is the median over rounds of each pair's wall-time ratio (target <= 5 %). The workers'
   CPU time of each run (read from ``/proc`` through psutil) is compared the same way: on a shared
   machine it moves far less with other load than wall time does, and shows what checkpointing costs;
2. **resume** - ``distproc run`` (the command line, its own LocalCluster) is interrupted with SIGINT once
   90 % of the partitions are in its checkpoint; the rerun (``distproc.run`` with that checkpoint, on the
   benchmark's cluster) is timed against the median full checkpointed run (target <= 15 %). How many
   checkpoint files the rerun read is printed: one per covering subtree, not one per partition.

    python benchmarks/checkpoint.py                      # 2M events, 40 partitions, 3 rounds
    python benchmarks/checkpoint.py --events 500000 --rounds 1

The last line reads ``checkpoint overhead=X% resume_fraction=Y``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import distproc_local_client, ensure_sample, load_line

import distproc
from distproc.engine.checkpoint import checkpoint_status

THROUGHPUT = Path(__file__).resolve().parent / "throughput.py"


def interrupt_at(config: Path, out: Path, fraction: float) -> tuple[int, int]:
    """Run ``distproc run CONFIG --output OUT`` and SIGINT it once *fraction* of its partitions are in
    the checkpoint; returns ``(done, planned)`` then."""
    ckpt = out / ".checkpoint"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distproc.cli", "run", str(config), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proc.poll() is None:
        if (ckpt / "meta.json").exists():
            done, planned = checkpoint_status(ckpt)
            if planned and done >= fraction * planned:
                proc.send_signal(signal.SIGINT)
                break
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=300)
    if proc.returncode != 3:
        sys.exit(f"the interrupted run exited {proc.returncode}, not 3:\n{stderr}")
    return checkpoint_status(ckpt)


def worker_cpu(client: Any) -> float:
    """User + system CPU seconds used so far by the cluster's worker processes."""

    def own() -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system

    return sum(client.run(own).values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2_000_000, help="events in total (default 2M)")
    parser.add_argument("--files", type=int, default=4, help="files the events are split into (default 4)")
    parser.add_argument("--chunksize", type=int, default=50_000, help="events per partition")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: cores)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; medians are reported")
    args = parser.parse_args(argv)

    info = ensure_sample("ttbar", args.events, args.files)
    fileset = {"ttbar": {"files": dict.fromkeys(info.files, "Events")}}
    processor = distproc.load_processor(f"{THROUGHPUT}:DistprocHT")
    options = {"chunksize": args.chunksize, "progress": False}
    print(f"{args.events:,} events, chunksize {args.chunksize:,}, {args.workers} workers; {load_line()}")
    work = Path(tempfile.mkdtemp(prefix="distproc-ckpt-bench-"))
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    on_walls: list[float] = []
    try:
        with distproc_local_client(args.workers) as client:
            distproc.run(
                processor, fileset, cluster=client, **options
            )  # warm-up: imports, preprocessing cache
            for r in range(args.rounds):
                order = ("off", "on") if r % 2 == 0 else ("on", "off")
                runs = {}
                for kind in order:
                    checkpoint = work / f"ckpt-{r}" if kind == "on" else None
                    before = worker_cpu(client)
                    result = distproc.run(
                        processor, fileset, cluster=client, checkpoint=checkpoint, **options
                    )
                    runs[kind] = (result, worker_cpu(client) - before)
                (off, off_cpu), (on, on_cpu) = runs["off"], runs["on"]
                assert (on.output["ht"].values() == off.output["ht"].values()).all()
                ratios["wall"].append(on.report.wall_seconds / off.report.wall_seconds)
                ratios["cpu"].append(on_cpu / off_cpu)
                on_walls.append(on.report.wall_seconds)
                print(
                    f"round {r}: off {off.report.wall_seconds:6.2f} s ({off_cpu:5.2f} s CPU)  "
                    f"on {on.report.wall_seconds:6.2f} s ({on_cpu:5.2f} s CPU)"
                )
            overhead = 100 * (statistics.median(ratios["wall"]) - 1)
            cpu_overhead = 100 * (statistics.median(ratios["cpu"]) - 1)
            on_wall = statistics.median(on_walls)
            print(
                f"checkpointing on/off, median of the rounds: wall {overhead:+.1f} %, "
                f"workers' CPU {cpu_overhead:+.1f} %"
            )

            config = work / "run.yaml"
            config.write_text(
                textwrap.dedent(f"""\
                processor: {THROUGHPUT}:DistprocHT
                fileset: {json.dumps(fileset)}
                cluster: {{kind: local, workers: {args.workers}}}
                chunksize: {args.chunksize}
                progress: false
                """)
            )
            out = work / "interrupted"
            done, planned = interrupt_at(config, out, 0.9)
            if done == planned:
                sys.exit(
                    f"the run finished ({done} partitions) before it could be interrupted: give more --events"
                )
            entries = len(list((out / ".checkpoint" / "entries").glob("*.pkl")))
            print(f"interrupted at {done}/{planned} partitions; {entries} checkpoint files hold them")
            resumed = distproc.run(
                processor, fileset, cluster=client, checkpoint=out / ".checkpoint", **options
            )
            assert resumed.report.resumed_partitions == done
            assert (resumed.output["ht"].values() == on.output["ht"].values()).all()
            fraction = resumed.report.wall_seconds / on_wall
            print(
                f"resume: {resumed.report.wall_seconds:.2f} s for {planned - done} partitions, "
                f"{fraction:.3f} of a full run"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"checkpoint overhead={overhead:.1f}% cpu_overhead={cpu_overhead:.1f}% resume_fraction={fraction:.3f}"
    )


if __name__ == "__main__":
    main()
