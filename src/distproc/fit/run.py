"""``fit(OUTPUT_DIR, CONFIG)``: workspace, maximum-likelihood fit, ``fit.json`` and plots."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import sys
import tempfile
import warnings
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

#: Above this condition number of the correlation matrix the covariance is reported ``ill-conditioned``:
#: Hesse's finite-difference second derivatives carry relative errors of ~1e-4, which the inverse
#: amplifies by the condition number (the AGC fit at 3378 /pb with 4,000 simulated events per process,
#: condition ~2e5, gets uncertainties off by up to 10x that move with the last bit of the input).
ILL_CONDITIONED = 1e4

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
        ``"pseudodata"``, ``"asimov"`` or ``"observed"``.
    valid
        Whether Minuit's minimum is valid (Migrad converged: the estimated distance to the minimum is below
        its goal, and Hesse succeeded). An invalid fit's values are where Minuit stopped, not a result.
    minimizer
        Minuit's diagnostics: ``edm`` (estimated distance to the minimum in units of -2 log L), ``edm_goal``
        (the convergence criterion, 0.002 x tolerance 0.1 x errordef 1), ``calls``, ``condition`` (of the
        correlation matrix) and ``covariance`` (``"accurate"``, ``"ill-conditioned"`` (condition above
        :data:`ILL_CONDITIONED`), ``"forced positive-definite"``, ``"approximate"`` or ``"failed"``), and
        for an invalid fit ``reason``.
    files
        What was written: ``workspace``, ``fit``, ``log`` (Minuit's, pyhf's and cabinetry's output) and the
        plots, by name.
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
    valid: bool
    minimizer: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``fit.json``."""
        return {
            "valid": self.valid,
            "poi": {"name": self.poi, "value": self.value, "uncertainty": self.uncertainty},
            "parameters": {k: {"value": v, "uncertainty": u} for k, (v, u) in self.parameters.items()},
            "correlation": self.correlation,
            "twice_nll": self.twice_nll,
            "data": self.data,
            "minimizer": self.minimizer,
            "files": self.files,
            "notes": self.notes,
        }


def _config(config: Any) -> FitConfig:
    if isinstance(config, FitConfig):
        return config
    if isinstance(config, Mapping):
        return parse_fit_config(config)
    return load_fit_config(config)


def _json_safe(content: Any) -> Any:
    """*content* with every NaN or infinity (an invalid fit's) as None: fit.json stays standard JSON."""
    if isinstance(content, float):
        return content if np.isfinite(content) else None
    if isinstance(content, Mapping):
        return {k: _json_safe(v) for k, v in content.items()}
    if isinstance(content, list | tuple):
        return [_json_safe(v) for v in content]
    return content


def _atomic_json(path: Path, content: Any) -> None:
    from distproc._paths import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(content), indent=1, allow_nan=False) + "\n")


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
def _chatter_to(log: Path) -> Iterator[list[str]]:
    """Send what the fit's libraries print to *log*; yield the list that collects cabinetry's warnings.

    Minuit (C++) writes to the process's file descriptors 1 and 2, so these point at the log meanwhile;
    pyhf's and cabinetry's log records and Python warnings (e.g. numpy's on a NaN likelihood) go there too.
    """
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in ("pyhf", "cabinetry")]
    saved_loggers = [(logger.level, logger.propagate) for logger in loggers]
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "w") as stream, warnings.catch_warnings():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for logger in loggers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        loggers[1].addHandler(collect)
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: stream.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
        try:
            for fd in saved_fds:
                os.dup2(stream.fileno(), fd)
            yield collect.messages
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio buffers (Minuit's std::cout) into the log
            stream.flush()
            for fd, copy in saved_fds.items():
                os.dup2(copy, fd)
                os.close(copy)
            loggers[1].removeHandler(collect)
            for logger, (level, propagate) in zip(loggers, saved_loggers, strict=True):
                logger.removeHandler(handler)
                logger.setLevel(level)
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
    cabinetry, fits the observed data, pseudo-data or Asimov data by maximum likelihood (Minuit) and
    writes into *out* (default *output_dir*):

    ``workspace.json``
        The pyhf workspace.
    ``fit.json``
        ``valid``, best-fit values and uncertainties of every parameter, the correlation matrix,
        -2 log L and Minuit's diagnostics (:class:`FitSummary`).
    ``fit.log``
        What Minuit, pyhf and cabinetry print (nothing of it reaches stdout).
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
        A fit that did not converge is returned with ``valid`` false (and no plots), not raised.

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
    log = destination / "fit.log"
    with _chatter_to(log) as notes:
        spec, edges = _build(histograms, cfg)
        workspace_path = destination / "workspace.json"
        _atomic_json(workspace_path, spec)
        model, data = cabinetry.model_utils.model_and_data(spec)
        kind = "observed" if cfg.data.observed is not None else "pseudodata"
        if cfg.data.asimov is not None:
            kind = "asimov"
            pars = np.asarray(model.config.suggested_init(), dtype=float)
            for name, value in cfg.data.asimov.items():
                pars[model.config.par_slice(name)] = value
            data = np.asarray(model.expected_data(pars), dtype=float).tolist()
        results, minimizer = _minimize(model, data)
        valid = "reason" not in minimizer
        files = {"workspace": str(workspace_path), "log": str(log)}
        if valid and (cfg.plots if plots is None else plots):
            files |= _plots(destination, cfg, model, data, results, edges)

    labels = list(results.labels)
    poi_index = labels.index(cfg.poi)
    corr = np.asarray(results.corr_mat, dtype=float)
    summary = FitSummary(
        poi=cfg.poi,
        value=float(results.bestfit[poi_index]),
        uncertainty=float(results.uncertainty[poi_index]),
        parameters={
            name: (float(v), float(u))
            for name, v, u in zip(labels, results.bestfit, results.uncertainty, strict=True)
        },
        correlation={"labels": labels, "matrix": corr.tolist() if np.isfinite(corr).all() else None},
        twice_nll=float(results.best_twice_nll),
        data=kind,
        valid=valid,
        minimizer=minimizer,
        files=files,
        notes=notes,
    )
    fit_path = destination / "fit.json"
    summary.files["fit"] = str(fit_path)
    _atomic_json(fit_path, summary.to_dict())
    return summary


def _minimize(model: Any, data: list[float]) -> tuple[Any, dict[str, Any]]:
    """Minimise -2 log L with Minuit through pyhf (strategy 1, tolerance 0.1, errordef 1), then Hesse.

    Returns cabinetry's ``FitResults`` (for the plots) and Minuit's diagnostics; an invalid minimum (pyhf
    raises ``FailedMinimization``, or Hesse fails afterwards) gives the values where Minuit stopped and a
    ``reason``.
    """
    import cabinetry
    import pyhf

    tensorlib, optimizer = pyhf.get_backend()
    pyhf.set_backend(tensorlib, pyhf.optimize.minuit_optimizer(verbose=1))  # Minuit's warnings into the log
    try:
        result = pyhf.infer.mle.fit(data, model, return_result_obj=True)[1]
    except pyhf.exceptions.FailedMinimization as err:
        result = err.result
    finally:
        pyhf.set_backend(tensorlib, optimizer)
    minuit = result.minuit
    fmin = minuit.fmin
    logging.getLogger("pyhf").info("Minuit's minimum:\n%s", fmin)
    covariance = minuit.covariance
    n = len(minuit.values)
    diagnostics: dict[str, Any] = {
        "edm": float(fmin.edm),
        "edm_goal": float(fmin.edm_goal),
        "calls": int(fmin.nfcn),
        "covariance": _covariance_status(fmin),
    }
    free = ~np.asarray(minuit.fixed, dtype=bool)
    if covariance is not None and fmin.is_valid:
        correlation = np.asarray(covariance.correlation(), dtype=float)[np.ix_(free, free)]
        diagnostics["condition"] = float(np.linalg.cond(correlation))
        if diagnostics["condition"] > ILL_CONDITIONED and diagnostics["covariance"] == "accurate":
            diagnostics["covariance"] = "ill-conditioned"
    reasons = [
        text
        for flag, text in (
            (fmin.has_reached_call_limit, "call limit reached"),
            (fmin.is_above_max_edm, f"distance to minimum {fmin.edm:.3g} above {fmin.edm_goal:.3g}"),
            (fmin.hesse_failed, "Hesse failed"),
            (not np.isfinite(fmin.fval), f"-2 log L is {fmin.fval}"),
        )
        if flag
    ]
    if not minuit.valid:
        diagnostics["reason"] = "; ".join(reasons) or "Minuit's minimum is invalid"
    results = cabinetry.fit.FitResults(
        np.asarray(minuit.values, dtype=float),
        np.where(minuit.fixed, 0.0, np.asarray(minuit.errors, dtype=float)),
        list(model.config.par_names),
        np.full((n, n), np.nan) if covariance is None else np.asarray(covariance.correlation(), dtype=float),
        float(fmin.fval),
    )
    return results, diagnostics


def _covariance_status(fmin: Any) -> str:
    if fmin.hesse_failed:
        return "failed"
    if fmin.has_made_posdef_covar:
        return "forced positive-definite"
    return "accurate" if fmin.has_accurate_covar else "approximate"


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
