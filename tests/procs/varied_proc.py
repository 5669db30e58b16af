"""The same jet analysis written twice, for tests/test_varied.py: with :class:`distproc.systematics.Varied`
and with plain awkward, one pass per variation. Loaded with ``distproc.load_processor`` so that the
classes are pickled by value and reach the workers of a real cluster.

Jet pT corrected by a binned scale factor with up/down tables; a JES-like ``Scale`` of +-3 % on top;
events with at least ``min_jets`` jets of corrected pT > 30 GeV and |eta| < 2.4; histograms of the HT
of those jets and of the pT of every selected jet, weighted by genWeight, with a ``variation`` axis.
"""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np

import distproc
from distproc.systematics import BinnedLookup, Varied, fill_varied

EDGES = [-np.inf, 40.0, 60.0, 100.0, 200.0, np.inf]
SF = {
    "nominal": [0.95, 0.98, 1.0, 1.01, 1.02],
    "sf_up": [0.97, 1.0, 1.02, 1.03, 1.05],
    "sf_down": [0.93, 0.96, 0.98, 0.99, 1.0],
}
JES = {"jes_up": 1.03, "jes_down": 0.97}
NAMES = ["nominal", "sf_up", "sf_down", "jes_up", "jes_down"]


def histograms() -> dict[str, hist.Hist]:
    variation = hist.axis.StrCategory(NAMES, name="variation")
    return {
        "ht": hist.Hist(
            variation, hist.axis.Regular(50, 0.0, 1500.0, name="ht"), storage=hist.storage.Weight()
        ),
        "jet_pt": hist.Hist(
            variation, hist.axis.Regular(50, 0.0, 500.0, name="pt"), storage=hist.storage.Weight()
        ),
    }


class _Jets(distproc.Processor):
    """What both versions hold: the jet multiplicity cut and the scale-factor lookup."""

    def __init__(self, min_jets: int = 2) -> None:
        self.min_jets = min_jets
        self.sf = BinnedLookup(
            edges=EDGES, values=SF["nominal"], variations={k: v for k, v in SF.items() if k != "nominal"}
        )


class VariedJets(_Jets):
    def process(self, events):
        jets = events.Jet
        jes = Varied({"nominal": jets.pt, **{k: jets.pt * f for k, f in JES.items()}})
        pt = jes * self.sf.varied(jes)
        good = (pt > 30.0) & (abs(jets.eta) < 2.4)
        selected = ak.sum(good, axis=1) >= self.min_jets
        out = histograms()
        fill_varied(out["ht"], ht=ak.sum(pt[good], axis=1)[selected], weight=events.genWeight)
        fill_varied(out["jet_pt"], pt=pt[good][selected], weight=events.genWeight)
        return out


class AwkwardJets(_Jets):
    def process(self, events):
        jets = events.Jet
        out = histograms()
        for name in NAMES:
            raw = jets.pt * JES.get(name, 1.0)
            pt = raw * self.sf(raw, variation=name if name in SF else "nominal")
            good = (pt > 30.0) & (abs(jets.eta) < 2.4)
            selected = ak.sum(good, axis=1) >= self.min_jets
            weight = events.genWeight[selected]
            out["ht"].fill(variation=name, ht=ak.sum(pt[good], axis=1)[selected], weight=weight)
            per_jet = pt[good][selected]
            out["jet_pt"].fill(
                variation=name,
                pt=ak.flatten(per_jet),
                weight=ak.flatten(ak.broadcast_arrays(weight, per_jet)[0]),
            )
        return out
