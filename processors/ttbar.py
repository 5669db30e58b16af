"""The IRIS-HEP Analysis Grand Challenge ttbar analysis, written with distproc's systematics API.

Selection (as the AGC's coffea implementation):

* exactly one lepton: electrons with pT > 30 GeV, |eta| < 2.1, ``cutBased == 4`` and ``sip3d < 4``, or
  muons with pT > 30 GeV, |eta| < 2.1, ``tightId``, ``sip3d < 4`` and ``pfRelIso04_all < 0.15``;
* jets with pT > 30 GeV, |eta| < 2.4 and the tight-lepton-veto jet ID; at least four of them;
* region ``4j1b``: exactly one b-tagged jet (``btagCSVV2 > 0.5``), observable HT (scalar sum of jet pT);
* region ``4j2b``: at least two b-tagged jets, observable the mass of the trijet with the highest pT
  among the three-jet combinations that contain a b-tagged jet.

Both observables are histogrammed in 25 bins from 50 to 550 GeV, per ``process`` (the dataset name) and
``variation``. Events are weighted ``genWeight * xsec * L / sum(genWeight)`` with L = 3378 /pb, times a
lepton scale factor.

Systematic variations, all through :mod:`distproc.systematics`:

* shape: ``pt_scale_up`` (jet pT x 1.03, :class:`~distproc.systematics.Scale`) and ``pt_res_up`` (jet pT
  smeared by a deterministic 5 % Gaussian, :class:`~distproc.systematics.Smear`), each a full pass
  through the selection, merged into the ``variation`` axis by ``run_variations``;
* weight: ``btag_var_{0..3}_{up,down}`` (``1 +- 0.075 pT/50`` of each of the four leading jets, from the
  correctionlib correction ``btag_var``), ``lepton_sf_{up,down}`` (a :class:`BinnedLookup` in lepton
  pT x |eta|) and, for W+jets only, ``scale_var_{up,down}`` (x 1.025 / 0.975);
* alternative samples (``ttbar_scaleup``, ``ttbar_scaledown``, ``ttbar_me_var``, ``ttbar_ps_var``): their
  own datasets, nominal only.

With ``model_path`` (an ONNX jet-parton assignment classifier trained by ``train_assignment.py``), every
``4j2b`` event's jet permutations are scored per chunk through :class:`distproc.inference.OnnxModel` and
the best permutation fills the ML histograms ``ml/top_mass``, ``ml/w_mass`` and ``ml/score``.

Output::

    {"hists": {"4j1b": Hist(process, variation, observable), "4j2b": ...},
     "ml": {"top_mass": ..., "w_mass": ..., "score": ...},      # with model_path
     "nevents": {dataset: events}}

so ``histograms.root`` holds ``hists/<region>/<process>/<variation>``.

Run it::

    distproc run processors/agc.yaml --output demo-output/agc
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

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
    run_variations,
    weight_variations,
)

HERE = Path(__file__).resolve().parent
LUMI_PB = 3378.0
BTAG_THRESHOLD = 0.5
BINS = (25, 50.0, 550.0)
REGIONS = ("4j1b", "4j2b")
OBSERVABLE_LABELS = {"4j1b": "$H_T$ [GeV]", "4j2b": "$m_{bjj}$ [GeV]"}
#: Alternative ttbar samples: processed as their own datasets, nominal only.
ALTERNATIVE_SAMPLES = ("ttbar_scaledown", "ttbar_scaleup", "ttbar_me_var", "ttbar_ps_var")
#: Leading jets whose assignments to (W1, W2, b_had, b_lep) are scored.
MAX_JETS = 4

#: Toy lepton identification scale factor (pT [GeV] x |eta|) with its up/down uncertainties.
LEPTON_SF_EDGES = ([30.0, 40.0, 60.0, 100.0, np.inf], [0.0, 0.9, 1.2, 2.1])
LEPTON_SF_VALUES = np.array([[0.95, 0.94, 0.92], [0.96, 0.95, 0.93], [0.97, 0.96, 0.94], [0.98, 0.97, 0.95]])
LEPTON_SF_UNCERTAINTY = np.array(
    [[0.015, 0.02, 0.03], [0.01, 0.015, 0.025], [0.01, 0.015, 0.02], [0.015, 0.02, 0.03]]
)
LEPTON_SF = BinnedLookup(
    edges=LEPTON_SF_EDGES,
    values=LEPTON_SF_VALUES,
    variations={
        "up": LEPTON_SF_VALUES + LEPTON_SF_UNCERTAINTY,
        "down": LEPTON_SF_VALUES - LEPTON_SF_UNCERTAINTY,
    },
    inputs=("pt", "abseta"),
    name="lepton_sf",
)

#: Features of one jet-parton assignment (W1, W2: the hadronic W's jets; b_had, b_lep: the b jets of the
#: hadronic and leptonic top), after the AGC's BDT features (without the quark-gluon likelihood).
FEATURES = (
    "deltar_blep_lep",
    "deltar_w1_w2",
    "deltar_bhad_w1",
    "deltar_bhad_w2",
    "mass_blep_lep",
    "mass_w1_w2",
    "mass_w1_w2_bhad",
    "pt_w1_w2_bhad",
    "btag_w1",
    "btag_w2",
    "btag_bhad",
    "btag_blep",
    "pt_w1",
    "pt_w2",
    "pt_bhad",
    "pt_blep",
)


def resolve(path: str | Path) -> Path:
    """A path given to the processor: absolute, or relative to this file's directory (``processors/``)."""
    path = Path(path)
    return path if path.is_absolute() else HERE / path


def histogram(label: str, bins: tuple[int, float, float] = BINS) -> hist.Hist:
    """An empty ``(process, variation, observable)`` histogram with sums of squared weights."""
    return hist.Hist(
        hist.axis.StrCategory([], name="process", label="Process", growth=True),
        hist.axis.StrCategory([], name="variation", label="Systematic variation", growth=True),
        hist.axis.Regular(*bins, name="observable", label=label),
        storage=hist.storage.Weight(),
    )


def agc_name(modifier: str) -> str:
    """coffea's ``Weights`` modifier name in the AGC's spelling: ``btag_var_0Up`` -> ``btag_var_0_up``."""
    for suffix in ("Up", "Down"):
        if modifier.endswith(suffix):
            return f"{modifier.removesuffix(suffix)}_{suffix.lower()}"
    return modifier


def select_lepton(events: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The events with exactly one selected lepton, and that lepton's pT, eta, phi and mass.

    Returns a boolean mask over *events* and a dict of NumPy arrays (one value per selected event).
    """
    electrons, muons = events.Electron, events.Muon
    good_e = (
        (electrons.pt > 30)
        & (np.abs(electrons.eta) < 2.1)
        & (electrons.cutBased == 4)
        & (electrons.sip3d < 4)
    )
    good_mu = (
        (muons.pt > 30)
        & (np.abs(muons.eta) < 2.1)
        & muons.tightId
        & (muons.sip3d < 4)
        & (muons.pfRelIso04_all < 0.15)
    )
    n_e = ak.to_numpy(ak.sum(good_e, axis=1))
    one = n_e + ak.to_numpy(ak.sum(good_mu, axis=1)) == 1
    is_e = n_e[one] == 1
    lepton = {}
    for field in ("pt", "eta", "phi", "mass"):
        e = ak.to_numpy(ak.fill_none(ak.firsts(electrons[field][good_e][one]), np.nan))
        mu = ak.to_numpy(ak.fill_none(ak.firsts(muons[field][good_mu][one]), np.nan))
        lepton[field] = np.where(is_e, e, mu).astype(np.float64)
    return one, lepton


def select_jets(jets: Any) -> Any:
    """The analysis jets: pT > 30 GeV, |eta| < 2.4, tight jet ID with lepton veto."""
    return jets[(jets.pt > 30) & (np.abs(jets.eta) < 2.4) & jets.isTightLeptonVeto]


def region_masks(jets: Any) -> dict[str, np.ndarray]:
    """``{"4j1b": mask, "4j2b": mask}`` over events, from their selected jets."""
    four = ak.to_numpy(ak.num(jets)) >= 4
    n_b = ak.to_numpy(ak.sum(jets.btagCSVV2 > BTAG_THRESHOLD, axis=1))
    return {"4j1b": four & (n_b == 1), "4j2b": four & (n_b >= 2)}


def four_momenta(jets: Any) -> tuple[Any, Any, Any, Any]:
    """``(E, px, py, pz)`` of every jet, float64, from ``pt``, ``eta``, ``phi`` and ``mass``."""
    pt, eta, phi, mass = (ak.values_astype(jets[f], np.float64) for f in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.sqrt(px * px + py * py + pz * pz + mass * mass), px, py, pz


def trijet_mass(jets: Any) -> np.ndarray:
    """Mass of the highest-pT trijet among the three-jet combinations with a b-tagged jet (AGC's ``m_bjj``).

    Same definition as the AGC (``ak.combinations`` of three jets, at least one with ``btagCSVV2 > 0.5``,
    the one of largest pT), computed on the jets' momentum components rather than with vector
    behaviours, which is several times faster.
    """
    e, px, py, pz = four_momenta(jets)
    tagged = jets.btagCSVV2 > BTAG_THRESHOLD
    combos = ak.argcombinations(jets.pt, 3)
    i, j, k = combos["0"], combos["1"], combos["2"]
    sum_e, sum_x, sum_y, sum_z = (v[i] + v[j] + v[k] for v in (e, px, py, pz))
    pt2 = ak.where(tagged[i] | tagged[j] | tagged[k], sum_x * sum_x + sum_y * sum_y, -1.0)
    best = ak.argmax(pt2, axis=1, keepdims=True)
    mass2 = (sum_e * sum_e - sum_x * sum_x - sum_y * sum_y - sum_z * sum_z)[best]
    return np.sqrt(np.maximum(ak.to_numpy(ak.flatten(mass2)), 0.0))


# ---------------------------------------------------------------------------------------------------------
# Jet-parton assignment: permutations and their features (shared by skim.py and the benchmark)


def permutations(max_jets: int = MAX_JETS) -> np.ndarray:
    """Jet indices ``(W1, W2, b_had, b_lep)`` of every assignment of ``max_jets`` jets; W1 < W2."""
    return np.array([p for p in itertools.permutations(range(max_jets), 4) if p[0] < p[1]], dtype=np.int64)


def _delta_r(eta1: np.ndarray, phi1: np.ndarray, eta2: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    dphi = np.mod(phi1 - phi2 + np.pi, 2 * np.pi) - np.pi
    return np.hypot(eta1 - eta2, dphi)


def _mass(e: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))


def permutation_features(
    jets: Any, lepton: dict[str, np.ndarray], max_jets: int = MAX_JETS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every jet-parton assignment of the leading ``max_jets`` jets of every event.

    Parameters
    ----------
    jets
        Selected jets (awkward, at least four per event) with ``pt``, ``eta``, ``phi``, ``mass`` and
        ``btagCSVV2``.
    lepton
        The lepton's ``pt``, ``eta``, ``phi``, ``mass`` (NumPy, one per event).

    Returns
    -------
    features, event, perm
        ``features``: float32 ``(rows, len(FEATURES))``; ``event``: each row's event index;
        ``perm``: each row's index into :func:`permutations` (rows are event-major).
    """
    perms = permutations(max_jets)
    lead = ak.pad_none(jets[:, :max_jets], max_jets, axis=1)
    n = np.minimum(ak.to_numpy(ak.num(jets)), max_jets)
    cols = {
        f: ak.to_numpy(ak.fill_none(lead[f], np.nan)).astype(np.float64)
        for f in ("pt", "eta", "phi", "mass", "btagCSVV2")
    }
    valid = (perms.max(axis=1)[None, :] < n[:, None]).ravel()
    event = np.repeat(np.arange(len(n)), len(perms))[valid]
    perm = np.tile(np.arange(len(perms)), len(n))[valid]
    jet = perms[perm]  # (rows, 4) jet index of W1, W2, b_had, b_lep

    def take(field: str, role: int) -> np.ndarray:
        return cols[field][event, jet[:, role]]

    pt, eta, phi, mass = ([take(f, r) for r in range(4)] for f in ("pt", "eta", "phi", "mass"))
    px = [p * np.cos(f) for p, f in zip(pt, phi, strict=True)]
    py = [p * np.sin(f) for p, f in zip(pt, phi, strict=True)]
    pz = [p * np.sinh(h) for p, h in zip(pt, eta, strict=True)]
    e = [np.sqrt((p * np.cosh(h)) ** 2 + m**2) for p, h, m in zip(pt, eta, mass, strict=True)]
    lep = {k: v[event] for k, v in lepton.items()}
    l_px, l_py = lep["pt"] * np.cos(lep["phi"]), lep["pt"] * np.sin(lep["phi"])
    l_pz = lep["pt"] * np.sinh(lep["eta"])
    l_e = np.sqrt((lep["pt"] * np.cosh(lep["eta"])) ** 2 + lep["mass"] ** 2)
    w = (e[0] + e[1], px[0] + px[1], py[0] + py[1], pz[0] + pz[1])
    top = (w[0] + e[2], w[1] + px[2], w[2] + py[2], w[3] + pz[2])
    features = np.stack(
        [
            _delta_r(eta[3], phi[3], lep["eta"], lep["phi"]),
            _delta_r(eta[0], phi[0], eta[1], phi[1]),
            _delta_r(eta[2], phi[2], eta[0], phi[0]),
            _delta_r(eta[2], phi[2], eta[1], phi[1]),
            _mass(e[3] + l_e, px[3] + l_px, py[3] + l_py, pz[3] + l_pz),
            _mass(*w),
            _mass(*top),
            np.hypot(top[1], top[2]),
            *(take("btagCSVV2", r) for r in range(4)),
            *pt,
        ],
        axis=1,
    )
    return features.astype(np.float32), event, perm


def truth_labels(jets: Any, event: np.ndarray, perm: np.ndarray, max_jets: int = MAX_JETS) -> np.ndarray:
    """1 where a permutation assigns the true W quarks, hadronic-top b and other b (``Jet_truthRole``)."""
    roles = ak.to_numpy(ak.fill_none(ak.pad_none(jets.truthRole[:, :max_jets], max_jets, axis=1), -1))
    jet = permutations(max_jets)[perm]
    role = roles[event[:, None], jet]
    return np.all(role == np.array([3, 3, 1, 2]), axis=1).astype(np.int8)


def best_permutation(scores: np.ndarray, event: np.ndarray, n_events: int) -> np.ndarray:
    """Row index of the highest-scoring permutation of every event (event-major rows)."""
    order = np.lexsort((-scores, event))
    first = np.ones(len(order), dtype=bool)
    first[1:] = event[order][1:] != event[order][:-1]
    best = order[first]
    if len(best) != n_events:
        msg = f"{n_events} events but {len(best)} have permutations"
        raise ValueError(msg)
    return best


# ---------------------------------------------------------------------------------------------------------


class TtbarAnalysis(distproc.Processor):
    """The AGC ttbar analysis (see the module docstring).

    Parameters
    ----------
    corrections
        correctionlib JSON holding ``btag_var`` (default ``data/corrections.json`` next to this file).
    model_path
        ONNX jet-parton assignment model (``train_assignment.py``); ``None`` turns inference off.
        Relative paths resolve against this file's directory.
    lumi
        Integrated luminosity in /pb.
    max_jets
        Leading jets whose permutations the model scores (the model's training value).
    inference_backend
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (see :class:`distproc.inference.OnnxModel`).
    """

    def __init__(
        self,
        corrections: str | None = None,
        model_path: str | None = None,
        lumi: float = LUMI_PB,
        max_jets: int = MAX_JETS,
        inference_backend: str = "cpu",
    ) -> None:
        self.btag_var = Correction(resolve(corrections or "data/corrections.json"), "btag_var")
        self.lepton_sf = LEPTON_SF
        self.lumi = float(lumi)
        self.max_jets = int(max_jets)
        self.shape_variations = ShapeVariations(
            Scale("pt_scale", 0.03, directions=("up",)), Smear("pt_res_up", 0.05)
        )
        self.model = None
        if model_path is not None:
            from distproc.inference import OnnxModel

            self.model = OnnxModel(resolve(model_path), backend=inference_backend, outputs="probabilities")

    def process(self, events: Any) -> dict[str, Any]:
        """Select single-lepton events once, then run the nominal and every shape variation."""
        meta = events.metadata
        dataset = meta["dataset"]
        n_events = len(events)
        one, lepton = select_lepton(events)
        events = events[one]
        norm = meta["xsec"] * self.lumi / meta["sum_genweight"] if "xsec" in meta else 1.0
        weight = ak.to_numpy(events.genWeight).astype(np.float64) * norm
        if dataset in ALTERNATIVE_SAMPLES:
            out = self.fill(events, lepton, weight, dataset, "nominal", weight_variations=False)
        else:
            out = run_variations(
                events,
                self.shape_variations,
                lambda varied, variation: self.fill(varied, lepton, weight, dataset, variation),
            )
        out["nevents"] = {dataset: n_events}
        return out

    def fill(
        self,
        events: Any,
        lepton: dict[str, np.ndarray],
        weight: np.ndarray,
        dataset: str,
        variation: str,
        *,
        weight_variations: bool = True,
    ) -> dict[str, Any]:
        """Histograms of one (shape) variation of single-lepton *events*.

        The nominal pass also fills every weight variation; shape-variation passes fill their nominal
        weight only (``run_variations`` names them after the variation).
        """
        jets = select_jets(events.Jet)
        hists = {region: histogram(OBSERVABLE_LABELS[region]) for region in REGIONS}
        out: dict[str, Any] = {"hists": hists}
        ml = None
        if self.model is not None:
            ml = {
                "top_mass": histogram("reconstructed $m_{bjj}$ [GeV]"),
                "w_mass": histogram("reconstructed $m_{jj}$ [GeV]", (25, 0.0, 250.0)),
                "score": histogram("assignment score", (20, 0.0, 1.0)),
            }
            out["ml"] = ml
        for region, mask in region_masks(jets).items():
            selected = jets[mask]
            if region == "4j1b":
                observable = ak.to_numpy(ak.sum(selected.pt, axis=1))
            else:
                observable = trijet_mass(selected)
            weights = self.weights(selected, {k: v[mask] for k, v in lepton.items()}, weight[mask], dataset)
            if variation != "nominal" or not weight_variations:
                weights = {"nominal": weights["nominal"]}
            for name, w in weights.items():
                hists[region].fill(process=dataset, variation=name, observable=observable, weight=w)
            if region == "4j2b" and ml is not None and len(observable):
                values = self.assignment(selected, {k: v[mask] for k, v in lepton.items()})
                for key, h in ml.items():
                    for name, w in weights.items():
                        h.fill(process=dataset, variation=name, observable=values[key], weight=w)
        return out

    def weights(
        self, jets: Any, lepton: dict[str, np.ndarray], weight: np.ndarray, dataset: str
    ) -> dict[str, np.ndarray]:
        """The nominal weight and every weight variation: ``{"nominal": w, "btag_var_0_up": w2, ...}``."""
        weights = Weights(len(weight))
        weights.add("norm", weight)
        abseta = np.abs(lepton["eta"])
        weights.add(
            "lepton_sf",
            self.lepton_sf(lepton["pt"], abseta),
            weightUp=self.lepton_sf(lepton["pt"], abseta, variation="up"),
            weightDown=self.lepton_sf(lepton["pt"], abseta, variation="down"),
        )
        ones = np.ones(len(weight))
        pt = ak.to_numpy(ak.to_regular(jets.pt[:, :4], axis=1)).reshape(-1, 4).astype(np.float64)
        for i in range(4):
            weights.add(
                f"btag_var_{i}",
                ones,
                weightUp=self.btag_var(pt[:, i], i, "up"),
                weightDown=self.btag_var(pt[:, i], i, "down"),
            )
        if dataset == "wjets":
            weights.add("scale_var", ones, weightUp=ones * 1.025, weightDown=ones * 0.975)
        return {agc_name(name): w for name, w in weight_variations(weights).items()}

    def assignment(self, jets: Any, lepton: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score every permutation with the model; the best one's top and W masses and its score."""
        features, event, _ = permutation_features(jets, lepton, self.max_jets)
        scores = np.asarray(self.model(features))[:, 1]
        best = best_permutation(scores, event, len(jets))
        return {
            "top_mass": features[best, FEATURES.index("mass_w1_w2_bhad")],
            "w_mass": features[best, FEATURES.index("mass_w1_w2")],
            "score": scores[best],
        }
