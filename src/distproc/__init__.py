"""distproc: run Coffea-style processors over dask-awkward partitions of ROOT files on any Dask cluster.

Examples
--------
>>> import distproc
>>> result = distproc.run(MyProcessor(), {"ttbar": ["ttbar_*.root"]}, workers=2)  # doctest: +SKIP
>>> distproc.save(result, "out")  # doctest: +SKIP
"""

from __future__ import annotations

from distproc.config import RunConfig, load_config
from distproc.engine import RunResult, run
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
from distproc.io import load, save
from distproc.processor import Processor, load_processor
from distproc.report import RunReport

__version__ = "0.1.0"

__all__ = (
    "ClusterError",
    "ConfigError",
    "DistprocError",
    "FilesetError",
    "InferenceError",
    "PartitionError",
    "Processor",
    "ProcessorLoadError",
    "ReadError",
    "RunConfig",
    "RunReport",
    "RunResult",
    "SystematicsError",
    "__version__",
    "load",
    "load_config",
    "load_processor",
    "run",
    "save",
)


def __dir__() -> tuple[str, ...]:
    return __all__
