"""Statistical fits of distproc outputs with pyhf and cabinetry.

:func:`fit` reads a run's ``histograms.root``, builds a pyhf workspace with cabinetry from a small YAML
configuration (:mod:`distproc.fit.config`), fits pseudo-data or Asimov data by maximum likelihood, and
writes ``workspace.json``, ``fit.json`` and mplhep plots. ``distproc fit OUTPUT_DIR --config FIT.yaml``
is the same from the command line.

Examples
--------
>>> from distproc.fit import fit
>>> summary = fit("demo-output/agc", "processors/fit.yaml")  # doctest: +SKIP
>>> summary.poi, round(summary.value, 2)  # doctest: +SKIP
('ttbar_norm', 1.01)
"""

from __future__ import annotations

from distproc.exceptions import FitError, HistogramNotFoundError
from distproc.fit.config import (
    DataConfig,
    FitConfig,
    RegionConfig,
    SampleConfig,
    SystematicConfig,
    TemplateRef,
    load_fit_config,
    parse_fit_config,
)
from distproc.fit.run import FitSummary, build_workspace, fit

__all__ = (
    "DataConfig",
    "FitConfig",
    "FitError",
    "FitSummary",
    "HistogramNotFoundError",
    "RegionConfig",
    "SampleConfig",
    "SystematicConfig",
    "TemplateRef",
    "build_workspace",
    "fit",
    "load_fit_config",
    "parse_fit_config",
)


def __dir__() -> tuple[str, ...]:
    return __all__
