"""The run engine: from a fileset to one reduced accumulator on any Dask cluster.

============================  ======================================================================
:mod:`~.run`                  :func:`run`: planning, submission, progress, the report
:mod:`~.graph`                the task graph (a task per partition, a tree reduction) and its priorities
:mod:`~.submit`               sending a graph in two parts with its task priorities
:mod:`~.worker`               the worker side: one partition read and processed, partial outputs merged
:mod:`~.merge`                adding outputs; what cannot be added is named (output key, partitions)
:mod:`~.dask_mode`            ``mode="dask"``: a coffea dask-awkward processor evaluated per partition
:mod:`~.state`                per-run worker state: processor, open files, cached schemas/corrections/
                              ONNX sessions, bounded and keyed by the run
============================  ======================================================================

Private APIs of dask/distributed are used only through :mod:`distproc._compat`.
"""

from __future__ import annotations

from distproc.engine.graph import build_graph
from distproc.engine.run import run
from distproc.engine.submit import submit_graph
from distproc.engine.worker import process_partition

__all__ = ("build_graph", "process_partition", "run", "submit_graph")
