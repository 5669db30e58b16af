"""Writing synthetic samples: ROOT files, their ``metadata.json`` and a fileset YAML.

:func:`make_sample` writes ``<process>_<i>.root`` files holding a TTree ``Events`` (the branches of
:data:`~distproc.samples.processes.BRANCHES`, events from :mod:`distproc.samples.generator`) and records
them in the directory's ``metadata.json``; :func:`load_samples` reads that back, :func:`sample_fileset`
and :func:`write_fileset` turn samples into a coffea fileset, :func:`make_agc_samples` writes the AGC's
nine inputs at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import numbers
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from distproc._paths import atomic_write
from distproc.exceptions import ConfigError, format_options
from distproc.samples.generator import event_blocks
from distproc.samples.processes import AGC_PROCESSES, BRANCHES, PROCESSES

__all__ = (
    "METADATA_NAME",
    "TREENAME",
    "SampleInfo",
    "load_samples",
    "make_agc_samples",
    "make_sample",
    "sample_fileset",
    "write_fileset",
)

TREENAME = "Events"
METADATA_NAME = "metadata.json"
_METADATA_FORMAT = "distproc-samples-1"
# name: (uproot class, default level, highest level). ZSTD level 1 rather than ~5: on one core, level 5
# makes writing a ttbar sample 2.2x slower for files only 10% smaller (and decompression is as fast).
_COMPRESSIONS: dict[str, tuple[type[uproot.compression.Compression], int, int]] = {
    "zstd": (uproot.ZSTD, 1, 22),
    "lz4": (uproot.LZ4, 4, 12),
}


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`make_sample` wrote: the files of one process and the numbers to normalize it.

    Attributes
    ----------
    process
        The process name, a key of :data:`PROCESSES`.
    files
        Absolute paths of the ROOT files, in event order.
    events
        Number of events in all files together.
    sum_genweight
        Sum of ``genWeight`` over all events (the normalization of NLO samples with negative weights).
    xsec_pb
        Cross section in pb.
    treename
        Name of the TTree in every file.
    seed, compression, compression_level
        How the sample was generated.
    """

    process: str
    files: list[str]
    events: int
    sum_genweight: float
    xsec_pb: float
    treename: str = TREENAME
    seed: int = 0
    compression: str = "zstd"
    compression_level: int = 1


def _branch_types() -> dict[str, Any]:
    """``mktree`` branch types: dtypes for flat branches, lists of records for collections."""
    types: dict[str, Any] = {}
    for name, spec in BRANCHES.items():
        if isinstance(spec, dict):
            fields = [ak.types.NumpyType(dtype) for dtype in spec.values()]
            types[name] = ak.types.ListType(ak.types.RecordType(fields, list(spec)))
        else:
            types[name] = np.dtype(spec)
    return types


def _write_file(
    path: Path, blocks: Iterator[dict[str, Any]], pending: list[Any], events: int, compression: Any
) -> float:
    """Write *events* events to *path*, from *pending* then *blocks*; return their sum of ``genWeight``.

    ``pending`` is ``[block, position]``, updated so that the next file continues where this one stops.
    The file is written under a temporary name and renamed when complete.
    """
    sum_w = 0.0
    with atomic_write(path) as tmp, uproot.recreate(tmp, compression=compression) as file:
        tree = file.mktree(TREENAME, _branch_types())
        remaining = events
        while remaining:
            if pending[0] is None or pending[1] == len(pending[0]["event"]):
                pending[:] = [next(blocks), 0]
            block, start = pending
            stop = min(start + remaining, len(block["event"]))
            chunk = (
                block
                if (start, stop) == (0, len(block["event"]))
                else {name: array[start:stop] for name, array in block.items()}
            )
            tree.extend(chunk)
            sum_w += float(np.sum(chunk["genWeight"], dtype=np.float64))
            remaining -= stop - start
            pending[1] = stop
    return sum_w


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on *directory* (POSIX ``flock``; no lock where that is unavailable)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_json_atomic(path: Path, content: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _read_metadata(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": _METADATA_FORMAT, "samples": {}}
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        msg = f"cannot read sample metadata: {err}"
        raise ConfigError(msg, source=str(path)) from err
    if not isinstance(content, dict) or content.get("format") != _METADATA_FORMAT:
        msg = (
            f"not a distproc sample metadata file (expected 'format': {_METADATA_FORMAT!r}); "
            "write samples to another directory or delete the file"
        )
        raise ConfigError(
            msg,
            source=str(path),
        )
    return content


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        msg = f"{key} must be a positive integer, got {value!r}"
        raise ConfigError(msg, key=key)
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# Public API


def make_sample(
    process: str,
    events: int,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    compression: str = "zstd",
    events_per_file: int | None = None,
    compression_level: int | None = None,
) -> SampleInfo:
    """Write a synthetic NanoAOD-like sample of *process* as ROOT files in directory *out*.

    The files are ``<out>/<process>_<i>.root``, each with a TTree ``Events`` holding the branches of
    :data:`BRANCHES`. ``<out>/metadata.json`` gets (or updates) this process's entry, so several
    processes can share a directory: :func:`load_samples` reads it back.

    Parameters
    ----------
    process
        A key of :data:`PROCESSES`: ``ttbar``, its variations ``ttbar_scaledown``, ``ttbar_scaleup``,
        ``ttbar_me_var``, ``ttbar_ps_var``, ``single_top_s_chan``, ``single_top_t_chan``,
        ``single_top_tW``, ``wjets`` or ``dy``.
    events
        Number of events (> 0).
    out
        Output directory, created if needed. Existing files of the same names are replaced.
    seed
        Random seed (>= 0). The same seed and process give identical events, whatever the file split.
    compression
        ``"zstd"`` (default) or ``"lz4"``.
    events_per_file
        Events per file; ``None`` writes a single file.
    compression_level
        Compression level; ``None`` takes the algorithm's default (ZSTD 1, LZ4 4).

    Returns
    -------
    SampleInfo
        The files written (absolute paths), the number of events, the sum of ``genWeight`` and the cross
        section in pb.

    Raises
    ------
    ConfigError
        For an unknown process or compression, or a non-positive event count, file size or level.

    Examples
    --------
    >>> import tempfile
    >>> import uproot
    >>> from distproc.samples import make_sample
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = make_sample("ttbar", 2500, tmp, seed=1, events_per_file=1000)
    ...     with uproot.open(info.files[0]) as file:
    ...         tree = file[info.treename]
    ...         print(tree.num_entries, tree["nJet"].typename, tree["Jet_pt"].typename)
    1000 int32_t float[]
    >>> info.process, info.events, len(info.files)
    ('ttbar', 2500, 3)
    """
    if not isinstance(process, str) or process not in PROCESSES:
        msg = f"unknown process {process!r}. {format_options(str(process), PROCESSES, 'processes')}"
        raise ConfigError(
            msg,
            key="process",
        )
    events = _positive_int(events, "events")
    per_file = events if events_per_file is None else _positive_int(events_per_file, "events_per_file")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}"
        raise ConfigError(msg, key="seed")
    name = compression.lower() if isinstance(compression, str) else compression
    if name not in _COMPRESSIONS:
        msg = (
            f"unknown compression {compression!r}. "
            f"{format_options(str(compression), _COMPRESSIONS, 'compressions')}"
        )
        raise ConfigError(
            msg,
            key="compression",
        )
    cls, default_level, max_level = _COMPRESSIONS[name]
    level = (
        default_level if compression_level is None else _positive_int(compression_level, "compression_level")
    )
    if level > max_level:
        msg = f"compression_level for {name} must be between 1 and {max_level}, got {level}"
        raise ConfigError(
            msg,
            key="compression_level",
        )

    spec = PROCESSES[process]
    directory = Path(out).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    metadata_path = directory / METADATA_NAME
    metadata = _read_metadata(metadata_path)  # fail before the long part, not after

    blocks = event_blocks(spec, process, int(seed), events)
    pending: list[Any] = [None, 0]
    files: list[str] = []
    sum_w = 0.0
    for i, first in enumerate(range(0, events, per_file)):
        path = directory / f"{process}_{i}.root"
        sum_w += _write_file(path, blocks, pending, min(per_file, events - first), cls(level))
        files.append(str(path))

    info = SampleInfo(
        process=process,
        files=files,
        events=events,
        sum_genweight=sum_w,
        xsec_pb=spec.xsec_pb,
        seed=int(seed),
        compression=name,
        compression_level=level,
    )
    entry = dataclasses.asdict(info)
    entry["files"] = [Path(f).name for f in files]
    with _locked(directory):  # other processes may be writing their samples to the same directory
        metadata = _read_metadata(metadata_path)
        previous = metadata["samples"].get(process, {}).get("files", [])
        metadata["samples"][process] = entry
        _write_json_atomic(metadata_path, metadata)
    # Files of an earlier, larger sample of this process would otherwise linger (and match a glob).
    own = re.compile(rf"{re.escape(process)}_\d+\.root")
    for name in set(previous) - set(entry["files"]):
        if own.fullmatch(name):
            (directory / name).unlink(missing_ok=True)
    return info


def load_samples(directory: str | os.PathLike[str]) -> dict[str, SampleInfo]:
    """The samples :func:`make_sample` wrote to *directory*, by process (from its ``metadata.json``).

    Examples
    --------
    >>> import tempfile
    >>> from distproc.samples import load_samples, make_sample
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = make_sample("wjets", 100, tmp)
    ...     load_samples(tmp)["wjets"] == info
    True
    """
    directory = Path(directory).resolve()
    path = directory / METADATA_NAME
    if not path.exists():
        msg = f"no {METADATA_NAME} in {directory}: generate samples there with make_sample first"
        raise ConfigError(msg)
    samples = {}
    for process, entry in _read_metadata(path)["samples"].items():
        fields = dict(entry)
        fields["files"] = [str(directory / name) for name in entry["files"]]
        samples[process] = SampleInfo(**fields)
    return samples


def sample_fileset(infos: Iterable[SampleInfo]) -> dict[str, dict[str, Any]]:
    """A coffea fileset for samples: ``{process: {"files": {path: treename}, "metadata": {...}}}``.

    The metadata holds ``xsec`` (pb), ``sum_genweight``, ``nevents`` and ``process``, so a processor can
    normalize each dataset to a luminosity.

    Examples
    --------
    >>> import tempfile
    >>> from distproc.samples import make_sample, sample_fileset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     fileset = sample_fileset([make_sample("dy", 100, tmp)])
    >>> list(fileset), fileset["dy"]["metadata"]["nevents"]
    (['dy'], 100)
    """
    fileset: dict[str, dict[str, Any]] = {}
    for info in infos:
        if info.process in fileset:
            msg = (
                f"two samples of process {info.process!r} in one fileset; a fileset needs one entry per "
                "dataset: generate one sample with more events, or pass the samples separately"
            )
            raise ConfigError(
                msg,
                key="process",
            )
        fileset[info.process] = {
            "files": {path: info.treename for path in info.files},
            "metadata": {
                "xsec": info.xsec_pb,
                "sum_genweight": info.sum_genweight,
                "nevents": info.events,
                "process": info.process,
            },
        }
    return fileset


def write_fileset(infos: Iterable[SampleInfo], path: str | os.PathLike[str]) -> Path:
    """Write the :func:`sample_fileset` of *infos* as YAML, atomically; return the path.

    The file is what a run config's ``fileset:`` key takes. Its file paths are relative to the YAML's
    directory (where ``distproc run`` resolves them), so the samples and their fileset can move together.

    Examples
    --------
    >>> import tempfile, yaml
    >>> from distproc.samples import make_sample, write_fileset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_fileset([make_sample("wjets", 100, tmp)], f"{tmp}/fileset.yaml")
    ...     yaml.safe_load(path.read_text())["wjets"]["metadata"]["nevents"]
    100
    """
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileset = sample_fileset(infos)
    for entry in fileset.values():
        entry["files"] = {os.path.relpath(f, path.parent): t for f, t in entry["files"].items()}
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(fileset, sort_keys=False))
    return path


def make_agc_samples(
    events: int,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    compression: str = "zstd",
    events_per_file: int | None = None,
    fileset: str | os.PathLike[str] | None = "fileset.yaml",
) -> dict[str, SampleInfo]:
    """Generate the AGC's nine inputs (:data:`AGC_PROCESSES`), *events* each, and their fileset YAML.

    Parameters
    ----------
    events
        Events per process.
    out
        Directory for every sample (and ``metadata.json``).
    seed, compression, events_per_file
        As for :func:`make_sample` (the same seed for every process: their streams are independent).
    fileset
        File name (relative to *out*) of the fileset YAML to write; ``None`` writes none.

    Examples
    --------
    >>> import tempfile
    >>> from distproc.samples import make_agc_samples
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     infos = make_agc_samples(200, tmp)
    ...     sorted(p.name for p in Path(tmp).iterdir())[:3]
    ['fileset.yaml', 'metadata.json', 'single_top_s_chan_0.root']
    >>> list(infos) == list(AGC_PROCESSES)
    True
    """
    infos = {
        process: make_sample(
            process, events, out, seed=seed, compression=compression, events_per_file=events_per_file
        )
        for process in AGC_PROCESSES
    }
    if fileset is not None:
        write_fileset(infos.values(), Path(out) / fileset)
    return infos
