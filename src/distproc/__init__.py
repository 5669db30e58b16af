"""distproc: run Coffea-style processors over partitions of ROOT files on any Dask cluster.

Two modes. In the default partition mode, ``process(events)`` receives one partition (an entry range of
one file) as coffea NanoEvents, concrete awkward arrays read lazily, and returns an addable accumulator;
the outputs are added on the workers, as coffea's ``processor.Runner`` does. In dask mode
(``mode="dask"``), an unchanged coffea dask-awkward processor (``process`` receives a
``dask_awkward.Array`` and returns ``hist.dask`` histograms and ``dask_awkward`` results) runs over the
same partitions, and the output is what ``coffea.dataset_tools.apply_to_fileset`` + ``dask.compute``
give, ``{dataset: output}``. Use the partition mode for new code, the dask mode for processors written
for coffea's dask path.

Examples
--------
>>> import distproc
>>> result = distproc.run(MyProcessor(), {"ttbar": ["ttbar_*.root"]}, workers=2)  # doctest: +SKIP
>>> distproc.save(result, "out")  # doctest: +SKIP

A coffea dask-mode processor, unchanged:

>>> import dask_awkward as dak, hist.dask as hda
>>> def muon_pt(events):
...     h = hda.Hist.new.Reg(20, 0, 200, name="pt").Double()
...     h.fill(pt=dak.flatten(events.Muon.pt))
...     return {"pt": h, "muons": dak.sum(dak.num(events.Muon, axis=1))}
>>> result = distproc.run(muon_pt, {"dy": ["nano_dy.root"]}, mode="dask")  # doctest: +SKIP
>>> result.output["dy"]["muons"]  # doctest: +SKIP
"""

from __future__ import annotations

from distproc.config import RunConfig, load_config
from distproc.engine import run
from distproc.exceptions import (
    ClusterError,
    ConfigError,
    DaskModeError,
    DistprocError,
    FilesetError,
    InferenceError,
    PartitionError,
    ProcessorLoadError,
    ReadError,
    RunStopped,
    SystematicsError,
)
from distproc.inference import OnnxModel
from distproc.io import load, save
from distproc.processor import Processor, load_processor
from distproc.report import RunReport, RunResult
from distproc.systematics import (
    BinnedLookup,
    Correction,
    Scale,
    ShapeVariations,
    Smear,
    Varied,
    fill_varied,
    weight_variations,
)

__version__ = "0.1.0"

__all__ = (
    "BinnedLookup",
    "ClusterError",
    "ConfigError",
    "Correction",
    "DaskModeError",
    "DistprocError",
    "FilesetError",
    "InferenceError",
    "OnnxModel",
    "PartitionError",
    "Processor",
    "ProcessorLoadError",
    "ReadError",
    "RunConfig",
    "RunReport",
    "RunResult",
    "RunStopped",
    "Scale",
    "ShapeVariations",
    "Smear",
    "SystematicsError",
    "Varied",
    "__version__",
    "fill_varied",
    "load",
    "load_config",
    "load_processor",
    "run",
    "save",
    "weight_variations",
)


def __dir__() -> tuple[str, ...]:
    return __all__
