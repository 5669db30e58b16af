"""Processors with shape and weight systematics for tests/test_systematics_engine.py.

Loaded with ``distproc.load_processor("tests/procs/systematics_proc.py:Class")``, so they are pickled by
value and reach the workers of a real cluster.

Both fill one histogram, ``ht``: the scalar sum of the pT of the jets with pT > 30 GeV, for events
with at least ``min_jets`` (default 2) such jets, with a ``variation`` axis and weighted storage. The
event weight is the generator weight times two scale factors that carry up/down weight variations:

* ``jet_sf`` - a :class:`~distproc.systematics.BinnedLookup` in jet pT, multiplied over the selected jets;
* ``lepton_sf`` - the ``lepton_sf`` correctionlib correction of ``processors/data/corrections.json``,
  multiplied over the muons with pT > 10 GeV.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import hist
import numpy as np
from coffea.analysis_tools import Weights

import distproc
from distproc.systematics import (
    BinnedLookup,
    Correction,
    Scale,
    ShapeVariations,
    Smear,
    weight_variations,
)

CORRECTIONS = Path(__file__).resolve().parents[2] / "processors" / "data" / "corrections.json"

JET_PT_MIN = 30.0
MUON_PT_MIN = 10.0
HT_BINS = (40, 0.0, 1200.0)

#: The jet scale factor table (``pt`` edges, nominal, up, down); the reference test reads it too.
JET_SF_EDGES = (30.0, 50.0, 80.0, 120.0, 200.0, np.inf)
JET_SF = {
    "nominal": (0.97, 0.98, 1.0, 1.01, 1.03),
    "up": (0.99, 1.0, 1.015, 1.03, 1.06),
    "down": (0.95, 0.96, 0.985, 0.99, 1.0),
}

JES_DELTA = 0.03
JER_SIGMA = 0.05


def jet_sf() -> BinnedLookup:
    return BinnedLookup(
        edges=JET_SF_EDGES,
        values=JET_SF["nominal"],
        variations={"up": JET_SF["up"], "down": JET_SF["down"]},
        inputs=("pt",),
        name="jet_sf",
    )


def ht_hist() -> hist.Hist:
    return (
        hist.Hist.new.StrCat([], name="variation", growth=True)
        .Reg(*HT_BINS, name="ht", label="H_T [GeV]")
        .Weight()
    )


class _JetHT(distproc.Processor):
    """Selection and fill shared by the processors below (``process_variation`` runs once per pass)."""

    def __init__(self, min_jets: int = 2) -> None:
        self.min_jets = min_jets
        self.jet_sf = jet_sf()
        self.lepton_sf = Correction(CORRECTIONS, "lepton_sf")

    def process_variation(self, events, variation):
        # fields by name (jets["pt"]), not as vector properties (jets.pt): the same numbers, less overhead
        jets = events.Jet[events.Jet["pt"] > JET_PT_MIN]
        selected = ak.num(jets) >= self.min_jets
        events, jets = events[selected], jets[selected]
        muons = events.Muon[events.Muon["pt"] > MUON_PT_MIN]
        jet_pt, muon_pt, muon_abseta = jets["pt"], muons["pt"], abs(muons["eta"])

        weights = Weights(len(events))
        weights.add("genweight", ak.to_numpy(events.genWeight))
        weights.add(
            "jet_sf",
            ak.to_numpy(ak.prod(self.jet_sf(jet_pt), axis=1)),
            weightUp=ak.to_numpy(ak.prod(self.jet_sf(jet_pt, variation="up"), axis=1)),
            weightDown=ak.to_numpy(ak.prod(self.jet_sf(jet_pt, variation="down"), axis=1)),
        )
        lepton = {
            systematic: ak.to_numpy(ak.prod(self.lepton_sf(muon_pt, muon_abseta, systematic), axis=1))
            for systematic in ("nominal", "up", "down")
        }
        weights.add("lepton_sf", lepton["nominal"], weightUp=lepton["up"], weightDown=lepton["down"])

        ht = ak.to_numpy(ak.sum(jet_pt, axis=1))
        h = ht_hist()
        for name, weight in weight_variations(weights).items():
            h.fill(variation=name, ht=ht, weight=weight)
        return {"ht": h, "events": len(events)}


class JetHTSystematics(_JetHT):
    """JES (Scale +-3 %), JER (Smear, 5 %), a correctionlib JES up (``jes_delta``) and two weight SFs."""

    def __init__(self, smear: bool = True, correction_scale: bool = True, min_jets: int = 2) -> None:
        super().__init__(min_jets)
        variations = [Scale("jes", JES_DELTA)]
        if smear:
            variations.append(Smear("jer", JER_SIGMA))
        if correction_scale:
            variations.append(Scale("jes_corr", Correction(CORRECTIONS, "jes_delta"), directions=("up",)))
        self.shape_variations = ShapeVariations(*variations)


class JetHTScan(_JetHT):
    """*k* one-sided Scale variations of the jet pT (``scale0_up`` ... with delta 1 %, 2 %, ...)."""

    def __init__(self, k: int = 0) -> None:
        super().__init__()
        self.shape_variations = ShapeVariations(
            *(Scale(f"scale{i}", 0.01 * (i + 1), directions=("up",)) for i in range(k))
        )
