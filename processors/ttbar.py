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

Systematic variations, all through :mod:`distproc.systematics`, computed together as
:class:`~distproc.systematics.Varied` quantities (one pass over the events, not one per variation):

* shape: ``pt_scale_up`` (jet pT x 1.03, :class:`~distproc.systematics.Scale`) and ``pt_res_up`` (jet pT
  smeared by a deterministic 5 % Gaussian, :class:`~distproc.systematics.Smear`): the jet pT is a
  ``Varied`` (``Varied.from_variations``), so the jet selection, the regions and HT are computed for
  every variation at once; the trijet mass (and the assignment below), which need combinations of the
  selected jets, run per variation through :func:`~distproc.systematics.apply_varied`;
* weight: ``btag_var_{0..3}_{up,down}`` (``1 +- 0.075 pT/50`` of each of the four leading jets, from the
  correctionlib correction ``btag_var``), ``lepton_sf_{up,down}`` (a :class:`BinnedLookup` in lepton
  pT x |eta|) and, for W+jets only, ``scale_var_{up,down}`` (x 1.025 / 0.975);
* alternative samples (``ttbar_scaleup``, ``ttbar_scaledown``, ``ttbar_me_var``, ``ttbar_ps_var``): their
  own datasets, nominal only.

:func:`~distproc.systematics.fill_varied` fills the ``variation`` axis: a pT variation takes the nominal
weight, a weight variation the nominal observable.

With ``model_path`` (an ONNX jet-parton assignment classifier trained by ``train_assignment.py``), the
assignments of every ``4j2b`` event's four leading jets to (W1, W2, b_had, b_lep) that give both b roles
to b-tagged jets (all 12 when fewer than two are tagged) are scored per chunk through
:class:`distproc.inference.OnnxModel`, in every shape variation, and the best one fills the ML histograms
``ml/top_mass``, ``ml/w_mass`` and ``ml/score``.

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
    Varied,
    apply_varied,
    fill_varied,
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
#: The ML histograms (with model_path): label and binning of each.
ML_HISTOGRAMS = {
    "top_mass": ("reconstructed $m_{bjj}$ [GeV]", BINS),
    "w_mass": ("reconstructed $m_{jj}$ [GeV]", (25, 0.0, 250.0)),
    "score": ("assignment score", (20, 0.0, 1.0)),
}
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


def _flat(array: Any) -> np.ndarray:
    """The content of a jagged array as NumPy (no copy for contiguous lists)."""
    return ak.to_numpy(ak.flatten(array))


def select_lepton(events: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The events with exactly one selected lepton, and that lepton's pT, eta, phi and mass.

    Returns a boolean mask over *events* and a dict of float64 NumPy arrays (one value per selected
    event). The cuts run on the collections' flat contents: one pass over each branch.
    """
    n = len(events)
    picked = {}
    for name, cut in (
        ("Electron", lambda x: (x["cutBased"] == 4) & (x["sip3d"] < 4)),
        ("Muon", lambda x: x["tightId"] & (x["sip3d"] < 4) & (x["pfRelIso04_all"] < 0.15)),
    ):
        collection = events[name]
        fields = ["pt", "eta", "phi", "mass", "sip3d", "cutBased" if name == "Electron" else "tightId"]
        if name == "Muon":
            fields.append("pfRelIso04_all")
        x = {f: _flat(collection[f]) for f in fields}
        good = (x["pt"] > 30) & (np.abs(x["eta"]) < 2.1) & cut(x)
        owner = np.repeat(np.arange(n), ak.to_numpy(ak.num(collection.pt)))[good]
        picked[name] = (owner, {f: x[f][good] for f in ("pt", "eta", "phi", "mass")})
    counts = sum(np.bincount(owner, minlength=n) for owner, _ in picked.values())
    one = counts == 1
    position = np.cumsum(one) - 1  # index of each one-lepton event among them
    lepton = {f: np.empty(int(one.sum())) for f in ("pt", "eta", "phi", "mass")}
    for owner, x in picked.values():
        keep = one[owner]
        for f, values in x.items():
            lepton[f][position[owner[keep]]] = values[keep]
    return one, lepton


#: The jet fields the analysis uses after the selection.
JET_FIELDS = ("pt", "eta", "phi", "mass", "btagCSVV2")


def compact_events(
    events: Any, mask: np.ndarray, jet_fields: tuple[str, ...] = (*JET_FIELDS, "jetId")
) -> Any:
    """The events of *mask* as a plain record array holding only what the variations and fills read.

    ``run``, ``luminosityBlock``, ``event`` (the smearing's seeds), ``genWeight`` and a ``Jet``
    collection with *jet_fields*, every jet kept (the smearing indexes jets before any selection).
    Shape variations then copy and vary contiguous buffers instead of NanoEvents' lazy views.
    """
    counts = ak.to_numpy(ak.num(events.Jet.pt))
    keep = np.repeat(mask, counts)
    jets = {f: _flat(events.Jet[f])[keep] for f in jet_fields}
    columns = {f: ak.to_numpy(events[f])[mask] for f in ("run", "luminosityBlock", "event", "genWeight")}
    columns["Jet"] = ak.unflatten(ak.zip(jets), counts[mask])
    return ak.zip(columns, depth_limit=1)


def select_jets(jets: Any, fields: tuple[str, ...] = JET_FIELDS) -> Any:
    """The analysis jets (pT > 30 GeV, |eta| < 2.4, tight jet ID with lepton veto) as a compact table.

    Only *fields* are kept, in a plain record array: later steps (regions, trijets, features) run on
    contiguous buffers.
    """
    pt, eta, jet_id = _flat(jets.pt), _flat(jets.eta), _flat(jets.jetId)
    good = (pt > 30) & (np.abs(eta) < 2.4) & ((jet_id & 4) != 0)  # jetId bit 2: tight lepton veto
    counts = ak.to_numpy(ak.num(jets.pt))
    owner = np.repeat(np.arange(len(counts)), counts)[good]
    flat = {f: _flat(jets[f])[good] for f in fields}
    return ak.unflatten(ak.zip(flat), np.bincount(owner, minlength=len(counts)))


def region_masks(jets: Any) -> dict[str, np.ndarray]:
    """``{"4j1b": mask, "4j2b": mask}`` over events, from their selected jets."""
    four = ak.to_numpy(ak.num(jets)) >= 4
    n_b = ak.to_numpy(ak.sum(jets.btagCSVV2 > BTAG_THRESHOLD, axis=1))
    return {"4j1b": four & (n_b == 1), "4j2b": four & (n_b >= 2)}


def four_momenta(jets: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(E, px, py, pz)`` of every jet (flat, float64), from ``pt``, ``eta``, ``phi`` and ``mass``."""
    pt, eta, phi, mass = (_flat(jets[f]).astype(np.float64) for f in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.sqrt(px * px + py * py + pz * pz + mass * mass), px, py, pz


def _triplets(n: int) -> np.ndarray:
    """Index triplets ``i < j < k`` of *n* jets, in ``ak.combinations`` order (cached per process).

    A dict rather than ``functools.cache``: cloudpickle ships this module by value to the workers, and a
    cache wrapper would be pickled by reference to a module the workers cannot import.
    """
    if n not in _TRIPLETS:
        _TRIPLETS[n] = np.array(list(itertools.combinations(range(n), 3)), dtype=np.int64).reshape(-1, 3)
    return _TRIPLETS[n]


_TRIPLETS: dict[int, np.ndarray] = {}


def trijet_mass(jets: Any) -> np.ndarray:
    """Mass of the highest-pT trijet with a b-tagged jet (the AGC's ``m_bjj``), one per event.

    Same definition and arithmetic as the AGC's ``ak.combinations(jets, 3)`` (combinations in the same
    order, the first of equal pT wins), on flat NumPy buffers: one vectorized pass per jet multiplicity.
    Events need at least three jets, one of them b-tagged.
    """
    counts = ak.to_numpy(ak.num(jets))
    e, px, py, pz = four_momenta(jets)
    tagged = _flat(jets.btagCSVV2) > BTAG_THRESHOLD
    starts = np.cumsum(counts) - counts
    out = np.empty(len(counts))
    for n in np.unique(counts):
        events = np.flatnonzero(counts == n)
        i, j, k = np.moveaxis(starts[events, None, None] + _triplets(int(n))[None], 2, 0)
        sum_e, sum_x, sum_y, sum_z = (v[i] + v[j] + v[k] for v in (e, px, py, pz))
        pt2 = np.where(tagged[i] | tagged[j] | tagged[k], sum_x * sum_x + sum_y * sum_y, -1.0)
        best = np.argmax(pt2, axis=1)[:, None]
        be, bx, by, bz = (np.take_along_axis(v, best, axis=1)[:, 0] for v in (sum_e, sum_x, sum_y, sum_z))
        out[events] = np.sqrt(np.maximum(be * be - bx * bx - by * by - bz * bz, 0.0))
    return out


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
    jets: Any, lepton: dict[str, np.ndarray], max_jets: int = MAX_JETS, *, tagged: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the candidate jet-parton assignments of the leading ``max_jets`` jets of every event.

    With *tagged* (the default), the candidates are the b-tag-consistent assignments, those that give
    both b roles to b-tagged jets (2 of the 12 assignments of four jets with two b tags), or every
    assignment in an event with fewer than two b-tagged leading jets. On the AGC samples this scores
    four times fewer rows than all assignments and finds the right one almost as often (in 38.5 %
    against 39.7 % of the demo sample's odd-numbered 4j2b ttbar events, with the committed model).

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
    counts = ak.to_numpy(ak.num(jets))
    n = np.minimum(counts, max_jets)
    # The leading jets as (events, max_jets) arrays, NaN where an event has fewer.
    present = np.arange(max_jets)[None, :] < n[:, None]
    index = np.where(present, (np.cumsum(counts) - counts)[:, None] + np.arange(max_jets)[None, :], 0)
    cols = {}
    for f in ("pt", "eta", "phi", "mass", "btagCSVV2"):
        flat = _flat(jets[f]).astype(np.float64)
        cols[f] = np.where(present, flat[index] if len(flat) else np.nan, np.nan)
    bhad, blep = perms[:, 2], perms[:, 3]
    valid = perms.max(axis=1)[None, :] < n[:, None]  # (events, permutations)
    if tagged:
        btag = cols["btagCSVV2"]
        consistent = valid & (btag[:, bhad] > BTAG_THRESHOLD) & (btag[:, blep] > BTAG_THRESHOLD)
        valid = consistent | (valid & ~consistent.any(axis=1, keepdims=True))
    event, perm = np.nonzero(valid)  # event-major rows
    # Per jet and per event first, then gathered for the candidate rows only.
    pt, eta, phi, mass = cols["pt"], cols["eta"], cols["phi"], cols["mass"]
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    lep = {k: v[event] for k, v in lepton.items()}
    l_px, l_py = lep["pt"] * np.cos(lep["phi"]), lep["pt"] * np.sin(lep["phi"])
    l_pz = lep["pt"] * np.sinh(lep["eta"])
    l_e = np.sqrt((lep["pt"] * np.cosh(lep["eta"])) ** 2 + lep["mass"] ** 2)
    # (rows, 4): flat positions in the (events, max_jets) arrays of the jets of W1, W2, b_had, b_lep
    position = event[:, None] * max_jets + perms[perm]

    def at(x: np.ndarray, role: int) -> np.ndarray:
        return x.ravel().take(position[:, role])

    w = tuple(at(v, 0) + at(v, 1) for v in (e, px, py, pz))
    top = tuple(wv + at(v, 2) for wv, v in zip(w, (e, px, py, pz), strict=True))
    features = np.empty((len(event), len(FEATURES)), dtype=np.float32)
    features[:, 0] = _delta_r(at(eta, 3), at(phi, 3), lep["eta"], lep["phi"])
    features[:, 1] = _delta_r(at(eta, 0), at(phi, 0), at(eta, 1), at(phi, 1))
    features[:, 2] = _delta_r(at(eta, 2), at(phi, 2), at(eta, 0), at(phi, 0))
    features[:, 3] = _delta_r(at(eta, 2), at(phi, 2), at(eta, 1), at(phi, 1))
    features[:, 4] = _mass(at(e, 3) + l_e, at(px, 3) + l_px, at(py, 3) + l_py, at(pz, 3) + l_pz)
    features[:, 5] = _mass(*w)
    features[:, 6] = _mass(*top)
    features[:, 7] = np.hypot(top[1], top[2])
    for role in range(4):
        features[:, 8 + role] = at(cols["btagCSVV2"], role)
        features[:, 12 + role] = at(pt, role)
    return features, event, perm


def truth_labels(jets: Any, event: np.ndarray, perm: np.ndarray, max_jets: int = MAX_JETS) -> np.ndarray:
    """1 where a permutation assigns the true W quarks, hadronic-top b and other b (``Jet_truthRole``)."""
    roles = ak.to_numpy(ak.fill_none(ak.pad_none(jets.truthRole[:, :max_jets], max_jets, axis=1), -1))
    jet = permutations(max_jets)[perm]
    role = roles[event[:, None], jet]
    return np.all(role == np.array([3, 3, 1, 2]), axis=1).astype(np.int8)


def best_permutation(scores: np.ndarray, event: np.ndarray, n_events: int) -> np.ndarray:
    """Row index of the highest-scoring permutation of every event (event-major rows; first of ties)."""
    starts = np.flatnonzero(np.r_[True, event[1:] != event[:-1]]) if len(event) else event
    if len(starts) != n_events:
        msg = f"{n_events} events but {len(starts)} have permutations"
        raise ValueError(msg)
    best = np.maximum.reduceat(scores, starts) if len(starts) else scores
    is_best = scores == np.repeat(best, np.diff(np.r_[starts, len(scores)]))
    rows = np.flatnonzero(is_best)  # the first of each event's best rows:
    return rows[np.r_[True, event[rows[1:]] != event[rows[:-1]]]] if len(rows) else rows


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
        """Select single-lepton events once; every jet pT variation in one pass with :class:`Varied`."""
        meta = events.metadata
        dataset = meta["dataset"]
        n_events = len(events)
        one, lepton = select_lepton(events)
        events = compact_events(events, one)
        norm = meta["xsec"] * self.lumi / meta["sum_genweight"] if "xsec" in meta else 1.0
        weight = ak.to_numpy(events.genWeight).astype(np.float64) * norm
        jets = events.Jet
        alternative = dataset in ALTERNATIVE_SAMPLES  # nominal only
        if alternative:
            pt = Varied({"nominal": jets.pt})
        else:
            pt = Varied.from_variations(events, self.shape_variations, "Jet", "pt")
        # The selection, regions and HT of the nominal and every pT variation at once.
        good = (
            (pt > 30) & (np.abs(jets.eta) < 2.4) & ((jets.jetId & 4) != 0)
        )  # jetId bit 2: tight lepton veto
        n_b = ak.sum(good & (jets.btagCSVV2 > BTAG_THRESHOLD), axis=1)
        four = ak.sum(good, axis=1) >= 4
        regions = {"4j1b": four & (n_b == 1), "4j2b": four & (n_b >= 2)}
        selected = pt[good]
        if alternative:  # the nominal weight only
            weights = weight * self.lepton_sf(lepton["pt"], np.abs(lepton["eta"]))
        else:  # the weight variations, under the nominal pT (a pT variation takes the nominal weight)
            in_regions = ak.to_numpy((regions["4j1b"] | regions["4j2b"]).variation("nominal"))
            weights = self.weights(selected.variation("nominal"), in_regions, lepton, weight, dataset)

        hists = {region: histogram(OBSERVABLE_LABELS[region]) for region in REGIONS}
        fill_varied(
            hists["4j1b"],
            process=dataset,
            observable=ak.sum(selected, axis=1)[regions["4j1b"]],
            weight=weights,
        )
        # The 4j2b reconstruction (trijets, and with a model the best jet-parton assignment) runs once per
        # pT variation, on the jets and events that variation selects.
        jets_4j2b = {"pt": selected[regions["4j2b"]], **{f: jets[f] for f in JET_FIELDS[1:]}}
        lep = {f"lepton_{k}": v for k, v in lepton.items()} if self.model is not None else {}
        reco = apply_varied(self.reconstruct, **jets_4j2b, **lep)
        fill_varied(hists["4j2b"], process=dataset, observable=reco["mbjj"], weight=weights)
        out: dict[str, Any] = {"hists": hists}
        if self.model is not None:
            out["ml"] = {key: histogram(*ML_HISTOGRAMS[key]) for key in ML_HISTOGRAMS}
            for key, h in out["ml"].items():
                fill_varied(h, process=dataset, observable=reco[key], weight=weights)
        out["nevents"] = {dataset: n_events}
        return out

    def weights(
        self,
        jets_pt: Any,
        in_regions: np.ndarray,
        lepton: dict[str, np.ndarray],
        weight: np.ndarray,
        dataset: str,
    ) -> Varied:
        """The nominal weight and every weight variation, per event, as a :class:`Varied`.

        ``btag_var_{i}`` scales with the pT of the i-th selected jet (*jets_pt*, jagged), evaluated for
        the events *in_regions* (the nominal selection, the only one a weight variation fills); it is 1
        elsewhere.
        """
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
        leading = ak.to_numpy(jets_pt[in_regions][:, :4]).reshape(-1, 4).astype(np.float64)  # >= 4 jets
        for i in range(4):
            up, down = ones.copy(), ones.copy()
            up[in_regions] = self.btag_var(leading[:, i], i, "up")
            down[in_regions] = self.btag_var(leading[:, i], i, "down")
            weights.add(f"btag_var_{i}", ones, weightUp=up, weightDown=down)
        if dataset == "wjets":
            weights.add("scale_var", ones, weightUp=ones * 1.025, weightDown=ones * 0.975)
        return Varied({agc_name(name): w for name, w in weight_variations(weights).items()})

    def reconstruct(self, **arrays: Any) -> dict[str, np.ndarray]:
        """Per 4j2b event: the trijet mass ``mbjj`` and, with a model, the best assignment's values.

        *arrays*: the selected jets' ``pt``, ``eta``, ``phi``, ``mass``, ``btagCSVV2`` (jagged) and, with a
        model, the lepton's ``lepton_pt``, ... (one per event), as :func:`apply_varied` gives them.
        """
        lepton = {k.removeprefix("lepton_"): v for k, v in arrays.items() if k.startswith("lepton_")}
        jets = ak.zip({k: v for k, v in arrays.items() if not k.startswith("lepton_")})
        out = {"mbjj": trijet_mass(jets)}
        if self.model is not None:
            out |= self.assignment(jets, lepton)
        return out

    def assignment(self, jets: Any, lepton: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score every permutation with the model; the best one's top and W masses and its score."""
        if len(jets) == 0:
            return {key: np.zeros(0) for key in ML_HISTOGRAMS}
        features, event, _ = permutation_features(jets, lepton, self.max_jets)
        scores = np.asarray(self.model(features))[:, 1]
        best = best_permutation(scores, event, len(jets))
        return {
            "top_mass": features[best, FEATURES.index("mass_w1_w2_bhad")],
            "w_mass": features[best, FEATURES.index("mass_w1_w2")],
            "score": scores[best],
        }
