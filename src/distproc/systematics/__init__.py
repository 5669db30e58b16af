"""Systematic uncertainties for distproc processors.

* :class:`BinnedLookup` - 1-D/N-D binned scale factors with named variations, on jagged arrays;
* :class:`Correction` - one correction of a correctionlib JSON, pickled as (path, name, hash) and loaded
  once per worker process;
* :func:`weight_variations` - ``{"nominal": w, "<modifier>": w', ...}`` from coffea's ``Weights``;
* :class:`Scale`, :class:`Smear`, :class:`ShapeVariations` - varied copies of a collection (jet energy
  scale and resolution), with deterministic per-object smearing (:func:`deterministic_normal`);
* :func:`run_variations` - run a fill function once per shape variation and merge the histograms along a
  ``"variation"`` axis;
* :class:`Varied`, :func:`fill_varied` - a quantity for the nominal and every variation at once
  (``BinnedLookup.varied``), with selections, per-event sums and histogram filling done in one flat pass
  per variation instead of awkward's jagged operations; :func:`apply_varied` runs what is not elementwise
  (combinations, the best candidate per event, a model's scores) once per variation.

Errors are :class:`~distproc.exceptions.SystematicsError` (a ``ValueError``) or one of the subclasses
:class:`BinningError`, :class:`CorrectionNotFoundError`, :class:`InputsError` and
:class:`DuplicateVariationError`.

Examples
--------
>>> import awkward as ak
>>> from distproc.systematics import BinnedLookup
>>> sf = BinnedLookup(edges=[0.0, 50.0, 100.0], values=[0.9, 1.1], variations={"up": [1.0, 1.2]})
>>> sf(ak.Array([[10.0, 70.0], []]), variation="up").tolist()
[[1.0, 1.2], []]
"""

from __future__ import annotations

from distproc.exceptions import (
    BinningError,
    CorrectionNotFoundError,
    DuplicateVariationError,
    InputsError,
)
from distproc.systematics.apply import apply_varied, fill_varied
from distproc.systematics.binned import BinnedLookup
from distproc.systematics.correction import Correction, load_correction_set
from distproc.systematics.merge import VARIATION_AXIS, merge_variation_outputs, run_variations
from distproc.systematics.rng import deterministic_normal
from distproc.systematics.shape import Scale, ShapeVariation, ShapeVariations, Smear
from distproc.systematics.varied import Varied
from distproc.systematics.weights import weight_variations

__all__ = (
    "VARIATION_AXIS",
    "BinnedLookup",
    "BinningError",
    "Correction",
    "CorrectionNotFoundError",
    "DuplicateVariationError",
    "InputsError",
    "Scale",
    "ShapeVariation",
    "ShapeVariations",
    "Smear",
    "Varied",
    "apply_varied",
    "deterministic_normal",
    "fill_varied",
    "load_correction_set",
    "merge_variation_outputs",
    "run_variations",
    "weight_variations",
)


def __dir__() -> tuple[str, ...]:
    return __all__
