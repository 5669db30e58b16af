"""Processors whose outputs cannot be added across datasets (the engine's merge must name them)."""

import awkward as ak
import hist
import numpy as np

import distproc


class Opaque:
    """A value with no addition."""


class Conflicting(distproc.Processor):
    """Per dataset: histogram binning, array shape or the value type differ; 'events' always adds."""

    def __init__(self, what: str) -> None:
        self.what = what

    def process(self, events):
        tt = events.metadata["dataset"] == "tt"
        out = {"events": len(events), "muons": int(ak.sum(ak.num(events.Muon)))}
        if self.what == "axes":
            out["h"] = hist.Hist.new.Reg(20 if tt else 10, 0, 200, name="pt").Double()
        elif self.what == "shapes":
            out["counts"] = np.zeros(3 if tt else 2)
        else:
            out["nested"] = {"thing": Opaque()}
        return out
