"""The fit configuration: a small YAML describing regions, samples, systematics and data, validated.

Example (``processors/fit.yaml`` holds the AGC's)::

    histograms: histograms.root              # relative to the run's output directory
    path: "hists/{region}/{sample}/{variation}"
    poi: ttbar_norm
    regions:
      - {name: 4j1b, label: "4j1b CR", observable: "$H_T$ [GeV]", range: [110, 550], rebin: 2}
      - {name: 4j2b, label: "4j2b SR"}
    samples:
      - {name: ttbar, label: "ttbar", norm_factor: ttbar_norm}
      - {name: wjets, label: "W+jets"}
    systematics:
      - {name: luminosity, normalization: 0.03}
      - {name: ME_var, samples: [ttbar], up: {sample: ttbar_me_var}}      # one-sided: symmetrized
      - {name: btag_var_0, up: {variation: btag_var_0_up}, down: {variation: btag_var_0_down}}
    data:
      pseudodata: {ttbar_me_var: 0.5, ttbar_ps_var: 0.5, wjets: 1}
      # or: asimov: {ttbar_norm: 1.2}
      # or: observed: data_2016      (a dataset of the run, e.g. is_data: true in the fileset; or a list)

The README's "Fit configuration" section lists every key. ``path`` says where a template lives in the
ROOT file: ``{region}``, ``{sample}`` (a dataset name) and, optionally for outputs without variations,
``{variation}`` (``nominal`` or a variation name) are filled in. A systematic's ``up``/``down`` template
replaces the sample and/or the variation of the nominal one. Every shape systematic becomes a
normalization plus shape modifier (``normsys`` + ``histosys``); a missing ``down`` is the ``up`` mirrored
around the nominal. Every unknown key, missing key and value of the wrong type raises
:class:`~distproc.exceptions.ConfigError` naming the key, the file and the closest valid keys.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distproc.exceptions import ConfigError, format_options

__all__ = (
    "DataConfig",
    "FitConfig",
    "RegionConfig",
    "SampleConfig",
    "SystematicConfig",
    "TemplateRef",
    "load_fit_config",
)

_PLACEHOLDERS = ("{region}", "{sample}")  # {variation} is optional


@dataclass(frozen=True)
class RegionConfig:
    """A region (a channel of the fit): its histogram name, labels and optional range and rebinning."""

    name: str
    label: str
    observable: str = "observable"
    range: tuple[float, float] | None = None
    rebin: int = 1


@dataclass(frozen=True)
class SampleConfig:
    """A simulated sample: the dataset whose histograms model it, and its free normalization, if any."""

    name: str
    label: str
    norm_factor: str | None = None


@dataclass(frozen=True)
class TemplateRef:
    """Where a varied template comes from: another dataset (``sample``) and/or ``variation``."""

    sample: str | None = None
    variation: str | None = None


@dataclass(frozen=True)
class SystematicConfig:
    """A systematic uncertainty: a shape (``up``, optional ``down``) or a ``normalization`` (up, down)."""

    name: str
    up: TemplateRef | None = None
    down: TemplateRef | None = None
    normalization: tuple[float, float] | None = None
    samples: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataConfig:
    """What is fitted: the nominal histograms of datasets of the run (``observed``, e.g. those with
    ``is_data: true`` in the fileset, summed), a weighted sum of nominal datasets (``pseudodata``), or
    Asimov data (``asimov``)."""

    observed: tuple[str, ...] | None = None
    pseudodata: dict[str, float] | None = None
    asimov: dict[str, float] | None = None


@dataclass(frozen=True)
class FitConfig:
    """A validated fit configuration (see the module docstring)."""

    regions: tuple[RegionConfig, ...]
    samples: tuple[SampleConfig, ...]
    systematics: tuple[SystematicConfig, ...]
    data: DataConfig
    poi: str
    histograms: str = "histograms.root"
    path: str = "{region}/{sample}/{variation}"
    measurement: str = "measurement"
    plots: bool = True
    source: str | None = field(default=None, compare=False)

    @property
    def norm_factors(self) -> dict[str, list[str]]:
        """Free normalization factors and the samples they scale."""
        out: dict[str, list[str]] = {}
        for sample in self.samples:
            if sample.norm_factor is not None:
                out.setdefault(sample.norm_factor, []).append(sample.name)
        return out


class _Checker:
    """Validates one YAML document, naming the offending key path and the file in every error."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, message: str, key: str) -> ConfigError:
        return ConfigError(message, key=key, source=self.source)

    def mapping(
        self, value: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            msg = f"{where} must be a mapping with keys {', '.join(allowed)}; got {type(value).__name__}"
            raise self.fail(msg, where)
        for key in value:
            if key not in allowed:
                msg = f"unknown key {key!r} in {where}. {format_options(str(key), allowed, 'keys')}"
                raise self.fail(msg, f"{where}.{key}")
        for key in required:
            if key not in value:
                msg = f"{where} needs the key {key!r}"
                raise self.fail(msg, f"{where}.{key}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            msg = f"{where} must be a non-empty string, got {value!r}"
            raise self.fail(msg, where)
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            msg = f"{where} must be a number, got {value!r}"
            raise self.fail(msg, where)
        return float(value)

    def strings(self, value: Any, where: str, choices: Sequence[str]) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            msg = f"{where} must be a name or a non-empty list of names, got {value!r}"
            raise self.fail(msg, where)
        for item in items:
            if item not in choices:
                hint = format_options(str(item), choices, "names")
                msg = f"{where} names {item!r}, which is not defined. {hint}"
                raise self.fail(msg, where)
        return tuple(items)

    def named_list(self, value: Any, where: str) -> list[Mapping[str, Any]]:
        if not isinstance(value, list) or not value:
            msg = f"{where} must be a non-empty list of mappings with a 'name'"
            raise self.fail(msg, where)
        names = set()
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or "name" not in item:
                msg = f"{where}[{i}] must be a mapping with a 'name', got {item!r}"
                raise self.fail(msg, f"{where}[{i}]")
            if item["name"] in names:
                msg = f"{where} defines {item['name']!r} twice"
                raise self.fail(msg, f"{where}[{i}].name")
            names.add(item["name"])
        return value


_TOP = ("histograms", "path", "poi", "measurement", "regions", "samples", "systematics", "data", "plots")


def _region(check: _Checker, raw: Mapping[str, Any], where: str) -> RegionConfig:
    check.mapping(raw, where, ("name", "label", "observable", "range", "rebin"), ("name",))
    name = check.string(raw["name"], f"{where}.name")
    span = raw.get("range")
    if span is not None:
        ok = isinstance(span, list) and len(span) == 2
        low, high = (check.number(v, f"{where}.range") for v in span) if ok else (0.0, 0.0)
        if not ok or low >= high:
            msg = f"{where}.range must be [low, high] with low < high, got {span!r}"
            raise check.fail(msg, f"{where}.range")
        span = (low, high)
    rebin = raw.get("rebin", 1)
    if isinstance(rebin, bool) or not isinstance(rebin, int) or rebin < 1:
        msg = f"{where}.rebin must be a positive integer, got {rebin!r}"
        raise check.fail(msg, f"{where}.rebin")
    return RegionConfig(
        name=name,
        label=check.string(raw.get("label", name), f"{where}.label"),
        observable=check.string(raw.get("observable", "observable"), f"{where}.observable"),
        range=span,
        rebin=rebin,
    )


def _template(check: _Checker, raw: Any, where: str) -> TemplateRef:
    check.mapping(raw, where, ("sample", "variation"))
    if not raw:
        msg = f"{where} must name a 'sample' and/or a 'variation'"
        raise check.fail(msg, where)
    return TemplateRef(
        sample=check.string(raw["sample"], f"{where}.sample") if "sample" in raw else None,
        variation=check.string(raw["variation"], f"{where}.variation") if "variation" in raw else None,
    )


def _systematic(
    check: _Checker, raw: Mapping[str, Any], where: str, samples: Sequence[str], regions: Sequence[str]
) -> SystematicConfig:
    keys = ("name", "up", "down", "normalization", "samples", "regions")
    check.mapping(raw, where, keys, ("name",))
    name = check.string(raw["name"], f"{where}.name")
    norm = raw.get("normalization")
    if norm is not None:
        if "up" in raw or "down" in raw:
            msg = f"{where} has both 'normalization' and templates ('up'/'down'); give one or the other"
            raise check.fail(msg, f"{where}.normalization")
        if isinstance(norm, list) and len(norm) == 2:
            up, down = (check.number(v, f"{where}.normalization") for v in norm)
        else:
            up = check.number(norm, f"{where}.normalization")
            down = -up
        norm = (up, down)
    elif "up" not in raw:
        msg = f"{where} needs 'up' (a template: {{sample: ...}} or {{variation: ...}}) or 'normalization'"
        raise check.fail(msg, f"{where}.up")
    return SystematicConfig(
        name=name,
        up=_template(check, raw["up"], f"{where}.up") if "up" in raw else None,
        down=_template(check, raw["down"], f"{where}.down") if "down" in raw else None,
        normalization=norm,
        samples=check.strings(raw["samples"], f"{where}.samples", samples) if "samples" in raw else None,
        regions=check.strings(raw["regions"], f"{where}.regions", regions) if "regions" in raw else None,
    )


def _data(check: _Checker, raw: Any, parameters: Sequence[str]) -> DataConfig:
    check.mapping(raw, "data", ("observed", "pseudodata", "asimov"))
    if len(raw) != 1:
        msg = (
            "data must hold exactly one of 'observed' (dataset name or list), 'pseudodata' (dataset: factor) "
            "or 'asimov' (parameter: value)"
        )
        raise check.fail(msg, "data")
    kind, spec = next(iter(raw.items()))
    if kind == "observed":
        names = [spec] if isinstance(spec, str) else spec
        if not isinstance(names, list) or not names:
            msg = f"data.observed must be a dataset name or a non-empty list of names, got {spec!r}"
            raise check.fail(msg, "data.observed")
        return DataConfig(observed=tuple(check.string(n, "data.observed") for n in names))
    if not isinstance(spec, Mapping) or (kind == "pseudodata" and not spec):
        what = "dataset: factor" if kind == "pseudodata" else "parameter: value"
        msg = f"data.{kind} must be a mapping of {what}"
        raise check.fail(msg, f"data.{kind}")
    values = {str(k): check.number(v, f"data.{kind}.{k}") for k, v in spec.items()}
    if kind == "asimov":
        for key in values:
            if key not in parameters:
                msg = (
                    f"data.asimov sets {key!r}, which is not a free normalization factor. "
                    f"{format_options(key, parameters, 'parameters')}"
                )
                raise check.fail(msg, f"data.asimov.{key}")
        return DataConfig(asimov=values)
    return DataConfig(pseudodata=values)


def parse_fit_config(raw: Any, *, source: str | None = None) -> FitConfig:
    """Validate a fit configuration given as a mapping (the parsed YAML).

    Examples
    --------
    >>> cfg = parse_fit_config(
    ...     {
    ...         "poi": "mu",
    ...         "regions": [{"name": "SR"}],
    ...         "samples": [{"name": "signal", "norm_factor": "mu"}, {"name": "background"}],
    ...         "systematics": [{"name": "lumi", "normalization": 0.02}],
    ...         "data": {"asimov": {"mu": 1.0}},
    ...     }
    ... )
    >>> cfg.norm_factors
    {'mu': ['signal']}
    >>> parse_fit_config({"poi": "mu", "region": []})
    Traceback (most recent call last):
    ...
    distproc.exceptions.ConfigError: unknown key 'region' in the fit config. Did you mean 'regions'? ...
    """
    check = _Checker(source)
    check.mapping(raw, "the fit config", _TOP, ("poi", "regions", "samples", "data"))
    regions = tuple(
        _region(check, item, f"regions[{i}]")
        for i, item in enumerate(check.named_list(raw["regions"], "regions"))
    )
    samples = []
    for i, item in enumerate(check.named_list(raw["samples"], "samples")):
        where = f"samples[{i}]"
        check.mapping(item, where, ("name", "label", "norm_factor"), ("name",))
        name = check.string(item["name"], f"{where}.name")
        samples.append(
            SampleConfig(
                name=name,
                label=check.string(item.get("label", name), f"{where}.label"),
                norm_factor=check.string(item["norm_factor"], f"{where}.norm_factor")
                if "norm_factor" in item
                else None,
            )
        )
    sample_names = [s.name for s in samples]
    region_names = [r.name for r in regions]
    raw_systematics = raw.get("systematics") or []
    if raw_systematics:
        check.named_list(raw_systematics, "systematics")
    systematics = tuple(
        _systematic(check, item, f"systematics[{i}]", sample_names, region_names)
        for i, item in enumerate(raw_systematics)
    )
    parameters = sorted({s.norm_factor for s in samples if s.norm_factor})
    poi = check.string(raw["poi"], "poi")
    if poi not in parameters:
        msg = (
            f"poi {poi!r} is not the norm_factor of any sample; give a sample 'norm_factor: {poi}'. "
            f"{format_options(poi, parameters, 'norm factors')}"
        )
        raise check.fail(msg, "poi")
    path = check.string(raw.get("path", FitConfig.path), "path")
    missing = [p for p in _PLACEHOLDERS if p not in path]
    if missing:
        msg = f"path {path!r} must contain {', '.join(_PLACEHOLDERS)}; missing {', '.join(missing)}"
        raise check.fail(msg, "path")
    if "{variation}" not in path:
        for i, syst in enumerate(systematics):
            for side, ref in (("up", syst.up), ("down", syst.down)):
                if ref is not None and ref.variation is not None:
                    msg = (
                        f"systematics[{i}].{side} names a variation, but path {path!r} has no {{variation}} "
                        "placeholder; add it, or give the varied template as a 'sample'"
                    )
                    raise check.fail(msg, f"systematics[{i}].{side}.variation")
    plots = raw.get("plots", True)
    if not isinstance(plots, bool):
        msg = f"plots must be true or false, got {plots!r}"
        raise check.fail(msg, "plots")
    return FitConfig(
        regions=regions,
        samples=tuple(samples),
        systematics=systematics,
        data=_data(check, raw["data"], parameters),
        poi=poi,
        histograms=check.string(raw.get("histograms", FitConfig.histograms), "histograms"),
        path=path,
        measurement=check.string(raw.get("measurement", FitConfig.measurement), "measurement"),
        plots=plots,
        source=source,
    )


def load_fit_config(path: str | os.PathLike[str]) -> FitConfig:
    """Read and validate a fit configuration YAML (see the module docstring).

    Raises
    ------
    ConfigError
        The file is unreadable or not YAML, or a key is unknown, missing or of the wrong type; the
        message names the key (e.g. ``systematics[2].up``) and the file.

    Examples
    --------
    >>> from distproc.fit import load_fit_config
    >>> cfg = load_fit_config("processors/fit.yaml")  # doctest: +SKIP
    >>> cfg.poi  # doctest: +SKIP
    'ttbar_norm'
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        msg = f"cannot read the fit config: {err.strerror or err}"
        raise ConfigError(msg, source=str(path)) from err
    except yaml.YAMLError as err:
        msg = f"the fit config is not valid YAML: {err}"
        raise ConfigError(msg, source=str(path)) from err
    return parse_fit_config(raw, source=str(path))
