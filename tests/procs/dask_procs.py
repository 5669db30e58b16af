"""Processors written for coffea's dask mode: ``process`` receives a ``dask_awkward.Array`` and returns
dask collections. Used unchanged by ``coffea.dataset_tools.apply_to_fileset`` and by distproc's
``mode="dask"`` in tests/test_dask_mode.py."""

import awkward as ak
import dask
import dask_awkward as dak
import hist.dask as hda
from coffea import processor


class MuonCutflow(processor.ProcessorABC):
    """NanoAOD: weighted muon pT per dataset, a cutflow, reductions and a per-event array."""

    def __init__(self, fail_dataset=None):
        self.fail_dataset = fail_dataset

    def process(self, events):
        dataset = events.metadata["dataset"]
        if dataset == self.fail_dataset:
            raise ValueError(f"deliberate failure in {dataset}")
        muons = events.Muon[events.Muon.pt > 5]
        weight = ak.where(muons.pt > 20, 1.0, 0.9) * (muons.pt * 0 + events.genWeight)  # a scale factor
        h = hda.Hist.new.StrCat([], growth=True, name="dataset").Reg(20, 0, 200, name="pt").Weight()
        h.fill(dataset=dataset, pt=dak.flatten(muons.pt), weight=dak.flatten(weight))
        two = ak.num(muons, axis=1) >= 2
        pairs = muons[two]
        return {
            "muon_pt": h,
            "cutflow": {"all": ak.num(events, axis=0), "two_muons": dak.sum(two)},
            "sumw": dak.sum(events.genWeight),
            "max_pt": dak.max(muons.pt),
            "dimuon_mass": (pairs[:, 0] + pairs[:, 1]).mass,
            "label": "muons",
        }

    def postprocess(self, accumulator):
        return accumulator


class CorrectedJets(processor.ProcessorABC):
    """NanoAOD: jet pT scaled by a correctionlib binned correction evaluated on dask_awkward arrays (what
    correctionlib does with them: ``map_partitions`` with the correction as a ``dask.delayed`` value)."""

    def __init__(self):
        import correctionlib.schemav2 as cs

        self.sf = cs.Correction(
            name="jet_sf",
            version=1,
            inputs=[cs.Variable(name="pt", type="real")],
            output=cs.Variable(name="sf", type="real"),
            data=cs.Binning(
                nodetype="binning",
                input="pt",
                edges=[0.0, 30.0, 60.0, "inf"],
                content=[0.9, 1.0, 1.1],
                flow="clamp",
            ),
        ).to_evaluator()

    def process(self, events):
        pt = events.Jet.pt * self.sf.evaluate(events.Jet.pt)
        h = hda.Hist.new.Reg(20, 0, 200, name="pt").Weight()
        h.fill(pt=dak.flatten(pt))
        return {"pt": h, "sum_pt": dak.sum(pt)}

    def postprocess(self, accumulator):
        return accumulator


class ForeignPartitions(processor.ProcessorABC):
    """Events combined with a collection of its own (one partition): dask-awkward refuses it on several
    partitions of events; evaluated per partition it would pair every partition with that one."""

    def process(self, events):
        offsets = dak.from_awkward(ak.Array([1.0] * 20), npartitions=1)
        return {"pt": dak.sum(dak.firsts(events.Muon.pt) + offsets)}

    def postprocess(self, accumulator):
        return accumulator


class ElectronPt(processor.ProcessorABC):
    """PHYSLITE: electron pT and counts."""

    def process(self, events):
        electrons = events.Electrons
        h = hda.Hist.new.Reg(25, 0, 250e3, name="pt").Double()
        h.fill(pt=dak.flatten(electrons.pt))
        return {"pt": h, "n": dak.sum(ak.num(electrons, axis=1)), "sum_pt": dak.sum(electrons.pt)}

    def postprocess(self, accumulator):
        return accumulator


def flat_jets(events):
    """A plain function over flat (base schema) branches, as apply_to_fileset accepts it."""
    h = hda.Hist.new.Reg(30, 0, 300, name="pt").Reg(10, -5, 5, name="eta").Weight()
    good = events.Jet_pt > 30
    h.fill(pt=dak.flatten(events.Jet_pt[good]), eta=dak.flatten(events.Jet_eta[good]))
    return {"jets": h, "njets": dak.sum(ak.num(events.Jet_pt[good], axis=1)), "nev": ak.num(events, axis=0)}


class Ratio(processor.ProcessorABC):
    """Returns a ratio of two whole-dataset reductions: not evaluable partition by partition."""

    def process(self, events):
        return {"mean_pt": dak.sum(events.Muon.pt) / dak.sum(ak.num(events.Muon, axis=1))}

    def postprocess(self, accumulator):
        return accumulator


class RatioIn(processor.ProcessorABC):
    """A ratio of two whole-dataset reductions for *dataset* only, a plain reduction for the others: the
    client's trace (the first dataset's) accepts it, the workers' trace of *dataset* refuses it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def process(self, events):
        total = dak.sum(events.Muon.pt)
        if events.metadata["dataset"] == self.dataset:
            return {"pt": total / dak.sum(ak.num(events.Muon, axis=1))}
        return {"pt": total}

    def postprocess(self, accumulator):
        return accumulator


class NormalisedFill(processor.ProcessorABC):
    """Weights normalised by the whole dataset's sum: a fill that depends on every partition."""

    def process(self, events):
        h = hda.Hist.new.Reg(10, 0, 100, name="pt").Weight()
        w = events.genWeight / dak.sum(events.genWeight)
        h.fill(pt=dak.firsts(events.Muon.pt), weight=w)
        return {"pt": h}

    def postprocess(self, accumulator):
        return accumulator


class DelayedSum(processor.ProcessorABC):
    """A dask.delayed over the events: not evaluable partition by partition."""

    def process(self, events):
        return {"n": dask.delayed(len)(events)}

    def postprocess(self, accumulator):
        return accumulator


class LazyFill(processor.ProcessorABC):
    """hist.dask filled with concrete arrays (plain awkward): in the default mode the fill stays lazy."""

    def process(self, events):
        h = hda.Hist.new.Reg(20, 0, 200, name="pt").Double()
        h.fill(pt=ak.flatten(events.Muon.pt))
        return {"pt": h, "events": len(events)}

    def postprocess(self, accumulator):
        return accumulator


class ReturnsCollection(processor.ProcessorABC):
    """Written half for dask-awkward: wraps its concrete result in a dask collection of *kind*
    (``array``: a dask_awkward array, ``scalar``: a dask_awkward scalar, ``delayed``: a dask.delayed)."""

    def __init__(self, kind):
        self.kind = kind

    def process(self, events):
        pt = dak.from_awkward(ak.flatten(events.Muon.pt), npartitions=1)
        lazy = {"array": pt, "scalar": dak.sum(pt), "delayed": dask.delayed(len)(events)}[self.kind]
        return {"events": len(events), "lazy": {self.kind: lazy}}

    def postprocess(self, accumulator):
        return accumulator


class FormDependent(processor.ProcessorABC):
    """A histogram whose binning depends on the file's form (its number of fields): files of other
    forms in one dataset give histograms that cannot be added."""

    def process(self, events):
        h = hda.Hist.new.Reg(len(events.fields), 0, 200, name="pt").Double()
        h.fill(pt=dak.flatten(events.Muon.pt))
        return {"pt": h, "n": ak.num(events, axis=0)}

    def postprocess(self, accumulator):
        return accumulator


class CountedTraces(processor.ProcessorABC):
    """Muon counts; each call of process() (one per trace) appends a line to *log*. Reads the dataset
    name from the metadata only if *read_dataset*."""

    def __init__(self, log, read_dataset=False):
        self.log = log
        self.read_dataset = read_dataset

    def process(self, events):
        with open(self.log, "a") as f:
            f.write("trace\n")
        out = {"muons": dak.sum(ak.num(events.Muon, axis=1)), "n": ak.num(events, axis=0)}
        if self.read_dataset:
            out["dataset"] = events.metadata["dataset"]
        return out

    def postprocess(self, accumulator):
        return accumulator


class ScaledByXsec(processor.ProcessorABC):
    """The metadata read inside a function the graph calls on every partition (a closure)."""

    def process(self, events):
        meta = events.metadata
        weight = dak.map_partitions(lambda w: w * meta["xsec"], events.genWeight)
        return {"sumw": dak.sum(weight)}

    def postprocess(self, accumulator):
        return accumulator
