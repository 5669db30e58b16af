"""Processors for the coffea-parity tests (plain awkward; run by coffea's Runner and distproc)."""

import awkward as ak
from coffea import processor


class Ranges(processor.ProcessorABC):
    """Which entries each call saw, the file UUIDs, and a cutflow per dataset."""

    def process(self, events):
        m = events.metadata
        return {
            "ranges": {(m["dataset"], m["filename"], m["entrystart"], m["entrystop"])},
            "uuids": {(m["filename"], m["fileuuid"])},
            "cutflow": {m["dataset"]: {"all": len(events), "muons": int(ak.sum(ak.num(events.Muon)))}},
        }

    def postprocess(self, accumulator):
        return accumulator


def count_muons(events):
    """A plain function as the processor."""
    return {"events": len(events), "muons": int(ak.sum(ak.num(events.Muon)))}
