"""ATLAS PHYSLITE: a loop over electrons, muons and jets with systematics, a derived dataset and histograms.

"Write a for loop over PHYSLITE, apply a systematic, dump a dataset" — with distproc::

    distproc run processors/physlite.yaml --output physlite-out

* **Objects**: electrons (pT > 25 GeV, |eta| < 2.47), muons (pT > 25 GeV, |eta| < 2.5) and jets
  (pT > 30 GeV, |eta| < 2.5) from ``events.Electrons``, ``events.Muons``, ``events.Jets`` (PHYSLITE
  stores MeV; everything here is GeV). Events with at least one lepton and two jets are selected.
* **Binned scale factor**: the electron pT is scaled by a pT-binned factor, ``pt * sf[np.digitize(pt,
  bins)]`` written as ``pt * sf.varied(pt)`` with a :class:`distproc.BinnedLookup`; its up/down
  variations (``ele_sf_up``/``ele_sf_down``) are the table's bin errors. The table is a ROOT TH1 read
  by uproot (``data/electron_sf.root``; ``python processors/physlite.py`` rewrites it) or, without
  ``sf_file``, the same table built in :func:`electron_sf_hist`.
* **Jet energy scale**: a calibration-style variation, the jet pT scaled by 1 +- an |eta|-binned
  uncertainty (``jes_up``/``jes_down``).
* **Histograms for a fit**: HT of the selected jets and LT, the scalar sum of the
  selected leptons' pT, each with a ``dataset``
  and a ``variation`` axis (nominal and the four variations; :func:`distproc.fill_varied`).
* **Derived dataset for training**: one row per selected event (event number, jet and lepton pT and eta
  as lists, HT, jet count; nominal), written per partition both as Parquet (``derived``) and as a ROOT
  TTree ``Events`` (``derived_root``), each with a ``manifest.json``. A fileset entry naming
  ``physlite-out/derived`` (the manifest's directory) reads it back as the next step's input.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np

import distproc
from distproc.columns import ColumnWriter
from distproc.systematics import fill_varied

#: PHYSLITE momenta are in MeV.
MEV_PER_GEV = 1000.0
ELECTRON_PT, ELECTRON_ETA = 25.0, 2.47
MUON_PT, MUON_ETA = 25.0, 2.5
JET_PT, JET_ETA = 30.0, 2.5

#: Electron scale factor: pT bin edges (GeV), values and their uncertainties. Above the last edge the
#: last bin applies (``BinnedLookup``'s ``flow="clamp"``).
ELECTRON_SF_EDGES = (0.0, 20.0, 30.0, 50.0, 100.0, 1000.0)
ELECTRON_SF_VALUES = (0.96, 0.97, 0.985, 0.995, 1.0)
ELECTRON_SF_ERRORS = (0.03, 0.02, 0.01, 0.008, 0.015)

#: Jet energy scale uncertainty in |eta| bins (a calibration-style relative shift).
JES = distproc.BinnedLookup(
    edges=[0.0, 0.8, 1.5, 2.5, math.inf],
    values=[1.0, 1.0, 1.0, 1.0],
    variations={"jes_up": [1.015, 1.02, 1.03, 1.05], "jes_down": [0.985, 0.98, 0.97, 0.95]},
    inputs=("abseta",),
    name="jes",
)


def electron_sf_hist() -> hist.Hist:
    """The electron scale factor as a histogram (values and squared errors), as a SF file holds it."""
    h = hist.Hist(hist.axis.Variable(ELECTRON_SF_EDGES, name="pt"), storage=hist.storage.Weight())
    h[...] = np.stack([ELECTRON_SF_VALUES, np.square(ELECTRON_SF_ERRORS)], axis=-1)
    return h


def electron_sf(sf_file: str | None = None) -> distproc.BinnedLookup:
    """The electron SF lookup from the TH1 ``electron_sf`` of *sf_file*, or from :func:`electron_sf_hist`."""
    if sf_file is None:
        return distproc.BinnedLookup.from_hist(electron_sf_hist(), errors="ele_sf", name="electron_sf")
    import uproot

    with uproot.open(sf_file) as file:
        return distproc.BinnedLookup.from_hist(
            file["electron_sf"], errors="ele_sf", inputs=["pt"], name="electron_sf"
        )


def fit_hist(name: str, label: str, bins: int, stop: float) -> hist.Hist:
    """An empty histogram with dataset and variation axes."""
    return (
        hist.Hist.new.StrCat([], name="dataset", growth=True)
        .StrCat([], name="variation", growth=True)
        .Reg(bins, 0.0, stop, name=name, label=label)
        .Weight()
    )


class PhysliteAnalysis(distproc.Processor):
    """Electrons, muons and jets from PHYSLITE with an electron SF and a JES variation.

    Parameters
    ----------
    sf_file
        ROOT file with the electron scale factor TH1 ``electron_sf`` (pT in GeV; errors give up/down).
        ``None``: the built-in table.
    columns
        Write the derived dataset (Parquet and ROOT).
    """

    def __init__(self, sf_file: str | None = None, columns: bool = True) -> None:
        self.electron_sf = electron_sf(sf_file)
        self.writers = (
            (ColumnWriter("derived"), ColumnWriter("derived_root", format="root")) if columns else ()
        )

    def process(self, events: Any) -> dict[str, Any]:
        dataset = events.metadata["dataset"]
        electrons, muons, jets = events.Electrons, events.Muons, events.Jets

        ele_pt = electrons.pt / MEV_PER_GEV
        ele_pt = ele_pt * self.electron_sf.varied(ele_pt)  # pt * sf[np.digitize(pt, bins)], +- up/down
        good_ele = (ele_pt > ELECTRON_PT) & (abs(electrons.eta) < ELECTRON_ETA)
        mu_pt = muons.pt / MEV_PER_GEV
        good_mu = (mu_pt > MUON_PT) & (abs(muons.eta) < MUON_ETA)
        jet_pt = jets.pt / MEV_PER_GEV * JES.varied(abs(jets.eta))
        good_jet = (jet_pt > JET_PT) & (abs(jets.eta) < JET_ETA)

        n_leptons = ak.sum(good_ele, axis=1) + ak.sum(good_mu, axis=1)
        n_jets = ak.sum(good_jet, axis=1)
        selected = (n_leptons >= 1) & (n_jets >= 2)
        ht = ak.sum(jet_pt[good_jet], axis=1)
        lt = ak.sum(ele_pt[good_ele], axis=1) + ak.sum(mu_pt[good_mu], axis=1)  # scalar sum of lepton pT

        output: dict[str, Any] = {
            "ht": fill_varied(fit_hist("ht", "HT [GeV]", 20, 1000.0), ht=ht[selected], dataset=dataset),
            "lt": fill_varied(fit_hist("lt", "LT [GeV]", 20, 400.0), lt=lt[selected], dataset=dataset),
            "cutflow": {
                dataset: {"all": len(events), "selected": int(ak.sum(selected.variation("nominal")))}
            },
        }
        if self.writers:
            table = self._derived(events, selected, ele_pt, good_ele, mu_pt, good_mu, jet_pt, good_jet, ht)
            for writer in self.writers:
                output[writer.name] = writer.write(table, events.metadata)
        return output

    @staticmethod
    def _derived(events: Any, selected: Any, *varied: Any) -> ak.Array:
        """The nominal rows of the selected events (one per event)."""
        ele_pt, good_ele, mu_pt, good_mu, jet_pt, good_jet, ht = (
            v.variation("nominal") if isinstance(v, distproc.Varied) else v for v in varied
        )
        keep = selected.variation("nominal")
        electrons, muons, jets = events.Electrons[keep], events.Muons[keep], events.Jets[keep]
        good_ele, good_mu, good_jet = good_ele[keep], good_mu[keep], good_jet[keep]
        return ak.zip(
            {
                "event_number": events.EventInfo.eventNumber[keep],
                "ht": ht[keep],
                "n_jets": ak.sum(good_jet, axis=1),
                "jet_pt": jet_pt[keep][good_jet],
                "jet_eta": jets.eta[good_jet],
                "ele_pt": ele_pt[keep][good_ele],
                "ele_eta": electrons.eta[good_ele],
                "mu_pt": mu_pt[keep][good_mu],
                "mu_eta": muons.eta[good_mu],
            },
            depth_limit=1,
        )


def write_electron_sf(path: str | Path) -> None:
    """Write :func:`electron_sf_hist` as the TH1 ``electron_sf`` (what ``data/electron_sf.root`` holds)."""
    import uproot

    with uproot.recreate(path) as file:
        file["electron_sf"] = electron_sf_hist()


if __name__ == "__main__":
    write_electron_sf(
        sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "data" / "electron_sf.root"
    )
