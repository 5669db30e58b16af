"""The AGC ttbar analysis: coffea's ``processor.Runner`` + ``FuturesExecutor`` against distproc.

Both run on the same generated samples (the AGC's nine inputs, ``distproc.samples.make_agc_samples``,
cached in ``benchmarks/.data/``) with the same number of worker processes:

* **coffea**: :class:`AgcCoffea` below, an idiomatic coffea processor structured like the AGC's own
  coffea implementation (a loop over the jet pT variations that redoes the whole selection, plain
  awkward/numpy, correctionlib evaluated directly, onnxruntime called directly), run by
  ``processor.Runner(executor=FuturesExecutor(workers=N))``;
* **distproc**: ``processors/ttbar.py`` (distproc's systematics API: single-lepton events selected once,
  the jet pT variations as one ``Varied`` with ``apply_varied`` for the trijets and the assignment,
  ``fill_varied``, ``OnnxModel`` for inference) run by ``distproc.run`` on a LocalCluster of N workers.

Both draw the pT-resolution smearing from :func:`distproc.systematics.deterministic_normal` with the same
keys and share the jet-parton assignment features (``ttbar.permutation_features``), so their histograms
must agree bin by bin; the script asserts it. Each configuration runs without and with inference (the
committed model ``processors/models/assignment.onnx``, or ``--model``). With ``--engine-only`` the coffea
processor also runs under distproc, which separates the engine's share of the difference from the
processor's. The samples are written in files of 100,000 events (one basket per branch), so that both
engines process the same 100,000-event chunks at the default chunksize.

Measurement: the workers of both engines are started and warmed up (imports, correctionlib, onnxruntime
sessions) before anything is timed; preprocessing is timed (distproc gets a fresh cache). ``--rounds``
alternates the configurations. For every run the script prints the wall-clock rate and the CPU rate:
events per CPU-second of all the processes involved (the worker processes and this process, which merges
coffea's outputs and runs distproc's scheduler), which stays meaningful on a machine shared with other
jobs, where wall-clock rates swing by a factor of two between minutes. The summary takes the best
wall-clock rate and the median CPU rate of each configuration; the ratios use the CPU rates (the
wall-clock ratios are printed too).

    python benchmarks/agc.py --rounds 3 --engine-only   # 5M events (generated once, under a minute)
    python benchmarks/agc.py --events 200000            # quick check

The last line is ``agc distproc/coffea=X.XX``: the CPU-rate ratio without inference.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor

HERE = Path(__file__).resolve().parent
PROCESSORS = HERE.parent / "processors"
sys.path.insert(0, str(PROCESSORS))
import ttbar  # noqa: E402  (processors/ is not a package: the shared features and constants)
from _common import load_line  # noqa: E402

LUMI = ttbar.LUMI_PB
B_TAG_THRESHOLD = ttbar.BTAG_THRESHOLD
ALTERNATIVE = ttbar.ALTERNATIVE_SAMPLES
_SESSIONS: dict[str, Any] = {}


def _lepton_sf(pt: np.ndarray, abseta: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The lepton scale factor table of ttbar.py, looked up with numpy (first/last bins clamp)."""
    pt_edges, eta_edges = (np.asarray(e) for e in ttbar.LEPTON_SF_EDGES)
    i = np.clip(np.searchsorted(pt_edges, pt, side="right") - 1, 0, len(pt_edges) - 2)
    j = np.clip(np.searchsorted(eta_edges, abseta, side="right") - 1, 0, len(eta_edges) - 2)
    return table[i, j]


def _session(path: str) -> Any:
    """One onnxruntime session per worker process (single-threaded, as the workers are)."""
    if path not in _SESSIONS:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        _SESSIONS[path] = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    return _SESSIONS[path]


class AgcCoffea(processor.ProcessorABC):
    """The AGC ttbar analysis as an idiomatic coffea processor (after the AGC's coffea notebook)."""

    def __init__(self, corrections: str, model_path: str | None = None, max_jets: int = ttbar.MAX_JETS):
        self.corrections = corrections
        self.model_path = model_path
        self.max_jets = max_jets

    def process(self, events: Any) -> dict[str, Any]:
        import correctionlib

        histogram = (
            hist.Hist.new.Reg(25, 50, 550, name="observable", label="observable [GeV]")
            .StrCat(["4j1b", "4j2b"], name="region", label="Region")
            .StrCat([], name="process", label="Process", growth=True)
            .StrCat([], name="variation", label="Systematic variation", growth=True)
            .Weight()
        )
        ml_hists = {
            "top_mass": hist.Hist.new.Reg(25, 50, 550, name="observable")
            .StrCat([], name="process", growth=True)
            .StrCat([], name="variation", growth=True)
            .Weight(),
            "w_mass": hist.Hist.new.Reg(25, 0, 250, name="observable")
            .StrCat([], name="process", growth=True)
            .StrCat([], name="variation", growth=True)
            .Weight(),
            "score": hist.Hist.new.Reg(20, 0, 1, name="observable")
            .StrCat([], name="process", growth=True)
            .StrCat([], name="variation", growth=True)
            .Weight(),
        }
        process = events.metadata["dataset"]
        xsec_weight = events.metadata["xsec"] * LUMI / events.metadata["sum_genweight"]
        cset = correctionlib.CorrectionSet.from_file(self.corrections)
        nominal_sample = process not in ALTERNATIVE

        pt_variations = ["nominal", "pt_scale_up", "pt_res_up"] if nominal_sample else ["nominal"]
        for pt_var in pt_variations:
            jet_pt = events.Jet.pt
            if pt_var == "pt_scale_up":
                jet_pt = jet_pt * np.maximum(1.0 + 0.03, 0.0)
            elif pt_var == "pt_res_up":
                from distproc.systematics import deterministic_normal

                index = ak.local_index(events.Jet.pt, axis=-1)
                z = deterministic_normal(
                    events.run, events.luminosityBlock, events.event, index, name="pt_res_up"
                )
                jet_pt = jet_pt * np.maximum(1.0 + 0.05 * z, 0.0)

            ### event selection
            selected_electrons = events.Electron[
                (events.Electron.pt > 30)
                & (np.abs(events.Electron.eta) < 2.1)
                & (events.Electron.cutBased == 4)
                & (events.Electron.sip3d < 4)
            ]
            selected_muons = events.Muon[
                (events.Muon.pt > 30)
                & (np.abs(events.Muon.eta) < 2.1)
                & events.Muon.tightId
                & (events.Muon.sip3d < 4)
                & (events.Muon.pfRelIso04_all < 0.15)
            ]
            jet_filter = (jet_pt > 30) & (np.abs(events.Jet.eta) < 2.4) & events.Jet.isTightLeptonVeto
            selected_jets = ak.with_field(events.Jet[jet_filter], jet_pt[jet_filter], "pt")

            # single lepton, at least four jets, at least one b-tag
            event_filters = (
                ak.count(selected_electrons.pt, axis=1) + ak.count(selected_muons.pt, axis=1)
            ) == 1
            event_filters = event_filters & (ak.count(selected_jets.pt, axis=1) >= 4)
            event_filters = event_filters & (ak.sum(selected_jets.btagCSVV2 > B_TAG_THRESHOLD, axis=1) >= 1)

            selected_events = events[event_filters]
            selected_electrons = selected_electrons[event_filters]
            selected_muons = selected_muons[event_filters]
            selected_jets = selected_jets[event_filters]
            has_e = ak.to_numpy(ak.num(selected_electrons.pt)) == 1
            lepton = {
                f: np.where(
                    has_e,
                    ak.to_numpy(ak.fill_none(ak.firsts(selected_electrons[f]), np.nan)),
                    ak.to_numpy(ak.fill_none(ak.firsts(selected_muons[f]), np.nan)),
                ).astype(np.float64)
                for f in ("pt", "eta", "phi", "mass")
            }
            genweight = ak.to_numpy(selected_events.genWeight).astype(np.float64)

            for region in ["4j1b", "4j2b"]:
                n_btag = ak.sum(selected_jets.btagCSVV2 > B_TAG_THRESHOLD, axis=1)
                region_filter = ak.to_numpy(n_btag == 1 if region == "4j1b" else n_btag >= 2)
                selected_jets_region = selected_jets[region_filter]
                lep = {k: v[region_filter] for k, v in lepton.items()}
                if region == "4j1b":
                    observable = ak.to_numpy(ak.sum(selected_jets_region.pt, axis=-1))
                else:
                    observable = trijet_mass(selected_jets_region)

                weight = genweight[region_filter] * xsec_weight
                sf = _lepton_sf(lep["pt"], np.abs(lep["eta"]), ttbar.LEPTON_SF_VALUES)
                weights = {"nominal": weight * sf}
                if pt_var == "nominal" and nominal_sample:
                    for direction, sign in (("up", 1), ("down", -1)):
                        table = ttbar.LEPTON_SF_VALUES + sign * ttbar.LEPTON_SF_UNCERTAINTY
                        weights[f"lepton_sf_{direction}"] = weight * _lepton_sf(
                            lep["pt"], np.abs(lep["eta"]), table
                        )
                    leading = ak.to_numpy(ak.to_regular(selected_jets_region.pt[:, :4], axis=1)).reshape(
                        -1, 4
                    )
                    for i in range(4):
                        for direction in ("up", "down"):
                            var = cset["btag_var"].evaluate(leading[:, i].astype(np.float64), i, direction)
                            weights[f"btag_var_{i}_{direction}"] = weight * sf * var
                    if process == "wjets":
                        weights["scale_var_up"] = weight * sf * 1.025
                        weights["scale_var_down"] = weight * sf * 0.975
                for name, w in weights.items():
                    variation = name if name != "nominal" else pt_var
                    histogram.fill(
                        observable=observable, region=region, process=process, variation=variation, weight=w
                    )

                if region == "4j2b" and self.model_path is not None and len(observable):
                    features, event, _ = ttbar.permutation_features(selected_jets_region, lep, self.max_jets)
                    scores = _session(self.model_path).run(["probabilities"], {"features": features})[0][:, 1]
                    best = ttbar.best_permutation(scores, event, len(observable))
                    values = {
                        "top_mass": features[best, ttbar.FEATURES.index("mass_w1_w2_bhad")],
                        "w_mass": features[best, ttbar.FEATURES.index("mass_w1_w2")],
                        "score": scores[best],
                    }
                    for key, h in ml_hists.items():
                        for name, w in weights.items():
                            variation = name if name != "nominal" else pt_var
                            h.fill(observable=values[key], process=process, variation=variation, weight=w)

        output = {"nevents": {process: len(events)}, "hist_dict": histogram}
        if self.model_path is not None:
            output["ml_hist_dict"] = ml_hists
        return output

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def trijet_mass(jets: Any) -> np.ndarray:
    """Highest-pT trijet with a b-tag, from the jets' momentum components (float64)."""
    pt, eta, phi, mass = (ak.values_astype(jets[f], np.float64) for f in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px * px + py * py + pz * pz + mass * mass)
    trijet = ak.combinations(
        ak.zip({"e": energy, "x": px, "y": py, "z": pz, "b": jets.btagCSVV2 > B_TAG_THRESHOLD}),
        3,
        fields=["j1", "j2", "j3"],
    )
    e, x, y, z = ((trijet.j1[c] + trijet.j2[c] + trijet.j3[c]) for c in ("e", "x", "y", "z"))
    pt2 = ak.where(trijet.j1.b | trijet.j2.b | trijet.j3.b, x * x + y * y, -1.0)
    best = ak.argmax(pt2, axis=1, keepdims=True)
    mass2 = (e * e - x * x - y * y - z * z)[best]
    return np.sqrt(np.maximum(ak.to_numpy(ak.flatten(mass2)), 0.0))


# ---------------------------------------------------------------------------------------------------------


def samples(events: int) -> dict:
    """The fileset of the AGC's nine inputs, ``events`` in total, generated once into benchmarks/.data."""
    import yaml

    from distproc.samples import make_agc_samples

    data = HERE / ".data"
    data.mkdir(exist_ok=True)
    # Files of 100,000 events: one generator block, so one basket per branch, and one partition per file
    # for both engines at the default chunksize (partitions that cut baskets decompress them twice).
    directory = data / f"agc-{events}-100k"
    fileset_path = directory / "fileset.yaml"
    if not fileset_path.exists():
        per_process = math.ceil(events / 9)
        start = time.perf_counter()
        make_agc_samples(per_process, directory, seed=2024, events_per_file=100_000)
        print(f"generated 9 x {per_process:,} events in {time.perf_counter() - start:.0f} s -> {directory}")
    fileset = yaml.safe_load(fileset_path.read_text())
    for entry in fileset.values():  # paths relative to the fileset file, absolute for both engines
        entry["files"] = {str(directory / path): tree for path, tree in entry["files"].items()}
    return fileset


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process and the processes *pids* so far."""
    import psutil

    total = sum(psutil.Process().cpu_times()[:2])
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(psutil.Process(pid).cpu_times()[:2])
    return total


def run_coffea(proc: AgcCoffea, fileset: dict, pool: Any, workers: int, chunksize: int, maxchunks=None):
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    runner = processor.Runner(
        executor=processor.FuturesExecutor(pool=pool, workers=workers, status=False),
        schema=NanoAODSchema,
        chunksize=chunksize,
        maxchunks=maxchunks,
    )
    coffea_fileset = {
        name: {"files": list(entry["files"]), "metadata": entry["metadata"]}
        for name, entry in fileset.items()
    }
    pids = list(pool._processes)  # the pool's worker processes (started by the warm-up)
    cpu, start = _cpu_seconds(pids), time.perf_counter()
    output = runner(coffea_fileset, processor_instance=proc, treename="Events")
    return output, time.perf_counter() - start, _cpu_seconds(pids) - cpu


def run_distproc(proc: Any, fileset: dict, client: Any, chunksize: int, max_chunks=None):
    import os

    import distproc

    pids = list(client.run(os.getpid).values())
    with tempfile.TemporaryDirectory() as cache:  # fresh: preprocessing counts, as coffea's does
        cpu, start = _cpu_seconds(pids), time.perf_counter()
        result = distproc.run(
            proc,
            fileset,
            cluster=client,
            chunksize=chunksize,
            max_chunks=max_chunks,
            progress=False,
            cache_dir=cache,
        )
        seconds, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu
    if result.partial:
        raise SystemExit(f"distproc run failed: {result.report.failures[0].describe()}")
    return result.output, seconds, cpu


def compare(coffea_out: dict, distproc_out: dict, datasets: list[str]) -> int:
    """Assert that every histogram bin agrees; return the number of (region, dataset, variation) compared."""
    h = coffea_out["hist_dict"]
    n = 0
    for region in ("4j1b", "4j2b"):
        mine = distproc_out["hists"][region]
        for dataset in datasets:
            for variation in mine.axes["variation"]:
                where = {"process": dataset, "variation": variation}
                expected = mine[where]
                if variation in h.axes["variation"] and dataset in h.axes["process"]:
                    got = h[{"region": region, **where}]
                    np.testing.assert_allclose(got.values(), expected.values(), rtol=1e-9, atol=1e-9)
                    np.testing.assert_allclose(got.variances(), expected.variances(), rtol=1e-9, atol=1e-9)
                else:
                    assert expected.values().sum() == 0
                n += 1
    if "ml_hist_dict" in coffea_out:
        for key, got_hist in coffea_out["ml_hist_dict"].items():
            mine = distproc_out["ml"][key]
            for dataset in datasets:
                if dataset not in got_hist.axes["process"]:
                    continue
                for variation in got_hist.axes["variation"]:
                    where = {"process": dataset, "variation": variation}
                    np.testing.assert_allclose(
                        got_hist[where].values(), mine[where].values(), rtol=1e-9, atol=1e-9
                    )
                    n += 1
    assert coffea_out["nevents"] == distproc_out["nevents"]
    return n


def compare_agc(a: hist.Hist, b: hist.Hist) -> int:
    """Assert two AGC-style histograms (region, process, variation) agree, whatever their category order."""
    names = ("region", "process", "variation")
    assert all(set(a.axes[n]) == set(b.axes[n]) for n in names)
    n = 0
    for region in a.axes["region"]:
        for process in a.axes["process"]:
            for variation in a.axes["variation"]:
                where = {"region": region, "process": process, "variation": variation}
                np.testing.assert_allclose(a[where].values(), b[where].values(), rtol=1e-9, atol=1e-9)
                np.testing.assert_allclose(a[where].variances(), b[where].variances(), rtol=1e-9, atol=1e-9)
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="events of all nine inputs together")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=100_000)
    parser.add_argument("--model", default=str(PROCESSORS / "models" / "assignment.onnx"))
    parser.add_argument(
        "--engine-only", action="store_true", help="also run the coffea processor under distproc"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternating rounds; the best of each is reported"
    )
    args = parser.parse_args(argv)

    import distproc
    from distproc.cluster import open_client

    fileset = samples(args.events)
    datasets = list(fileset)
    total = sum(entry["metadata"]["nevents"] for entry in fileset.values())
    corrections = str(PROCESSORS / "data" / "corrections.json")
    model = str(Path(args.model).resolve())
    if not Path(model).exists():
        raise SystemExit(
            f"no model {model}: python processors/train_assignment.py SKIM --out processors/models"
        )
    warm = {datasets[0]: fileset[datasets[0]]}
    seconds: dict[str, list[float]] = {}
    outputs: dict[str, Any] = {}
    coffea_name, distproc_name, engine_name = (
        "coffea Runner+FuturesExecutor",
        "distproc ttbar.py",
        "distproc AgcCoffea",
    )

    cpu: dict[str, list[float]] = {}

    def record(name: str, output: Any, elapsed: float, cpu_seconds: float) -> None:
        outputs.setdefault(name, output)
        seconds.setdefault(name, []).append(elapsed)
        cpu.setdefault(name, []).append(cpu_seconds)
        print(
            f"  {name:<36} {elapsed:7.1f} s {total / elapsed:>10,.0f} events/s   "
            f"CPU {cpu_seconds:6.1f} s {total / cpu_seconds:>9,.0f} events/CPU-s",
            flush=True,
        )

    print(f"AGC ttbar analysis: {total:,} events, {len(datasets)} datasets, {args.workers} worker processes")
    print(f"machine: {load_line()}")
    context = multiprocessing.get_context("fork")
    spec = f"{PROCESSORS / 'ttbar.py'}:TtbarAnalysis"
    with (
        concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool,
        open_client(workers=args.workers) as client,
    ):
        # warm-up: imports, sessions and caches in every worker process
        run_coffea(AgcCoffea(corrections, model), warm, pool, args.workers, args.chunksize, maxchunks=2)
        run_distproc(distproc.load_processor(spec, {"model_path": model}), warm, client, args.chunksize, 2)
        # Rounds alternate the engines so that a change of load on the machine hits both alike; the best
        # round of each configuration is reported.
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}")
            for inference in (False, True):
                suffix = " +ML" if inference else ""
                proc = AgcCoffea(corrections, model if inference else None)
                record(coffea_name + suffix, *run_coffea(proc, fileset, pool, args.workers, args.chunksize))
                proc = distproc.load_processor(spec, {"model_path": model} if inference else {})
                record(distproc_name + suffix, *run_distproc(proc, fileset, client, args.chunksize))
            if args.engine_only:
                record(engine_name, *run_distproc(AgcCoffea(corrections), fileset, client, args.chunksize))
    print(f"machine: {load_line()}")
    rates = {name: total / min(values) for name, values in seconds.items()}
    cpu_rates = {name: total / float(np.median(values)) for name, values in cpu.items()}
    print(f"summary ({args.rounds} round(s)): best wall-clock rate, median CPU rate")
    for name, rate in rates.items():
        print(f"  {name:<36} {rate:>10,.0f} events/s   {cpu_rates[name]:>9,.0f} events/CPU-s")

    if args.engine_only:
        n = compare_agc(outputs[coffea_name]["hist_dict"], outputs[engine_name]["hist_dict"])
        print(f"histograms equal bin by bin (AgcCoffea under coffea and under distproc): {n} histograms")
    for suffix in ("", " +ML"):
        n = compare(outputs[coffea_name + suffix], outputs[distproc_name + suffix], datasets)
        print(f"histograms equal bin by bin ({'with' if suffix else 'without'} inference): {n} histograms")
    for engine, name in (("coffea", coffea_name), ("distproc", distproc_name)):
        extra_cpu = cpu_rates[name] / cpu_rates[name + " +ML"] - 1
        extra_wall = rates[name] / rates[name + " +ML"] - 1
        what = f"({engine}; wall clock: {extra_wall:+.1%})"
        print(f"inference adds {extra_cpu:.1%} to the per-event CPU cost {what}")
    if args.engine_only:
        print(
            "engine only (the same AgcCoffea processor): distproc/coffea="
            f"{cpu_rates[engine_name] / cpu_rates[coffea_name]:.2f} (CPU), "
            f"{rates[engine_name] / rates[coffea_name]:.2f} (wall clock)"
        )
    ml_cpu = cpu_rates[distproc_name + " +ML"] / cpu_rates[coffea_name + " +ML"]
    ml_wall = rates[distproc_name + " +ML"] / rates[coffea_name + " +ML"]
    print(f"with inference: distproc/coffea={ml_cpu:.2f} (CPU), {ml_wall:.2f} (wall clock)")
    print(f"without inference, wall clock: distproc/coffea={rates[distproc_name] / rates[coffea_name]:.2f}")
    print(f"agc distproc/coffea={cpu_rates[distproc_name] / cpu_rates[coffea_name]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
