"""Processors used by the engine tests (loaded with distproc.load_processor, so pickled by value)."""

from pathlib import Path

import awkward as ak
import hist
import numpy as np
from coffea import processor as coffea_processor

import distproc


def muon_hist() -> hist.Hist:
    return hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(20, 0, 200, name="pt").Weight()


class MuonPt(distproc.Processor):
    """Weighted muon pT per dataset; optionally raises on the first partition of one dataset."""

    def __init__(self, fail_dataset: str | None = None) -> None:
        self.fail_dataset = fail_dataset

    def process(self, events):
        meta = events.metadata
        if meta["dataset"] == self.fail_dataset and meta["entrystart"] == 0:
            raise ValueError(f"deliberate failure in {meta['dataset']}")
        pt = events.Muon.pt
        weight = ak.broadcast_arrays(events.genWeight, pt)[0]
        h = muon_hist()
        h.fill(dataset=meta["dataset"], pt=ak.flatten(pt), weight=ak.flatten(weight))
        return {"muon_pt": h, "events": len(events), "metadata": {(meta["dataset"], meta.get("xsec"))}}


class CoffeaJets(coffea_processor.ProcessorABC):
    """A plain coffea processor, unmodified: leading-jet pT and a cutflow."""

    def process(self, events):
        dataset = events.metadata["dataset"]
        h = hist.Hist.new.Reg(30, 0, 300, name="pt").Double()
        jets = events.Jet[events.Jet.pt > 20]
        h.fill(pt=ak.to_numpy(ak.fill_none(ak.firsts(jets.pt), -1.0)))
        return {
            dataset: {"lead_jet_pt": h, "cutflow": {"all": len(events), "jet": int(ak.sum(ak.num(jets) > 0))}}
        }

    def postprocess(self, accumulator):
        return accumulator


class ElectronCount(distproc.Processor):
    """PHYSLITE: number of electrons and their summed pT."""

    def process(self, events):
        pt = events.Electrons.pt
        return {"n_electrons": int(ak.sum(ak.num(pt))), "sum_pt": float(np.sum(ak.flatten(pt)))}


class MuonPtFailingWhile(MuonPt):
    """MuonPt that raises on the first partition of dataset ``dy`` while the file *marker* exists (so a
    rerun with the same processor succeeds once the test removes it)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def process(self, events):
        meta = events.metadata
        if meta["dataset"] == "dy" and meta["entrystart"] == 0 and Path(self.marker).exists():
            raise ValueError("deliberate failure while the marker exists")
        return super().process(events)
