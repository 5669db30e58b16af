"""The physics of the synthetic samples: events of a :class:`~distproc.samples.processes.ProcessSpec`.

The events are a fast, vectorized caricature of the physics (falling jet spectra sorted by pT, bimodal
b-tag scores, isolated prompt leptons plus non-prompt fakes, Z -> ll decays with the Z line shape,
hadronic top decays, MET from the neutrinos), good enough that selections, b-tagging and reconstruction
behave as on real samples; they are not a simulation. :func:`event_blocks` yields them as the arrays
uproot's ``extend`` takes; :mod:`distproc.samples.writer` writes them to files.

Events are generated in fixed blocks of ``_BLOCK`` events, each block from its own
``numpy.random.Generator(PCG64)`` seeded from ``(seed, process, block number)``: a seed gives the same
events whatever the file split is, and different processes or seeds give independent streams.
Floating-point branches keep NanoAOD's reduced mantissas (10 bits for pT and masses, 12 for angles), which
is what makes real NanoAOD compress as it does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import awkward as ak
import numpy as np

from distproc.samples.processes import BRANCHES, ProcessSpec

__all__ = ("event_blocks",)

# Events per generated block. Part of the random stream's definition: changing it changes every sample.
_BLOCK = 100_000
# MC NanoAOD convention: run 1, a new luminosity block every this many events.
_EVENTS_PER_LUMI = 1000


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


def _process_key(process: str) -> int:
    """A stable 64-bit number for *process* (Python's ``hash`` changes between runs)."""
    return int.from_bytes(hashlib.blake2b(process.encode(), digest_size=8).digest(), "little")


def event_blocks(spec: ProcessSpec, process: str, seed: int, events: int) -> Iterator[dict[str, Any]]:
    """The first *events* events of *process* (generated as *spec* says) for *seed*, block after block.

    Each block is a dict of branch name to array (collections as jagged records), as uproot's
    ``WritableTree.extend`` takes it.

    Examples
    --------
    >>> from distproc.samples.processes import PROCESSES
    >>> [len(block["event"]) for block in event_blocks(PROCESSES["dy"], "dy", seed=1, events=5)]
    [5]
    """
    key = _process_key(process)
    for block in range(math.ceil(events / _BLOCK)):
        yield _block(spec, key, seed, block, min(_BLOCK, events - block * _BLOCK))
