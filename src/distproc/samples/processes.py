"""What the synthetic samples contain: the processes (:data:`PROCESSES`) and the branches of the tree.

Each process is one :class:`ProcessSpec`: how many b quarks and W bosons its hard process makes, how much
extra radiation, the lepton content, the spectra's scales and the generator's negative-weight fraction.
:data:`BRANCHES` lists the ``Events`` tree's branches with NanoAOD's names and types, and
:data:`TRUTH_ROLES` what the values of ``Jet_truthRole`` mean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ("AGC_PROCESSES", "BRANCHES", "PROCESSES", "TRUTH_ROLES", "ProcessSpec")

#: Branch types of the ``Events`` tree: flat branches, then collections (``nJet`` + ``Jet_pt``, ...).
BRANCHES: dict[str, Any] = {
    "run": "uint32",
    "luminosityBlock": "uint32",
    "event": "uint64",
    "genWeight": "float32",
    "Jet": {
        "pt": "float32",
        "eta": "float32",
        "phi": "float32",
        "mass": "float32",
        "btagCSVV2": "float32",
        "jetId": "int32",
        "truthRole": "int32",
    },
    "Electron": {
        "pt": "float32",
        "eta": "float32",
        "phi": "float32",
        "mass": "float32",
        "pfRelIso03_all": "float32",
        "charge": "int32",
        "cutBased": "int32",
        "sip3d": "float32",
    },
    "Muon": {
        "pt": "float32",
        "eta": "float32",
        "phi": "float32",
        "mass": "float32",
        "pfRelIso04_all": "float32",
        "charge": "int32",
        "tightId": "bool",
        "sip3d": "float32",
    },
    "MET_pt": "float32",
    "MET_phi": "float32",
}


#: ``Jet_truthRole`` values: what a jet comes from (the truth label for jet-parton assignment).
TRUTH_ROLES = {
    0: "radiation or forward spectator quark",
    1: "b quark of the hadronically decaying top (t -> b q q')",
    2: "another hard-process b quark (the leptonic top's in semileptonic ttbar)",
    3: "quark of the hadronic top's W boson",
    4: "quark of another W boson",
}


@dataclass(frozen=True)
class ProcessSpec:
    """Parameters of one synthetic process (see :data:`PROCESSES`); energies in GeV.

    Jets: ``n_b`` b quarks, two light quarks from each of the ``n_w`` W bosons that did not give a
    prompt lepton (each found with probability 0.9) and, with probability ``forward_prob``, a forward
    spectator quark, all with Gamma-distributed pT of mean ``hard_pt`` above threshold; plus radiation
    jets with a geometric multiplicity of mean ``n_extra`` ("staircase scaling") and a power-law pT
    spectrum of index ``extra_pt_index``, a fraction ``extra_b_fraction`` of them b jets. ``jet_scale``
    scales every jet's pT above threshold.

    Top quarks: in processes with b quarks and W bosons (``n_b`` and ``n_w`` both non-zero: ttbar and
    single top), an event with two quarks from a W gets one hadronic top decay ``t -> b W -> b q q'``:
    the top (Breit-Wigner mass around 172.5, Gamma(2) pT of mean ``1.8 * hard_pt``, Gaussian rapidity)
    decays isotropically, and the first b and the first two W quarks take the decay products'
    directions and pT (times ``jet_scale`` and a 10 % Gaussian response). The three-jet mass of those
    jets therefore peaks near the top mass and their two-jet mass near the W mass; a decay quark that
    falls below 15 GeV or outside |eta| < 4.7 gives no jet. ``Jet_truthRole`` records what each jet
    comes from (see :data:`TRUTH_ROLES`), the truth label for jet-parton assignment.

    Leptons: ``k`` prompt electrons or muons with probability ``lepton_probs[k]``, of mean pT
    ``lepton_pt``; with ``z_decay`` a pair is the opposite-sign same-flavour decay of a Z, otherwise
    each lepton comes from a W with a neutrino (MET). ``n_fake`` is the mean number of non-prompt
    leptons per event and flavour. ``sip3d`` (3-D impact parameter significance) is half-normal of width
    1.3 for prompt leptons and ``1 + |N(0, 4)|`` for non-prompt ones.

    Weights: ``genWeight`` is negative with probability ``neg_weight_fraction``, with a log-normal spread
    ``weight_spread`` of its magnitude around 1.
    """

    xsec_pb: float
    generator: str
    n_b: int = 0
    n_w: int = 0
    lepton_probs: tuple[float, ...] = (1.0,)
    z_decay: bool = False
    forward_prob: float = 0.0
    n_extra: float = 1.0
    extra_b_fraction: float = 0.02
    hard_pt: float = 50.0
    extra_pt_index: float = 3.2
    jet_scale: float = 1.0
    lepton_pt: float = 40.0
    n_fake: float = 0.05
    neg_weight_fraction: float = 0.0
    weight_spread: float = 0.0


_TTBAR = ProcessSpec(
    xsec_pb=396.87 + 332.97,  # AGC: non-all-hadronic + all-hadronic (pb)
    generator="powheg+pythia8",
    n_b=2,
    n_w=2,
    lepton_probs=(0.25, 0.63, 0.12),  # lepton-enriched, as after a single-lepton skim
    n_extra=2.4,
    extra_b_fraction=0.01,
    hard_pt=55.0,
    extra_pt_index=3.0,
    lepton_pt=45.0,
    n_fake=0.12,
    neg_weight_fraction=0.004,
    weight_spread=0.02,
)

#: The processes :func:`~distproc.samples.make_sample` knows: the AGC's nine inputs (cross sections as in
#: the AGC, pb) + DY.
PROCESSES: dict[str, ProcessSpec] = {
    "ttbar": _TTBAR,
    # Renormalization/factorization scale variations: more (less) radiation with a lower (higher) scale.
    "ttbar_scaledown": dataclasses.replace(_TTBAR, n_extra=_TTBAR.n_extra * 1.08, extra_pt_index=2.95),
    "ttbar_scaleup": dataclasses.replace(_TTBAR, n_extra=_TTBAR.n_extra * 0.93, extra_pt_index=3.05),
    # Matrix-element generator variation (aMC@NLO: harder hard process, many negative weights).
    "ttbar_me_var": dataclasses.replace(
        _TTBAR, generator="amcatnlo+pythia8", hard_pt=_TTBAR.hard_pt * 1.03, neg_weight_fraction=0.24
    ),
    # Parton-shower variation (Herwig): softer jet response, a little more radiation.
    "ttbar_ps_var": dataclasses.replace(
        _TTBAR, generator="powheg+herwig7", jet_scale=0.97, n_extra=_TTBAR.n_extra * 1.04
    ),
    "single_top_s_chan": ProcessSpec(
        xsec_pb=2.0268 + 1.2676,
        generator="amcatnlo+pythia8",
        n_b=2,
        n_w=1,
        lepton_probs=(0.30, 0.70),
        n_extra=1.3,
        hard_pt=50.0,
        lepton_pt=42.0,
        n_fake=0.08,
        neg_weight_fraction=0.19,
    ),
    "single_top_t_chan": ProcessSpec(
        xsec_pb=(36.993 + 22.175) / 0.252,  # AGC: scaled from the lepton filter to inclusive
        generator="powheg+pythia8",
        n_b=1,
        n_w=1,
        lepton_probs=(0.30, 0.70),
        forward_prob=0.85,
        n_extra=1.2,
        extra_b_fraction=0.25,  # the second b of the 4-flavour scheme, soft and often lost
        hard_pt=45.0,
        lepton_pt=40.0,
        n_fake=0.08,
        neg_weight_fraction=0.002,
        weight_spread=0.02,
    ),
    "single_top_tW": ProcessSpec(
        xsec_pb=37.936 + 37.906,
        generator="powheg+pythia8",
        n_b=1,
        n_w=2,
        lepton_probs=(0.30, 0.58, 0.12),
        n_extra=1.8,
        hard_pt=50.0,
        lepton_pt=44.0,
        n_fake=0.10,
        neg_weight_fraction=0.003,
        weight_spread=0.02,
    ),
    "wjets": ProcessSpec(
        xsec_pb=61457 * 0.252,  # AGC: e/mu + nu final states
        generator="madgraph+pythia8",
        lepton_probs=(0.15, 0.85),  # W -> tau nu with a hadronic tau gives no e/mu
        # Radiation tuned so that W+jets is about a fifth of the AGC's 4j1b region and a few per cent of
        # its 4j2b region, as in the AGC (a softer tail leaves W+jets out of the >= 4 jet selection).
        n_extra=2.0,
        extra_b_fraction=0.04,  # W + heavy flavour
        extra_pt_index=3.0,
        lepton_pt=38.0,
        n_fake=0.05,
    ),
    "dy": ProcessSpec(
        xsec_pb=6077.22,  # DYJetsToLL_M-50, NNLO
        generator="amcatnlo+pythia8",
        lepton_probs=(0.33, 0.0, 0.67),  # Z -> tau tau gives (mostly) no prompt e/mu pair
        z_decay=True,
        n_extra=1.2,
        extra_b_fraction=0.02,
        extra_pt_index=3.4,
        n_fake=0.04,
        neg_weight_fraction=0.16,
    ),
}


#: The nine inputs of the AGC ttbar analysis, in the AGC's order.
AGC_PROCESSES = (
    "ttbar",
    "ttbar_scaledown",
    "ttbar_scaleup",
    "ttbar_me_var",
    "ttbar_ps_var",
    "single_top_s_chan",
    "single_top_t_chan",
    "single_top_tW",
    "wjets",
)
