"""Synthetic NanoAOD-like samples: the AGC's nine inputs plus Drell-Yan, written as ROOT TTrees.

:func:`make_sample` writes ``<process>_<i>.root`` files holding a TTree ``Events`` whose branches carry
NanoAOD's names and types (``nJet``, ``Jet_pt``, ``Electron_cutBased``, ``MET_pt``, ...), so coffea's
``NanoAODSchema`` builds ``events.Jet``, ``events.Electron``, ``events.Muon`` and ``events.MET`` from them.
Each process is one :class:`ProcessSpec` in :data:`PROCESSES`: how many b quarks and W bosons its hard
process makes, how much extra radiation, the lepton content, the spectra's scales and the generator's
negative-weight fraction. The events are a fast, vectorized caricature of the physics (falling jet spectra
sorted by pT, bimodal b-tag scores, isolated prompt leptons plus non-prompt fakes, Z -> ll decays with the
Z line shape, MET from the neutrinos), good enough that selections, b-tagging and reconstruction behave as
on real samples; they are not a simulation.

Events are generated in fixed blocks of ``_BLOCK`` events, each block from its own
``numpy.random.Generator(PCG64)`` seeded from ``(seed, process, block number)``: a seed gives the same
events whatever ``events_per_file`` is, and different processes or seeds give independent streams.
Floating-point branches keep NanoAOD's reduced mantissas (10 bits for pT and masses, 12 for angles), which
is what makes real NanoAOD compress as it does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from distproc._paths import atomic_write
from distproc.exceptions import ConfigError, format_options

__all__ = (
    "AGC_PROCESSES",
    "BRANCHES",
    "PROCESSES",
    "TRUTH_ROLES",
    "ProcessSpec",
    "SampleInfo",
    "load_samples",
    "make_agc_samples",
    "make_sample",
    "sample_fileset",
    "write_fileset",
)

TREENAME = "Events"
METADATA_NAME = "metadata.json"
_METADATA_FORMAT = "distproc-samples-1"

# Events per generated block. Part of the random stream's definition: changing it changes every sample.
_BLOCK = 100_000
# MC NanoAOD convention: run 1, a new luminosity block every this many events.
_EVENTS_PER_LUMI = 1000

# name: (uproot class, default level, highest level). ZSTD level 1 rather than ~5: on one core, level 5
# makes writing a ttbar sample 2.2x slower for files only 10% smaller (and decompression is as fast).
_COMPRESSIONS: dict[str, tuple[type[uproot.compression.Compression], int, int]] = {
    "zstd": (uproot.ZSTD, 1, 22),
    "lz4": (uproot.LZ4, 4, 12),
}

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

#: The processes :func:`make_sample` knows: the AGC's nine inputs (cross sections as in the AGC, pb) + DY.
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


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`make_sample` wrote: the files of one process and the numbers to normalize it.

    Attributes
    ----------
    process
        The process name, a key of :data:`PROCESSES`.
    files
        Absolute paths of the ROOT files, in event order.
    events
        Number of events in all files together.
    sum_genweight
        Sum of ``genWeight`` over all events (the normalization of NLO samples with negative weights).
    xsec_pb
        Cross section in pb.
    treename
        Name of the TTree in every file.
    seed, compression, compression_level
        How the sample was generated.
    """

    process: str
    files: list[str]
    events: int
    sum_genweight: float
    xsec_pb: float
    treename: str = TREENAME
    seed: int = 0
    compression: str = "zstd"
    compression_level: int = 1


# ---------------------------------------------------------------------------------------------------------
# Small vectorized helpers


def _round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 *x* in place to *bits* mantissa bits (half away from zero), as NanoAOD stores floats."""
    u = x.view(np.uint32)
    drop = 23 - bits
    u += np.uint32(1 << (drop - 1))
    u &= np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return x


def _uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform float32 in [0, 1)."""
    return rng.random(n, dtype=np.float32)


def _open_uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform float32 in (0, 1]: safe to take the logarithm of."""
    u = rng.random(n, dtype=np.float32)
    np.subtract(np.float32(1), u, out=u)
    return u


def _categorical(u: np.ndarray, probs: Iterable[float]) -> np.ndarray:
    """Category index ``k`` with probability ``probs[k]``, from uniforms *u* (inverse CDF)."""
    cdf = np.cumsum(np.asarray(list(probs), dtype=np.float64))
    return np.searchsorted((cdf / cdf[-1])[:-1].astype(np.float32), u, side="right")


def _poisson(u: np.ndarray, mean: float) -> np.ndarray:
    """Poisson-distributed counts from uniforms *u*, by inverse CDF (3x faster than ``rng.poisson``)."""
    k = np.arange(int(mean + 12 * math.sqrt(mean) + 12))
    pmf = np.exp(k * math.log(mean) - mean - np.array([math.lgamma(i + 1) for i in k])) if mean else k == 0
    return _categorical(u, pmf)


def _geometric(u: np.ndarray, mean: float, cap: int = 20) -> np.ndarray:
    """Geometric counts (``P(n) ~ r**n``: "staircase scaling" of extra jets) of *mean*, from uniforms *u*."""
    ratio = mean / (1.0 + mean)
    if ratio <= 0:
        return np.zeros(len(u), dtype=np.int64)
    n = np.log1p(-u) * np.float32(1 / math.log(ratio))
    np.minimum(n, np.float32(cap), out=n)
    return n.astype(np.int64)


def _binomial(u: np.ndarray, trials: np.ndarray, p: float) -> np.ndarray:
    """Binomial(trials, p) counts for small integer *trials* per entry, from uniforms *u* (inverse CDF)."""
    top = int(trials.max(initial=0))
    k = np.arange(top + 1)
    # cdf[m, k] = P(Binomial(m, p) <= k); row m is shifted by m so that one searchsorted serves every row.
    cdf = np.array(
        [
            [sum(math.comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(min(i, m) + 1)) for i in k]
            for m in k
        ]
    )
    cdf[:, -1] = 1.0
    shifted = (cdf[:, :-1] + k[:, None]).ravel()
    return np.searchsorted(shifted, u + trials, side="right") - trials * top


def _sort_by_pt(
    evt: np.ndarray, pt: np.ndarray, payload: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Order objects by event, then by decreasing pT (rounded to 10 mantissa bits); carry *payload* along.

    One ``np.sort`` of packed 64-bit keys ``event | ~pT | payload``, several times faster than ``lexsort``
    or ``argsort``. *payload* holds small non-negative integers (default: the object's index, which makes
    the result the sorting permutation). Returns the payload and the pT, both in the new order.
    """
    if payload is None:
        payload = np.arange(len(pt), dtype=np.uint64)
    bits = max(int(payload.max(initial=0)).bit_length(), 1)
    if bits + int(evt.max(initial=0)).bit_length() + 18 > 64:
        msg = f"cannot pack {len(pt)} objects of one block into 64-bit sort keys"
        raise ValueError(msg)
    # A positive float32 with 10 mantissa bits has 18 significant bits (8 exponent + 10 mantissa).
    key = evt.astype(np.uint64)
    key <<= np.uint64(18)
    key |= np.uint32(0x3FFFF) - (pt.view(np.uint32) >> np.uint32(13))
    key <<= np.uint64(bits)
    key |= payload.astype(np.uint64, copy=False)
    key.sort()
    out = (key & np.uint64((1 << bits) - 1)).astype(payload.dtype)
    key >>= np.uint64(bits)
    inv = key.astype(np.uint32)  # the low 32 bits: the inverted pT and the low bits of the event
    inv &= np.uint32(0x3FFFF)
    np.subtract(np.uint32(0x3FFFF), inv, out=inv)
    inv <<= np.uint32(13)
    return out, inv.view(np.float32)


def _collection(counts: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    """A jagged record array (one list per event) without copying the field arrays."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    record = ak.contents.RecordArray(
        [ak.contents.NumpyArray(v) for v in fields.values()], list(fields), length=int(offsets[-1])
    )
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


# ---------------------------------------------------------------------------------------------------------
# Physics


_JET_PT_MIN = 15.0  # GeV, NanoAOD's jet threshold
_JET_ETA_MAX = 4.7
# Jet kinds: 0 hard-process b, 1 light quark from a W, 2 forward spectator, 3 radiation, 4 radiation b
_KIND_IS_B = np.array([True, False, False, False, True])
_KIND_ETA_SIGMA = np.array([1.3, 1.4, 0.9, 2.0, 2.0], dtype=np.float32)
_KIND_MASS_FRAC = np.array([0.14, 0.11, 0.10, 0.11, 0.13], dtype=np.float32)
#: ``Jet_truthRole`` values: what a jet comes from (the truth label for jet-parton assignment).
TRUTH_ROLES = {
    0: "radiation or forward spectator quark",
    1: "b quark of the hadronically decaying top (t -> b q q')",
    2: "another hard-process b quark (the leptonic top's in semileptonic ttbar)",
    3: "quark of the hadronic top's W boson",
    4: "quark of another W boson",
}
# Role of each jet kind when the jet is not a decay product of the hadronic top.
_KIND_ROLE = np.array([2, 4, 0, 0, 0], dtype=np.int32)
# Hadronic top decays (GeV); Breit-Wigner line shapes truncated to +-_BW_HALF_RANGE of the pole.
_TOP_MASS, _TOP_WIDTH = 172.5, 1.4
_W_MASS, _W_WIDTH = 80.4, 2.1
_B_MASS = 4.8
_BW_HALF_RANGE = 15.0
_JET_RESPONSE_SIGMA = 0.10  # relative pT resolution of jets from the top decay
_JET_ID_CUTS = (0.02, 0.05)  # jetId 0 below the first, 2 between, 6 above


def _breit_wigner(rng: np.random.Generator, n: int, mass: float, width: float) -> np.ndarray:
    """*n* masses from a Breit-Wigner line shape truncated to ``mass +- _BW_HALF_RANGE``."""
    edge = np.arctan(2 * _BW_HALF_RANGE / width)
    return mass + 0.5 * width * np.tan(edge * (2 * rng.random(n) - 1))


def _isotropic(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Three-momenta (shape ``(3, n)``) of magnitudes *p* in isotropic random directions."""
    cos_t = 2 * rng.random(len(p)) - 1
    sin_t = np.sqrt(1 - cos_t**2)
    phi = 2 * np.pi * rng.random(len(p))
    return p * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])


def _boost(energy: np.ndarray, momentum: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Four-momenta ``(energy, momentum[3, n])`` boosted by velocities ``beta[3, n]`` (|beta| < 1)."""
    b2 = np.maximum((beta * beta).sum(axis=0), 1e-300)
    gamma = 1 / np.sqrt(1 - b2)
    bp = (beta * momentum).sum(axis=0)
    return gamma * (energy + bp), momentum + ((gamma - 1) / b2 * bp + gamma * energy) * beta


def _top_decays(
    rng: np.random.Generator, spec: ProcessSpec, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT, eta, phi (each of shape ``(3, n)``: b, q, q') of the quarks of *n* hadronic top decays."""
    m_top = _breit_wigner(rng, n, _TOP_MASS, _TOP_WIDTH)
    m_w = _breit_wigner(rng, n, _W_MASS, _W_WIDTH)
    pt = -np.log((1 - rng.random(n)) * (1 - rng.random(n))) * (0.9 * spec.hard_pt)
    rapidity = rng.standard_normal(n)
    phi = 2 * np.pi * rng.random(n)
    mt = np.hypot(m_top, pt)
    top_e = mt * np.cosh(rapidity)
    top_beta = np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(rapidity)]) / top_e
    # t -> b W in the top's rest frame, then W -> q q' (massless) in the W's rest frame.
    p_star = np.sqrt((m_top**2 - (_B_MASS + m_w) ** 2) * (m_top**2 - (m_w - _B_MASS) ** 2)) / (2 * m_top)
    b = _isotropic(rng, p_star)
    w_e = np.hypot(p_star, m_w)
    q = _isotropic(rng, 0.5 * m_w)
    quarks = [_boost(np.hypot(p_star, _B_MASS), b, top_beta)]
    for sign in (1, -1):
        e, p = _boost(0.5 * m_w, sign * q, -b / w_e)
        quarks.append(_boost(e, p, top_beta))
    momenta = np.stack([p for _, p in quarks], axis=1)  # (3 components, 3 quarks, n)
    out_pt = np.hypot(momenta[0], momenta[1])
    return out_pt, np.arcsinh(momenta[2] / out_pt), np.arctan2(momenta[1], momenta[0])


def _jets(rng: np.random.Generator, spec: ProcessSpec, n: int, n_lep: np.ndarray) -> dict[str, Any]:
    """Jets of *n* events with *n_lep* prompt leptons each: per-event counts and sorted field arrays."""
    n_light = _binomial(_uniform(rng, n), 2 * np.clip(spec.n_w - n_lep, 0, None), 0.9)
    n_fwd = _uniform(rng, n) < spec.forward_prob
    n_extra = _geometric(_uniform(rng, n), spec.n_extra)
    counts_by_kind = [np.full(n, spec.n_b), n_light, n_fwd, n_extra]
    totals = [int(c.sum()) for c in counts_by_kind]
    events = np.arange(n, dtype=np.int32)
    evt = np.concatenate([np.repeat(events, c) for c in counts_by_kind])
    kind = np.repeat(np.arange(4, dtype=np.int8), totals)
    kind[sum(totals[:3]) :][_uniform(rng, totals[3]) < spec.extra_b_fraction] = 4

    # pT above threshold: Gamma(2) (= -log(u1 u2)) for hard-process quarks, a power law for radiation.
    n_hard, n_rad = sum(totals[:3]), totals[3]
    hard = _open_uniform(rng, n_hard)
    hard *= _open_uniform(rng, n_hard)
    hard = np.log(hard)
    hard *= np.repeat((np.array([-0.5, -0.4, -0.45]) * spec.hard_pt).astype(np.float32), totals[:3])
    rad = np.log(_open_uniform(rng, n_rad))
    rad *= np.float32(-1.0 / (spec.extra_pt_index - 1.0))
    rad = np.exp(rad)
    rad -= np.float32(1)
    rad *= np.float32(_JET_PT_MIN)
    np.minimum(rad, np.float32(3000), out=rad)
    pt = np.concatenate([hard, rad])
    pt *= np.float32(spec.jet_scale)
    pt += np.float32(_JET_PT_MIN)
    nj = len(pt)
    eta = rng.standard_normal(nj, dtype=np.float32)
    eta *= _KIND_ETA_SIGMA[kind]
    fwd = np.flatnonzero(kind == 2)
    eta[fwd] += np.where(_uniform(rng, len(fwd)) < 0.5, np.float32(-2.6), np.float32(2.6))
    outside = np.flatnonzero(np.abs(eta) > _JET_ETA_MAX)
    eta[outside] = (_uniform(rng, len(outside)) * 2 - 1) * np.float32(_JET_ETA_MAX)
    phi = _uniform(rng, nj)
    phi -= np.float32(0.5)
    phi *= np.float32(2 * np.pi)
    role = _KIND_ROLE[kind]
    if spec.n_b and spec.n_w:
        # One hadronic top per event with two W quarks: the first b and the first two W quarks.
        had = np.flatnonzero(n_light >= 2)
        first_light = totals[0] + (np.cumsum(n_light) - n_light)[had]
        index = np.stack([had * spec.n_b, first_light, first_light + 1])
        decay_pt, decay_eta, decay_phi = _top_decays(rng, spec, len(had))
        decay_pt *= spec.jet_scale * (1.0 + _JET_RESPONSE_SIGMA * rng.standard_normal(decay_pt.shape))
        pt[index], eta[index], phi[index] = decay_pt, decay_eta, decay_phi
        role[index[0]] = 1
        role[index[1:]] = 3
        keep = np.flatnonzero((pt >= _JET_PT_MIN) & (np.abs(eta) <= _JET_ETA_MAX))
        if len(keep) < nj:
            evt, kind, pt, eta, phi, role = (a[keep] for a in (evt, kind, pt, eta, phi, role))
            nj = len(pt)
    counts = np.bincount(evt, minlength=n).astype(np.int32)
    perm, pt = _sort_by_pt(evt, _round_mantissa(pt, 10))
    kind, eta, phi, role = kind[perm], eta[perm], phi[perm], role[perm]
    # m/pT around a kind-dependent fraction, triangular spread from two uniforms.
    mass = _uniform(rng, nj)
    mass += _uniform(rng, nj)
    mass *= np.float32(0.6)
    mass += np.float32(0.4)
    mass *= _KIND_MASS_FRAC[kind]
    mass *= pt
    # CSVv2-like score: b jets pile up near 1 (1 - u^4: 84% above 0.5), light jets near 0 (u^12: 6%).
    u = _uniform(rng, nj)
    u *= u
    u *= u
    btag = u * u
    btag *= u
    np.subtract(np.float32(1), u, out=btag, where=_KIND_IS_B[kind])
    # jetId bits (2: tight, 4: tight lepton veto): most jets pass both, a few fail.
    u = _uniform(rng, nj)
    jet_id = (u >= np.float32(_JET_ID_CUTS[0])).astype(np.int32)
    jet_id += u >= np.float32(_JET_ID_CUTS[1])
    jet_id *= 2
    jet_id[jet_id == 4] = 6
    fields = {
        "pt": pt,
        "eta": _round_mantissa(eta, 12),
        "phi": _round_mantissa(phi, 12),
        "mass": _round_mantissa(mass, 10),
        "btagCSVV2": _round_mantissa(btag, 10),
        "jetId": jet_id,
        "truthRole": role,
    }
    return {"counts": counts, "fields": fields}


_Z_MASS, _Z_WIDTH, _Z_RANGE = 91.1876, 2.4952, (60.0, 120.0)
# Per flavour (electron, muon): NanoAOD's pT threshold, |eta| acceptance, mass.
_LEPTON_PT_MIN = (5.0, 3.0)
_LEPTON_ETA_MAX = (2.5, 2.4)
_LEPTON_MASS = (0.000511, 0.10566)
# Electron cutBased (0 fail, 1 veto, 2 loose, 3 medium, 4 tight) for prompt and non-prompt electrons.
_CUTBASED_PROMPT = (0.02, 0.03, 0.05, 0.15, 0.75)
_CUTBASED_FAKE = (0.45, 0.25, 0.15, 0.10, 0.05)
_TIGHT_ID_PROB = (0.40, 0.97)  # muon tightId for (fake, prompt)


def _z_decays(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT, eta, phi of the two leptons of *n* Z decays (lepton pairs interleaved), massless leptons."""
    # Breit-Wigner line shape truncated to _Z_RANGE, by inverting its CDF.
    lo, hi = (np.arctan(2 * (m - _Z_MASS) / _Z_WIDTH) for m in _Z_RANGE)
    mass = _Z_MASS + 0.5 * _Z_WIDTH * np.tan(lo + (hi - lo) * rng.random(n))
    zpt = rng.standard_gamma(1.3, n) * 10.0
    rapidity = rng.standard_normal(n) * 1.6
    zphi = rng.random(n) * 2 * np.pi
    mt = np.hypot(mass, zpt)
    energy = mt * np.cosh(rapidity)
    beta = np.stack([zpt * np.cos(zphi), zpt * np.sin(zphi), mt * np.sinh(rapidity)]) / energy
    gamma = energy / mass
    # Isotropic decay in the Z rest frame, then boost the two back-to-back leptons to the lab.
    cos_t = 2 * rng.random(n) - 1
    sin_t = np.sqrt(1 - cos_t**2)
    phi_star = rng.random(n) * 2 * np.pi
    pstar = 0.5 * mass
    p1 = pstar * np.stack([sin_t * np.cos(phi_star), sin_t * np.sin(phi_star), cos_t])
    out = []
    for p in (p1, -p1):
        bp = (beta * p).sum(axis=0)
        p_lab = p + (gamma**2 / (gamma + 1) * bp + gamma * pstar) * beta
        out.append(p_lab)
    px, py, pz = (np.stack([a, b], axis=1).ravel() for a, b in zip(out[0], out[1], strict=True))
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / pt), np.arctan2(py, px)


def _leptons(
    rng: np.random.Generator, spec: ProcessSpec, n: int, n_lep: np.ndarray
) -> tuple[dict[str, dict[str, Any]], np.ndarray, np.ndarray]:
    """Electrons and muons (prompt + non-prompt), and the summed neutrino px, py per event."""
    z_pair = (n_lep >= 2) if spec.z_decay else np.zeros(n, dtype=bool)
    n_w_lep = np.where(z_pair, 0, n_lep)
    # Leptons from W decays, each with its neutrino; a second lepton has the opposite charge.
    evt_w = np.repeat(np.arange(n), n_w_lep)
    nw = len(evt_w)
    first = np.repeat(np.cumsum(n_w_lep) - n_w_lep, n_w_lep)
    sign_w = np.where(_uniform(rng, n) < 0.5, -1, 1)[evt_w] * (1 - 2 * ((np.arange(nw) - first) % 2))
    pt_w = rng.standard_gamma(3.0, nw, dtype=np.float32) * np.float32(spec.lepton_pt / 3.0)
    eta_w = rng.standard_normal(nw, dtype=np.float32) * np.float32(1.1)
    phi_w = (_uniform(rng, nw) - np.float32(0.5)) * np.float32(2 * np.pi)
    flav_w = _uniform(rng, nw) < 0.5
    nu_pt = pt_w * np.exp(np.float32(0.35) * rng.standard_normal(nw, dtype=np.float32))
    nu_phi = phi_w + np.float32(np.pi) + rng.standard_normal(nw, dtype=np.float32)
    nu_px = np.bincount(evt_w, weights=nu_pt * np.cos(nu_phi), minlength=n)
    nu_py = np.bincount(evt_w, weights=nu_pt * np.sin(nu_phi), minlength=n)
    # Leptons from Z decays: opposite-sign, same-flavour pairs.
    evt_z = np.repeat(np.flatnonzero(z_pair), 2)
    nz = len(evt_z)
    pt_z, eta_z, phi_z = (x.astype(np.float32) for x in _z_decays(rng, nz // 2))
    sign_z = np.tile(np.array([1, -1]), nz // 2)
    flav_z = np.repeat(_uniform(rng, nz // 2) < 0.5, 2)

    collections = {}
    for flav, (name, iso_name) in enumerate((("Electron", "pfRelIso03_all"), ("Muon", "pfRelIso04_all"))):
        # Non-prompt leptons (heavy-flavour decays, misidentified hadrons): soft and not isolated.
        evt_f = np.repeat(np.arange(n), _poisson(_uniform(rng, n), spec.n_fake))
        nf = len(evt_f)
        w = flav_w == bool(flav)
        z = flav_z == bool(flav)
        pt_f = rng.standard_exponential(nf, dtype=np.float32) * np.float32(6) + np.float32(
            _LEPTON_PT_MIN[flav]
        )
        evt = np.concatenate([evt_w[w], evt_z[z], evt_f])
        pt = np.concatenate([pt_w[w], pt_z[z], pt_f])
        eta = np.concatenate(
            [eta_w[w], eta_z[z], rng.standard_normal(nf, dtype=np.float32) * np.float32(1.3)]
        )
        phi = np.concatenate(
            [phi_w[w], phi_z[z], (_uniform(rng, nf) - np.float32(0.5)) * np.float32(2 * np.pi)]
        )
        charge = np.concatenate([sign_w[w], sign_z[z], np.where(_uniform(rng, nf) < 0.5, -1, 1)])
        prompt = np.repeat([True, False], [len(evt) - nf, nf])
        keep = np.flatnonzero((np.abs(eta) < _LEPTON_ETA_MAX[flav]) & (pt > _LEPTON_PT_MIN[flav]))
        pt = _round_mantissa(np.minimum(pt[keep], np.float32(3000)), 10)
        evt = evt[keep]
        counts = np.bincount(evt, minlength=n).astype(np.int32)
        perm, pt = _sort_by_pt(evt, pt)
        perm = keep[perm]
        prompt = prompt[perm]
        nl = len(pt)
        iso = rng.standard_exponential(nl, dtype=np.float32)
        iso *= np.where(prompt, np.float32(0.03), np.float32(0.4))
        iso[~prompt] += np.float32(0.05)
        u = _uniform(rng, nl)
        sip3d = np.abs(rng.standard_normal(nl, dtype=np.float32))
        sip3d *= np.where(prompt, np.float32(1.3), np.float32(4.0))
        sip3d[~prompt] += np.float32(1.0)
        if flav == 0:
            quality = np.where(prompt, _categorical(u, _CUTBASED_PROMPT), _categorical(u, _CUTBASED_FAKE))
            quality_name = "cutBased"
        else:
            quality = u < np.where(prompt, np.float32(_TIGHT_ID_PROB[1]), np.float32(_TIGHT_ID_PROB[0]))
            quality_name = "tightId"
        fields = {
            "pt": pt,
            "eta": _round_mantissa(eta[perm], 12),
            "phi": _round_mantissa(phi[perm], 12),
            "mass": _round_mantissa(np.full(nl, _LEPTON_MASS[flav], dtype=np.float32), 10),
            iso_name: _round_mantissa(iso, 6),
            "charge": charge[perm].astype(np.int32),
            quality_name: quality.astype(BRANCHES[name][quality_name]),
            "sip3d": _round_mantissa(sip3d, 10),
        }
        collections[name] = {"counts": counts, "fields": fields}
    return collections, nu_px, nu_py


def _block(spec: ProcessSpec, process_key: int, seed: int, block: int, n: int) -> dict[str, Any]:
    """Events ``block * _BLOCK`` to ``block * _BLOCK + n`` of a sample, as uproot ``extend`` input."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, process_key, block])))
    n_lep = _categorical(_uniform(rng, n), spec.lepton_probs)
    jets = _jets(rng, spec, n, n_lep)
    leptons, nu_px, nu_py = _leptons(rng, spec, n, n_lep)

    # MET: the neutrinos plus a resolution that grows with the hadronic activity.
    cumulative = np.zeros(len(jets["fields"]["pt"]) + 1)
    np.cumsum(jets["fields"]["pt"], out=cumulative[1:])
    ends = np.cumsum(jets["counts"])
    ht = (cumulative[ends] - cumulative[ends - jets["counts"]]).astype(np.float32)
    sigma = np.float32(0.5) * np.sqrt(ht) + np.float32(5)
    met_x = nu_px.astype(np.float32) + sigma * rng.standard_normal(n, dtype=np.float32)
    met_y = nu_py.astype(np.float32) + sigma * rng.standard_normal(n, dtype=np.float32)

    sign = np.where(_uniform(rng, n) < spec.neg_weight_fraction, np.float32(-1), np.float32(1))
    if spec.weight_spread:
        sign *= np.exp(np.float32(spec.weight_spread) * rng.standard_normal(n, dtype=np.float32))
    index = np.arange(block * _BLOCK, block * _BLOCK + n, dtype=np.uint64)
    out: dict[str, Any] = {
        "run": np.ones(n, dtype=np.uint32),
        "luminosityBlock": (index // _EVENTS_PER_LUMI + 1).astype(np.uint32),
        "event": index + 1,
        "genWeight": sign.astype(np.float32),
        "Jet": _collection(jets["counts"], jets["fields"]),
    }
    for name, coll in leptons.items():
        out[name] = _collection(coll["counts"], coll["fields"])
    out["MET_pt"] = _round_mantissa(np.hypot(met_x, met_y), 10)
    out["MET_phi"] = _round_mantissa(np.arctan2(met_y, met_x), 12)
    return out


# ---------------------------------------------------------------------------------------------------------
# Writing


def _process_key(process: str) -> int:
    """A stable 64-bit number for *process* (Python's ``hash`` changes between runs)."""
    return int.from_bytes(hashlib.blake2b(process.encode(), digest_size=8).digest(), "little")


def _branch_types() -> dict[str, Any]:
    """``mktree`` branch types: dtypes for flat branches, lists of records for collections."""
    types: dict[str, Any] = {}
    for name, spec in BRANCHES.items():
        if isinstance(spec, dict):
            fields = [ak.types.NumpyType(dtype) for dtype in spec.values()]
            types[name] = ak.types.ListType(ak.types.RecordType(fields, list(spec)))
        else:
            types[name] = np.dtype(spec)
    return types


def _events(spec: ProcessSpec, process: str, seed: int, events: int) -> Iterator[dict[str, Any]]:
    """The sample's events, block after block."""
    key = _process_key(process)
    for block in range(math.ceil(events / _BLOCK)):
        yield _block(spec, key, seed, block, min(_BLOCK, events - block * _BLOCK))


def _write_file(
    path: Path, blocks: Iterator[dict[str, Any]], pending: list[Any], events: int, compression: Any
) -> float:
    """Write *events* events to *path*, from *pending* then *blocks*; return their sum of ``genWeight``.

    ``pending`` is ``[block, position]``, updated so that the next file continues where this one stops.
    The file is written under a temporary name and renamed when complete.
    """
    sum_w = 0.0
    with atomic_write(path) as tmp, uproot.recreate(tmp, compression=compression) as file:
        tree = file.mktree(TREENAME, _branch_types())
        remaining = events
        while remaining:
            if pending[0] is None or pending[1] == len(pending[0]["event"]):
                pending[:] = [next(blocks), 0]
            block, start = pending
            stop = min(start + remaining, len(block["event"]))
            chunk = (
                block
                if (start, stop) == (0, len(block["event"]))
                else {name: array[start:stop] for name, array in block.items()}
            )
            tree.extend(chunk)
            sum_w += float(np.sum(chunk["genWeight"], dtype=np.float64))
            remaining -= stop - start
            pending[1] = stop
    return sum_w


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on *directory* (POSIX ``flock``; no lock where that is unavailable)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_json_atomic(path: Path, content: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _read_metadata(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": _METADATA_FORMAT, "samples": {}}
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        msg = f"cannot read sample metadata: {err}"
        raise ConfigError(msg, source=str(path)) from err
    if not isinstance(content, dict) or content.get("format") != _METADATA_FORMAT:
        msg = (
            f"not a distproc sample metadata file (expected 'format': {_METADATA_FORMAT!r}); "
            "write samples to another directory or delete the file"
        )
        raise ConfigError(
            msg,
            source=str(path),
        )
    return content


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        msg = f"{key} must be a positive integer, got {value!r}"
        raise ConfigError(msg, key=key)
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# Public API


def make_sample(
    process: str,
    events: int,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    compression: str = "zstd",
    events_per_file: int | None = None,
    compression_level: int | None = None,
) -> SampleInfo:
    """Write a synthetic NanoAOD-like sample of *process* as ROOT files in directory *out*.

    The files are ``<out>/<process>_<i>.root``, each with a TTree ``Events`` holding the branches of
    :data:`BRANCHES`. ``<out>/metadata.json`` gets (or updates) this process's entry, so several
    processes can share a directory: :func:`load_samples` reads it back.

    Parameters
    ----------
    process
        A key of :data:`PROCESSES`: ``ttbar``, its variations ``ttbar_scaledown``, ``ttbar_scaleup``,
        ``ttbar_me_var``, ``ttbar_ps_var``, ``single_top_s_chan``, ``single_top_t_chan``,
        ``single_top_tW``, ``wjets`` or ``dy``.
    events
        Number of events (> 0).
    out
        Output directory, created if needed. Existing files of the same names are replaced.
    seed
        Random seed (>= 0). The same seed and process give identical events, whatever the file split.
    compression
        ``"zstd"`` (default) or ``"lz4"``.
    events_per_file
        Events per file; ``None`` writes a single file.
    compression_level
        Compression level; ``None`` takes the algorithm's default (ZSTD 1, LZ4 4).

    Returns
    -------
    SampleInfo
        The files written (absolute paths), the number of events, the sum of ``genWeight`` and the cross
        section in pb.

    Raises
    ------
    ConfigError
        For an unknown process or compression, or a non-positive event count, file size or level.

    Examples
    --------
    >>> import tempfile
    >>> import uproot
    >>> from distproc.samples import make_sample
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = make_sample("ttbar", 2500, tmp, seed=1, events_per_file=1000)
    ...     with uproot.open(info.files[0]) as file:
    ...         tree = file[info.treename]
    ...         print(tree.num_entries, tree["nJet"].typename, tree["Jet_pt"].typename)
    1000 int32_t float[]
    >>> info.process, info.events, len(info.files)
    ('ttbar', 2500, 3)
    """
    if not isinstance(process, str) or process not in PROCESSES:
        msg = f"unknown process {process!r}. {format_options(str(process), PROCESSES, 'processes')}"
        raise ConfigError(
            msg,
            key="process",
        )
    events = _positive_int(events, "events")
    per_file = events if events_per_file is None else _positive_int(events_per_file, "events_per_file")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}"
        raise ConfigError(msg, key="seed")
    name = compression.lower() if isinstance(compression, str) else compression
    if name not in _COMPRESSIONS:
        msg = (
            f"unknown compression {compression!r}. "
            f"{format_options(str(compression), _COMPRESSIONS, 'compressions')}"
        )
        raise ConfigError(
            msg,
            key="compression",
        )
    cls, default_level, max_level = _COMPRESSIONS[name]
    level = (
        default_level if compression_level is None else _positive_int(compression_level, "compression_level")
    )
    if level > max_level:
        msg = f"compression_level for {name} must be between 1 and {max_level}, got {level}"
        raise ConfigError(
            msg,
            key="compression_level",
        )

    spec = PROCESSES[process]
    directory = Path(out).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    metadata_path = directory / METADATA_NAME
    metadata = _read_metadata(metadata_path)  # fail before the long part, not after

    blocks = _events(spec, process, int(seed), events)
    pending: list[Any] = [None, 0]
    files: list[str] = []
    sum_w = 0.0
    for i, first in enumerate(range(0, events, per_file)):
        path = directory / f"{process}_{i}.root"
        sum_w += _write_file(path, blocks, pending, min(per_file, events - first), cls(level))
        files.append(str(path))

    info = SampleInfo(
        process=process,
        files=files,
        events=events,
        sum_genweight=sum_w,
        xsec_pb=spec.xsec_pb,
        seed=int(seed),
        compression=name,
        compression_level=level,
    )
    entry = dataclasses.asdict(info)
    entry["files"] = [Path(f).name for f in files]
    with _locked(directory):  # other processes may be writing their samples to the same directory
        metadata = _read_metadata(metadata_path)
        previous = metadata["samples"].get(process, {}).get("files", [])
        metadata["samples"][process] = entry
        _write_json_atomic(metadata_path, metadata)
    # Files of an earlier, larger sample of this process would otherwise linger (and match a glob).
    own = re.compile(rf"{re.escape(process)}_\d+\.root")
    for name in set(previous) - set(entry["files"]):
        if own.fullmatch(name):
            (directory / name).unlink(missing_ok=True)
    return info


def load_samples(directory: str | os.PathLike[str]) -> dict[str, SampleInfo]:
    """The samples :func:`make_sample` wrote to *directory*, by process (from its ``metadata.json``).

    Examples
    --------
    >>> import tempfile
    >>> from distproc.samples import load_samples, make_sample
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = make_sample("wjets", 100, tmp)
    ...     load_samples(tmp)["wjets"] == info
    True
    """
    directory = Path(directory).resolve()
    path = directory / METADATA_NAME
    if not path.exists():
        msg = f"no {METADATA_NAME} in {directory}: generate samples there with make_sample first"
        raise ConfigError(msg)
    samples = {}
    for process, entry in _read_metadata(path)["samples"].items():
        fields = dict(entry)
        fields["files"] = [str(directory / name) for name in entry["files"]]
        samples[process] = SampleInfo(**fields)
    return samples


def sample_fileset(infos: Iterable[SampleInfo]) -> dict[str, dict[str, Any]]:
    """A coffea fileset for samples: ``{process: {"files": {path: treename}, "metadata": {...}}}``.

    The metadata holds ``xsec`` (pb), ``sum_genweight``, ``nevents`` and ``process``, so a processor can
    normalize each dataset to a luminosity.

    Examples
    --------
    >>> import tempfile
    >>> from distproc.samples import make_sample, sample_fileset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     fileset = sample_fileset([make_sample("dy", 100, tmp)])
    >>> list(fileset), fileset["dy"]["metadata"]["nevents"]
    (['dy'], 100)
    """
    fileset: dict[str, dict[str, Any]] = {}
    for info in infos:
        if info.process in fileset:
            msg = (
                f"two samples of process {info.process!r} in one fileset; a fileset needs one entry per "
                "dataset: generate one sample with more events, or pass the samples separately"
            )
            raise ConfigError(
                msg,
                key="process",
            )
        fileset[info.process] = {
            "files": {path: info.treename for path in info.files},
            "metadata": {
                "xsec": info.xsec_pb,
                "sum_genweight": info.sum_genweight,
                "nevents": info.events,
                "process": info.process,
            },
        }
    return fileset


def write_fileset(infos: Iterable[SampleInfo], path: str | os.PathLike[str]) -> Path:
    """Write the :func:`sample_fileset` of *infos* as YAML, atomically; return the path.

    The file is what a run config's ``fileset:`` key takes. Its file paths are relative to the YAML's
    directory (where ``distproc run`` resolves them), so the samples and their fileset can move together.

    Examples
    --------
    >>> import tempfile, yaml
    >>> from distproc.samples import make_sample, write_fileset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_fileset([make_sample("wjets", 100, tmp)], f"{tmp}/fileset.yaml")
    ...     yaml.safe_load(path.read_text())["wjets"]["metadata"]["nevents"]
    100
    """
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileset = sample_fileset(infos)
    for entry in fileset.values():
        entry["files"] = {os.path.relpath(f, path.parent): t for f, t in entry["files"].items()}
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(fileset, sort_keys=False))
    return path


def make_agc_samples(
    events: int,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    compression: str = "zstd",
    events_per_file: int | None = None,
    fileset: str | os.PathLike[str] | None = "fileset.yaml",
) -> dict[str, SampleInfo]:
    """Generate the AGC's nine inputs (:data:`AGC_PROCESSES`), *events* each, and their fileset YAML.

    Parameters
    ----------
    events
        Events per process.
    out
        Directory for every sample (and ``metadata.json``).
    seed, compression, events_per_file
        As for :func:`make_sample` (the same seed for every process: their streams are independent).
    fileset
        File name (relative to *out*) of the fileset YAML to write; ``None`` writes none.

    Examples
    --------
    >>> import tempfile
    >>> from distproc.samples import make_agc_samples
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     infos = make_agc_samples(200, tmp)
    ...     sorted(p.name for p in Path(tmp).iterdir())[:3]
    ['fileset.yaml', 'metadata.json', 'single_top_s_chan_0.root']
    >>> list(infos) == list(AGC_PROCESSES)
    True
    """
    infos = {
        process: make_sample(
            process, events, out, seed=seed, compression=compression, events_per_file=events_per_file
        )
        for process in AGC_PROCESSES
    }
    if fileset is not None:
        write_fileset(infos.values(), Path(out) / fileset)
    return infos
