"""From ``histograms.root`` to cabinetry: the cabinetry configuration and its template histograms.

cabinetry builds the workspace (``normsys`` + ``histosys`` per shape systematic, symmetrization of
one-sided variations, ``staterror`` from the templates' uncertainties, normalization factors); this
module only translates the distproc fit configuration into cabinetry's, reads each template cabinetry
asks for (``cabinetry.route.apply_to_all_templates``) from the ROOT file, applies the region's range and
rebinning, builds the pseudo-data, and stores the histograms where cabinetry reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distproc.exceptions import FitError, HistogramNotFoundError, format_options
from distproc.fit.config import FitConfig, RegionConfig

__all__ = ("Template", "TemplateReader", "cabinetry_config")

DATA_SAMPLE = "data"


@dataclass
class Template:
    """One histogram's bin edges, contents and variances (flow bins dropped)."""

    edges: np.ndarray
    values: np.ndarray
    variances: np.ndarray

    def __add__(self, other: Template) -> Template:
        return Template(self.edges, self.values + other.values, self.variances + other.variances)

    def scaled(self, factor: float) -> Template:
        """The template times *factor* (variances times its square)."""
        return Template(self.edges, self.values * factor, self.variances * factor**2)

    def restricted(self, region: RegionConfig) -> Template:
        """The template within the region's ``range``, with every ``rebin`` bins merged."""
        edges, values, variances = self.edges, self.values, self.variances
        if region.range is not None:
            low, high = region.range
            lo, hi = np.searchsorted(edges, low), np.searchsorted(edges, high)
            if lo >= len(edges) or hi >= len(edges) or edges[lo] != low or edges[hi] != high:
                msg = (
                    f"region {region.name!r}: range {list(region.range)} does not fall on bin edges of its "
                    f"histograms ({edges[0]:g} to {edges[-1]:g} in {len(edges) - 1} bins)"
                )
                raise FitError(msg)
            edges, values, variances = edges[lo : hi + 1], values[lo:hi], variances[lo:hi]
        if region.rebin > 1:
            if len(values) % region.rebin:
                msg = (
                    f"region {region.name!r}: rebin {region.rebin} does not divide its {len(values)} bins; "
                    "choose a divisor or another range"
                )
                raise FitError(msg)
            k = region.rebin
            edges = edges[::k]
            values, variances = values.reshape(-1, k).sum(axis=1), variances.reshape(-1, k).sum(axis=1)
        return Template(edges, values, variances)


class TemplateReader:
    """Reads templates ``config.path`` names from a ROOT file written by :func:`distproc.save`.

    Examples
    --------
    >>> from distproc.fit import load_fit_config
    >>> config = load_fit_config("processors/fit.yaml")  # doctest: +SKIP
    >>> reader = TemplateReader("out/histograms.root", config)  # doctest: +SKIP
    >>> reader.read("4j1b", "ttbar", "nominal").values.sum()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], config: FitConfig) -> None:
        import uproot

        self.path = str(path)
        self.config = config
        try:
            self._file = uproot.open(self.path)
        except FileNotFoundError as err:
            msg = (
                "histogram file not found; run the analysis with `distproc run CONFIG --output DIR` first "
                "(it writes DIR/histograms.root)"
            )
            raise HistogramNotFoundError(msg, histogram="(the file)", file=self.path) from err
        self._keys = set(self._file.keys(recursive=True, cycle=False, filter_classname="TH*"))
        self._cache: dict[str, Template] = {}

    def close(self) -> None:
        """Close the ROOT file."""
        self._file.close()

    def name(self, region: str, sample: str, variation: str) -> str:
        """The histogram's path in the file."""
        return self.config.path.format(region=region, sample=sample, variation=variation)

    def read(self, region: str, sample: str, variation: str = "nominal") -> Template:
        """The template of *sample* (a dataset) in *region* for *variation*, before range and rebinning."""
        name = self.name(region, sample, variation)
        if name not in self._cache:
            if name not in self._keys:
                candidates = [k for k in self._keys if not k.startswith("_")]
                msg = (
                    f"the fit needs a histogram that {self.path} does not have (sample {sample!r}, region "
                    f"{region!r}, variation {variation!r}); check the fit config's 'path' and names. "
                    f"{format_options(name, candidates, 'histograms')}"
                )
                raise HistogramNotFoundError(msg, histogram=name, file=self.path)
            h = self._file[name]
            values, edges = h.to_numpy(flow=False)
            variances = h.variances(flow=False)
            self._cache[name] = Template(np.asarray(edges, dtype=float), values.astype(float), variances)
        return self._cache[name]

    def region_template(self, region: RegionConfig, sample: str, variation: str = "nominal") -> Template:
        """:meth:`read` followed by the region's range and rebinning."""
        return self.read(region.name, sample, variation).restricted(region)

    def data(self, region: RegionConfig) -> Template:
        """What the config's ``data`` fits in *region*: the sum of the ``observed`` datasets, the weighted
        sum of ``pseudodata`` datasets, or (Asimov data replaces it later) the sum of the samples."""
        data = self.config.data
        if data.observed is not None:
            recipe = dict.fromkeys(data.observed, 1.0)
        elif data.pseudodata is not None:
            recipe = data.pseudodata
        else:
            recipe = dict.fromkeys((s.name for s in self.config.samples), 1.0)
        parts = [self.region_template(region, dataset).scaled(f) for dataset, f in recipe.items()]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total


def cabinetry_config(config: FitConfig, histogram_file: str, histogram_folder: str, present: dict) -> dict:
    """The cabinetry configuration for *config*.

    *present* maps ``(region, sample)`` to whether the sample has any yield there; samples without
    yield in a region are left out of it (a normalization uncertainty on nothing is undefined).

    Examples
    --------
    >>> from distproc.fit import parse_fit_config
    >>> cfg = parse_fit_config(
    ...     {
    ...         "poi": "mu",
    ...         "regions": [{"name": "SR"}],
    ...         "samples": [{"name": "sig", "norm_factor": "mu"}],
    ...         "systematics": [{"name": "jes", "up": {"variation": "jes_up"}}],
    ...         "data": {"asimov": {"mu": 1.0}},
    ...     }
    ... )
    >>> cab = cabinetry_config(cfg, "h.root", "/tmp/templates", {("SR", "sig"): True})
    >>> jes = cab["Systematics"][0]
    >>> jes["Type"], jes["Up"], jes["Down"]
    ('NormPlusShape', {'VariationPath': 'jes_up'}, {'Symmetrize': True})
    >>> cab["General"]["InputPath"]
    'h.root:{RegionPath}/{SamplePath}/{VariationPath}'
    """
    regions = [{"Name": r.name, "RegionPath": r.name} for r in config.regions]
    samples: list[dict[str, Any]] = [{"Name": DATA_SAMPLE, "SamplePath": DATA_SAMPLE, "Data": True}]
    for sample in config.samples:
        entry: dict[str, Any] = {"Name": sample.name, "SamplePath": sample.name}
        inside = [r.name for r in config.regions if present[r.name, sample.name]]
        if len(inside) < len(config.regions):
            entry["Regions"] = inside
        samples.append(entry)
    systematics = []
    for syst in config.systematics:
        entry = {"Name": syst.name}
        if syst.normalization is not None:
            up, down = syst.normalization
            entry |= {"Type": "Normalization", "Up": {"Normalization": up}, "Down": {"Normalization": down}}
        else:
            entry["Type"] = "NormPlusShape"
            entry["Up"] = _template_setting(syst.up)
            entry["Down"] = _template_setting(syst.down) if syst.down is not None else {"Symmetrize": True}
        if syst.samples is not None:
            entry["Samples"] = list(syst.samples)
        if syst.regions is not None:
            entry["Regions"] = list(syst.regions)
        systematics.append(entry)
    norm_factors = [
        {"Name": name, "Samples": names, "Nominal": 1.0, "Bounds": [0.0, 10.0]}
        for name, names in config.norm_factors.items()
    ]
    return {
        "General": {
            "Measurement": config.measurement,
            "POI": config.poi,
            "InputPath": f"{histogram_file}:{config.path}".replace("{region}", "{RegionPath}")
            .replace("{sample}", "{SamplePath}")
            .replace("{variation}", "{VariationPath}"),
            "HistogramFolder": str(histogram_folder),
            "VariationPath": "nominal",
        },
        "Regions": regions,
        "Samples": samples,
        "NormFactors": norm_factors,
        "Systematics": systematics,
    }


def _template_setting(ref: Any) -> dict[str, Any]:
    setting = {}
    if ref.sample is not None:
        setting["SamplePath"] = ref.sample
    if ref.variation is not None:
        setting["VariationPath"] = ref.variation
    return setting


def write_templates(config: FitConfig, reader: TemplateReader, cabinetry_cfg: dict) -> None:
    """Read every template cabinetry needs and store it in cabinetry's histogram folder."""
    import cabinetry

    folder = Path(cabinetry_cfg["General"]["HistogramFolder"])
    folder.mkdir(parents=True, exist_ok=True)
    regions = {r.name: r for r in config.regions}

    def collect(region: dict, sample: dict, systematic: dict, template: str | None) -> None:
        region_cfg = regions[region["Name"]]
        if sample.get("Data"):
            histogram = reader.data(region_cfg)
        else:
            dataset, variation = sample["SamplePath"], "nominal"
            if template is not None:
                setting = systematic[template]
                dataset = setting.get("SamplePath", dataset)
                variation = setting.get("VariationPath", variation)
            histogram = reader.region_template(region_cfg, dataset, variation)
        stdev = np.sqrt(np.maximum(histogram.variances, 0.0))
        out = cabinetry.histo.Histogram.from_arrays(histogram.edges, histogram.values, stdev)
        out.save(folder / cabinetry.histo.name(region, sample, systematic, template=template))

    cabinetry.route.apply_to_all_templates(cabinetry_cfg, collect)
