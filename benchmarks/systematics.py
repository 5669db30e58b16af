"""Cost of shape systematics through the engine: K Scale variations of the jet pT, K = 0, 1, 4, 8.

A processor declares ``shape_variations`` with K one-sided :class:`~distproc.systematics.Scale`
variations of ``Jet.pt`` (delta = 1 %, 2 %, ... K %); :meth:`process_variation` runs once for the
nominal and once per variation inside the task of each chunk: jets with pT > 30 GeV, events with at least
two of them, a weight of genWeight times a jet scale factor (:class:`~distproc.systematics.BinnedLookup`)
and the ``lepton_sf`` correctionlib correction (both with up/down weight variations, via coffea's
``Weights`` and :func:`~distproc.systematics.weight_variations`), and a weighted HT histogram with a
``variation`` axis.

Every K runs through ``distproc.run`` on the same generated ttbar files (cached under
``benchmarks/.data/``), the same partitions and the same 2-worker LocalCluster, started once and warmed up
first. Rounds over all K are interleaved (``--rounds``, default 3). For each K the script prints the
fastest round's wall time (and the median), the cost of one variation relative to the nominal pass,
``(t_K - t_0) / K / t_0``, and the task count of ``distproc.engine.build_graph`` on the same partition
table, and the bytes read, and asserts that the task count and the bytes read are the same for every K
(variations add work inside tasks on the chunk already read, never tasks or I/O) and that the nominal
histogram does not depend on K.

    python benchmarks/systematics.py                     # 1M ttbar events (generated once)
    python benchmarks/systematics.py --events 100000     # quick check
    python benchmarks/systematics.py --rounds 5          # fastest of 5 interleaved rounds (default 3)

The last line reads ``systematics per_variation_rel=X.XX (K=8) tasks_flat=True``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea.analysis_tools import Weights

import distproc
from distproc.systematics import BinnedLookup, Correction, Scale, ShapeVariations, weight_variations

HERE = Path(__file__).resolve()
#: Generated samples live here (git-ignored) and are reused by later invocations.
DATA_DIR = HERE.parent / ".data"
CORRECTIONS = HERE.parents[1] / "processors" / "data" / "corrections.json"
#: The weight variations on the histogram's ``variation`` axis (then come the shape variations).
WEIGHT_VARIATIONS = ("jet_sfDown", "jet_sfUp", "lepton_sfDown", "lepton_sfUp")


class ScaleScanHT(distproc.Processor):
    """HT of jets with pT > 30 GeV under the nominal and *k* Scale variations of the jet pT."""

    def __init__(self, k: int = 0) -> None:
        self.k = k
        self.shape_variations = ShapeVariations(
            *(Scale(f"scale{i}", 0.01 * (i + 1), directions=("up",)) for i in range(k))
        )
        self.jet_sf = BinnedLookup(
            edges=[30.0, 50.0, 80.0, 120.0, 200.0, np.inf],
            values=[0.97, 0.98, 1.0, 1.01, 1.03],
            variations={"up": [0.99, 1.0, 1.015, 1.03, 1.06], "down": [0.95, 0.96, 0.985, 0.99, 1.0]},
            inputs=("pt",),
            name="jet_sf",
        )
        self.lepton_sf = Correction(CORRECTIONS, "lepton_sf")

    def process_variation(self, events: Any, variation: str) -> dict[str, Any]:
        jets = events.Jet[events.Jet["pt"] > 30.0]
        selected = ak.num(jets) >= 2
        events, jets = events[selected], jets[selected]
        muons = events.Muon[events.Muon["pt"] > 10.0]
        jet_pt, muon_pt, muon_abseta = jets["pt"], muons["pt"], abs(muons["eta"])
        weights = Weights(len(events))
        weights.add("genweight", ak.to_numpy(events.genWeight))
        jet = {
            d: ak.to_numpy(ak.prod(self.jet_sf(jet_pt, variation=d), axis=1))
            for d in ("nominal", "up", "down")
        }
        weights.add("jet_sf", jet["nominal"], weightUp=jet["up"], weightDown=jet["down"])
        lepton = {
            d: ak.to_numpy(ak.prod(self.lepton_sf(muon_pt, muon_abseta, d), axis=1))
            for d in ("nominal", "up", "down")
        }
        weights.add("lepton_sf", lepton["nominal"], weightUp=lepton["up"], weightDown=lepton["down"])
        ht = ak.to_numpy(ak.sum(jet_pt, axis=1))
        h = hist.Hist.new.StrCat([], name="variation", growth=True).Reg(60, 0.0, 1800.0, name="ht").Weight()
        for name, weight in weight_variations(weights).items():
            h.fill(variation=name, ht=ht, weight=weight)
        return {"ht": h, "events": len(events)}


def ensure_sample(events: int, files: int, seed: int) -> Any:
    """A generated ttbar sample of *events* events in *files* files under ``DATA_DIR``, made once.

    The directory name, ``ttbar-<events>x<files>-seed<seed>``, is the one the other benchmarks use, so
    they share samples.
    """
    from distproc.samples import load_samples, make_sample

    out = DATA_DIR / f"ttbar-{events}x{files}-seed{seed}"
    with contextlib.suppress(Exception):
        info = load_samples(out)["ttbar"]
        if info.events == events and len(info.files) == files and all(Path(f).exists() for f in info.files):
            return info
    start = time.perf_counter()
    print(f"generating {events:,} ttbar events in {files} file(s) under {out} ...", flush=True)
    info = make_sample("ttbar", events, out, seed=seed, events_per_file=-(-events // files))
    print(f"  generated in {time.perf_counter() - start:.1f} s", flush=True)
    return info


def processor(k: int) -> Any:
    """The processor, loaded from this file so that it is pickled by value to the workers."""
    return distproc.load_processor(f"{HERE}:ScaleScanHT", {"k": k})


def task_count(proc: Any, fileset: dict[str, Any], chunksize: int, cache_dir: str) -> int:
    """Number of keys in the engine's task graph for *proc* over *fileset* (same planning as ``run``)."""
    from distproc.config import resolve_run_options
    from distproc.engine import build_graph
    from distproc.fileset import normalize_fileset
    from distproc.partitioning import plan_partitions

    opts = resolve_run_options(chunksize=chunksize, cache_dir=cache_dir)
    table, _ = plan_partitions(normalize_fileset(fileset), chunksize=chunksize, cache_dir=cache_dir)
    graph, _, _ = build_graph(
        proc, table, schema=opts["schema"], retries=opts["retries"], split_every=opts["split_every"]
    )
    return len(graph)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated ttbar events")
    parser.add_argument("--files", type=int, default=2, help="files the sample is split into")
    parser.add_argument("--chunksize", type=int, default=100_000, help="events per partition")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--ks", default="0,1,4,8", help="comma-separated variation counts; must include 0")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest is used")
    parser.add_argument("--seed", type=int, default=1, help="sample seed")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    if 0 not in ks:
        parser.error("--ks must include 0 (the nominal-only baseline)")

    from distproc.cluster import open_client

    info = ensure_sample(args.events, args.files, args.seed)
    fileset = {"ttbar": {"files": dict.fromkeys(info.files, info.treename)}}
    one, five, fifteen = os.getloadavg()
    print(
        f"{info.events:,} ttbar events in {len(info.files)} file(s), chunksize {args.chunksize:,}, "
        f"{args.workers} workers; load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    procs = {k: processor(k) for k in ks}
    walls: dict[int, list[float]] = {k: [] for k in ks}
    nominal: dict[int, Any] = {}
    read: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as cache, open_client(workers=args.workers) as client:
        client.wait_for_workers(args.workers)
        start = time.perf_counter()  # warm-up: imports, processor and correction loading on every worker
        distproc.run(
            procs[0],
            fileset,
            cluster=client,
            chunksize=1000,
            max_chunks=args.workers,
            cache_dir=cache,
            progress=False,
        )
        print(f"warm-up {time.perf_counter() - start:.1f} s", flush=True)
        for _ in range(args.rounds):
            for k in ks:
                result = distproc.run(
                    procs[k],
                    fileset,
                    cluster=client,
                    chunksize=args.chunksize,
                    cache_dir=cache,
                    progress=False,
                )
                assert not result.partial, result.report.failures
                assert result.report.events == info.events
                h = result.output["ht"]
                shape = procs[k].shape_variations.names()[1:]
                assert list(h.axes["variation"]) == ["nominal", *WEIGHT_VARIATIONS, *shape]
                nominal.setdefault(k, h[{"variation": "nominal"}])
                walls[k].append(result.report.wall_seconds)
                read[k] = sum(d.bytes_read for d in result.report.datasets.values())
        tasks = {k: task_count(procs[k], fileset, args.chunksize, cache) for k in ks}

    for k in ks:  # the nominal pass does not depend on how many variations run beside it
        np.testing.assert_array_equal(nominal[k].values(flow=True), nominal[0].values(flow=True))
        np.testing.assert_array_equal(nominal[k].variances(flow=True), nominal[0].variances(flow=True))
    # The fastest round is the least disturbed by other work on the machine; the median is shown beside it.
    wall = {k: min(v) for k, v in walls.items()}
    print(
        f"{'K':>3} {'wall_s':>8} {'median_s':>8} {'events_s':>10} {'per_variation_rel':>18} {'tasks':>6} "
        f"{'MB_read':>8}"
    )
    for k in ks:
        rel = (wall[k] - wall[0]) / k / wall[0] if k else float("nan")
        rel_text = f"{rel:.2f}" if k else "-"
        print(
            f"{k:>3} {wall[k]:>8.2f} {statistics.median(walls[k]):>8.2f} {info.events / wall[k]:>10,.0f} "
            f"{rel_text:>18} {tasks[k]:>6} {read[k] / 1e6:>8.1f}"
        )
    flat = len(set(tasks.values())) == 1
    assert flat, f"the task graph grows with K: {tasks}"
    assert len(set(read.values())) == 1, f"the bytes read grow with K: {read}"
    k_max = max(ks)
    rel_max = (wall[k_max] - wall[0]) / k_max / wall[0] if k_max else 0.0
    print(f"systematics per_variation_rel={rel_max:.2f} (K={k_max}) tasks_flat={flat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
