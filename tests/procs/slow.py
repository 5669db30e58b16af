"""A processor that sleeps a little per partition, so tests can interrupt a run mid-way."""

import time

import awkward as ak
import hist

import distproc


class SlowJets(distproc.Processor):
    """Leading-jet pT per dataset and an event count, after sleeping *delay* seconds per partition."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay

    def process(self, events):
        time.sleep(self.delay)
        h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(30, 0, 300, name="pt").Weight()
        lead = ak.fill_none(ak.firsts(events.Jet.pt), -1.0)
        h.fill(dataset=events.metadata["dataset"], pt=ak.to_numpy(lead), weight=ak.to_numpy(events.genWeight))
        return {"jet_pt": h, "events": len(events)}
