"""``fit(OUTPUT_DIR, CONFIG)``: workspace, maximum-likelihood fit, ``fit.json`` and plots."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distproc.fit.config import FitConfig, load_fit_config, parse_fit_config
from distproc.fit.templates import (
    TemplateReader,
    cabinetry_config,
    write_templates,
)

__all__ = ("FitSummary", "build_workspace", "fit")

#: Modifier types whose parameters are pulled (Gaussian-constrained nuisance parameters).
_PULLED = ("normsys", "histosys")


@dataclass
class FitSummary:
    """What :func:`fit` found and wrote.

    Attributes
    ----------
    poi, value, uncertainty
        The parameter of interest and its best-fit value and (Hessian) uncertainty.
    parameters
        Every parameter's ``(best-fit value, uncertainty)``, by name.
    correlation
        ``{"labels": [...], "matrix": [[...]]}``, the parameters' correlation matrix.
    twice_nll
        -2 log L at the best-fit point.
    data
        ``"pseudodata"`` or ``"asimov"``.
    files
        What was written: ``workspace``, ``fit`` and the plots, by name.
    notes
        cabinetry's warnings while building the workspace (e.g. templates with empty bins).
    """

    poi: str
    value: float
    uncertainty: float
    parameters: dict[str, tuple[float, float]]
    correlation: dict[str, Any]
    twice_nll: float
    data: str
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``fit.json``."""
        return {
            "poi": {"name": self.poi, "value": self.value, "uncertainty": self.uncertainty},
            "parameters": {k: {"value": v, "uncertainty": u} for k, (v, u) in self.parameters.items()},
            "correlation": self.correlation,
            "twice_nll": self.twice_nll,
            "data": self.data,
            "files": self.files,
            "notes": self.notes,
        }


def _config(config: Any) -> FitConfig:
    if isinstance(config, FitConfig):
        return config
    if isinstance(config, Mapping):
        return parse_fit_config(config)
    return load_fit_config(config)


def _atomic_json(path: Path, content: Any) -> None:
    from distproc._paths import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1) + "\n")


def build_workspace(histograms: str | os.PathLike[str], config: Any) -> dict[str, Any]:
    """The pyhf workspace (a JSON-able dict) that cabinetry builds from *histograms* for *config*.

    Parameters
    ----------
    histograms
        The ROOT file written by :func:`distproc.save` (``histograms.root``).
    config
        A :class:`FitConfig`, a mapping (parsed YAML) or the path of a fit YAML.

    Raises
    ------
    HistogramNotFoundError
        A template is missing from the file (the message names it, the file, and near misses).

    Examples
    --------
    >>> from distproc.fit import build_workspace
    >>> spec = build_workspace("demo-output/agc/histograms.root", "processors/fit.yaml")  # doctest: +SKIP
    >>> [c["name"] for c in spec["channels"]]  # doctest: +SKIP
    ['4j1b', '4j2b']
    """
    return _build(histograms, _config(config))[0]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _cabinetry_warnings() -> Iterator[list[str]]:
    """Collect cabinetry's warnings (one per template with empty bins, ...) instead of printing them."""
    logger = logging.getLogger("cabinetry")
    handler = _Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _build(
    histograms: str | os.PathLike[str], cfg: FitConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The workspace and every region's bin edges (after range and rebinning)."""
    import cabinetry

    reader = TemplateReader(histograms, cfg)
    try:
        nominal = {
            (region.name, sample.name): reader.region_template(region, sample.name)
            for region in cfg.regions
            for sample in cfg.samples
        }
        present = {key: bool(np.any(t.values != 0)) for key, t in nominal.items()}
        edges = {region.name: nominal[region.name, cfg.samples[0].name].edges for region in cfg.regions}
        with tempfile.TemporaryDirectory(prefix="distproc-fit-") as folder:
            cab = cabinetry_config(cfg, str(histograms), folder, present)
            cabinetry.configuration.validate(cab)
            write_templates(cfg, reader, cab)
            cabinetry.templates.postprocess(cab)
            return cabinetry.workspace.build(cab), edges
    finally:
        reader.close()


def fit(
    output_dir: str | os.PathLike[str],
    config: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    plots: bool | None = None,
) -> FitSummary:
    """Fit the histograms of a run: build the workspace, fit the data, write results and plots.

    Reads ``OUTPUT_DIR/histograms.root`` (or the config's ``histograms``), builds the pyhf workspace with
    cabinetry, fits the pseudo-data (or Asimov data) by maximum likelihood and writes into *out*
    (default *output_dir*):

    ``workspace.json``
        The pyhf workspace.
    ``fit.json``
        Best-fit values and uncertainties of every parameter, the correlation matrix, -2 log L.
    ``prefit_<region>.png``, ``postfit_<region>.png``, ``pulls.png``
        Stacked predictions with data, and the nuisance-parameter pulls (unless ``plots`` is false).

    Parameters
    ----------
    output_dir
        A run's output directory (``distproc run CONFIG --output DIR``).
    config
        Fit configuration: a YAML path, a parsed mapping or a :class:`FitConfig`.
    out
        Where to write (default: *output_dir*).
    plots
        Make the PNG plots (default: the config's ``plots``, true unless set).

    Returns
    -------
    FitSummary
        The parameter of interest's best-fit value and uncertainty, all parameters, the files written.

    Examples
    --------
    >>> from distproc.fit import fit
    >>> summary = fit("demo-output/agc", "processors/fit.yaml")  # doctest: +SKIP
    >>> print(f"{summary.poi} = {summary.value:.3f} +- {summary.uncertainty:.3f}")  # doctest: +SKIP
    ttbar_norm = 1.012 +- 0.043
    """
    import cabinetry

    cfg = _config(config)
    histograms = Path(cfg.histograms)
    if not histograms.is_absolute():
        histograms = Path(output_dir) / histograms
    destination = Path(out) if out is not None else Path(output_dir)
    destination.mkdir(parents=True, exist_ok=True)
    with _cabinetry_warnings() as notes:
        spec, edges = _build(histograms, cfg)
    workspace_path = destination / "workspace.json"
    _atomic_json(workspace_path, spec)

    model, data = cabinetry.model_utils.model_and_data(spec)
    kind = "pseudodata"
    if cfg.data.asimov is not None:
        kind = "asimov"
        pars = np.asarray(model.config.suggested_init(), dtype=float)
        for name, value in cfg.data.asimov.items():
            pars[model.config.par_slice(name)] = value
        data = np.asarray(model.expected_data(pars), dtype=float).tolist()
    with _cabinetry_warnings() as fit_notes:
        results = cabinetry.fit.fit(model, data)
    notes += fit_notes

    labels = list(results.labels)
    poi_index = labels.index(cfg.poi)
    files = {"workspace": str(workspace_path)}
    if cfg.plots if plots is None else plots:
        files |= _plots(destination, cfg, model, data, results, edges)
    summary = FitSummary(
        poi=cfg.poi,
        value=float(results.bestfit[poi_index]),
        uncertainty=float(results.uncertainty[poi_index]),
        parameters={
            name: (float(v), float(u))
            for name, v, u in zip(labels, results.bestfit, results.uncertainty, strict=True)
        },
        correlation={"labels": labels, "matrix": np.asarray(results.corr_mat, dtype=float).tolist()},
        twice_nll=float(results.best_twice_nll),
        data=kind,
        files=files,
        notes=notes,
    )
    fit_path = destination / "fit.json"
    summary.files["fit"] = str(fit_path)
    _atomic_json(fit_path, summary.to_dict())
    return summary


def _plots(
    destination: Path,
    cfg: FitConfig,
    model: Any,
    data: list[float],
    results: Any,
    edges: dict[str, np.ndarray],
) -> dict[str, str]:
    import cabinetry

    from distproc.fit.plots import plot_pulls, plot_stack

    regions = {r.name: r for r in cfg.regions}
    sample_labels = {s.name: s.label for s in cfg.samples}
    observed = np.asarray(data[: model.config.nmaindata], dtype=float)
    files = {}
    for label, prediction in (
        ("prefit", cabinetry.model_utils.prediction(model)),
        ("postfit", cabinetry.model_utils.prediction(model, fit_results=results)),
    ):
        for c, channel in enumerate(model.config.channels):
            yields = [np.asarray(y, dtype=float) for y in prediction.model_yields[c]]
            path = destination / f"{label}_{channel}.png"
            plot_stack(
                path,
                edges=edges[channel],
                yields=yields,
                labels=[sample_labels.get(s, s) for s in model.config.samples],
                total_stdev=np.asarray(prediction.total_stdev_model_bins[c][-1], dtype=float),
                data=observed[model.config.channel_slices[channel]],
                title=f"{regions[channel].label}, {'pre' if label == 'prefit' else 'post'}-fit",
                xlabel=regions[channel].observable,
            )
            files[f"{label}_{channel}"] = str(path)
    kinds = dict(model.config.modifiers)
    pulled = [i for i, name in enumerate(results.labels) if kinds.get(name) in _PULLED]
    if pulled:
        path = plot_pulls(
            destination / "pulls.png",
            labels=[results.labels[i] for i in pulled],
            values=np.asarray(results.bestfit)[pulled],
            errors=np.asarray(results.uncertainty)[pulled],
        )
        files["pulls"] = str(path)
    return files
