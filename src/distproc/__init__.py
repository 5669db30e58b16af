"""distproc: run Coffea-style processors over dask-awkward partitions of ROOT files on any Dask cluster.

Examples
--------
>>> import distproc
>>> result = distproc.run(MyProcessor(), {"ttbar": ["ttbar_*.root"]}, workers=2)  # doctest: +SKIP
>>> distproc.save(result, "out")  # doctest: +SKIP
"""

from __future__ import annotations

from distproc.config import RunConfig, load_config
from distproc.engine import run
from distproc.exceptions import (
    ClusterError,
    ConfigError,
    DistprocError,
    FilesetError,
    InferenceError,
    PartitionError,
    ProcessorLoadError,
    ReadError,
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
