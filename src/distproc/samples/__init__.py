"""Synthetic NanoAOD-like samples: the AGC's nine inputs plus Drell-Yan, written as ROOT TTrees.

:func:`make_sample` writes ``<process>_<i>.root`` files holding a TTree ``Events`` whose branches carry
NanoAOD's names and types (``nJet``, ``Jet_pt``, ``Electron_cutBased``, ``MET_pt``, ...), so coffea's
``NanoAODSchema`` builds ``events.Jet``, ``events.Electron``, ``events.Muon`` and ``events.MET`` from them.
``distproc make-sample`` is the same from the command line.

* :mod:`~distproc.samples.processes` - what a sample holds: the processes (:data:`PROCESSES`, one
  :class:`ProcessSpec` each) and the tree's branches (:data:`BRANCHES`, :data:`TRUTH_ROLES`);
* :mod:`~distproc.samples.generator` - the physics: events of a process, block after block, from a seed;
* :mod:`~distproc.samples.writer` - the files: ROOT files, ``metadata.json`` and a fileset YAML.

Examples
--------
>>> import tempfile
>>> from distproc.samples import make_sample, sample_fileset
>>> with tempfile.TemporaryDirectory() as tmp:
...     fileset = sample_fileset([make_sample("ttbar", 200, tmp, seed=1)])
>>> fileset["ttbar"]["metadata"]["nevents"]
200
"""

from __future__ import annotations

from distproc.samples.processes import AGC_PROCESSES, BRANCHES, PROCESSES, TRUTH_ROLES, ProcessSpec
from distproc.samples.writer import (
    METADATA_NAME,
    TREENAME,
    SampleInfo,
    load_samples,
    make_agc_samples,
    make_sample,
    sample_fileset,
    write_fileset,
)

__all__ = (
    "AGC_PROCESSES",
    "BRANCHES",
    "METADATA_NAME",
    "PROCESSES",
    "TREENAME",
    "TRUTH_ROLES",
    "ProcessSpec",
    "SampleInfo",
    "load_samples",
    "make_agc_samples",
    "make_sample",
    "sample_fileset",
    "write_fileset",
)


def __dir__() -> tuple[str, ...]:
    return __all__
