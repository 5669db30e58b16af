"""Writing and reading run outputs, atomically and as a set.

``save(result, DIR)`` writes three files into a new directory ``DIR/.outputs/run-ID/`` and then
publishes them together: ``DIR/.outputs/current`` is a symbolic link to the run's directory, replaced in
one rename, and ``DIR/histograms.root`` (and the others) are links through it. A reader never sees files
of two runs side by side, and a write that fails (a full disk) leaves the previous set as it was:

``histograms.root``
    Every :class:`hist.Hist` of the output, readable by uproot and ROOT. Naming scheme: a histogram at
    ``output["a"]["b"]`` is named ``a/b``; each value of its categorical axes (``StrCategory`` /
    ``IntCategory``, in axis order) adds a directory level, so the ``ttbar``/``nominal`` slice of
    ``output["ht"]`` with axes ``(dataset, variation, ht)`` is ``ht/ttbar/nominal``. The numeric axes
    (one to three) become a TH1/TH2/TH3 with sum of weights squared. A TObjString ``_index`` holds JSON
    listing every histogram's categorical axis names and the values written.
``output.pkl``
    The full accumulator (cloudpickle).
``report.json``
    The run report (see :class:`distproc.report.RunReport`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from distproc._paths import atomic_write
from distproc.report import RunReport, RunResult

__all__ = (
    "OUTPUT_FILES",
    "add_missing_datasets",
    "is_category",
    "iter_counters",
    "iter_hists",
    "load",
    "publish",
    "save",
    "write_histograms",
)

#: The files :func:`save` writes, published together.
OUTPUT_FILES = ("histograms.root", "output.pkl", "report.json")
#: The directory under a run's output directory holding the sets of outputs and the ``current`` link.
_SETS = ".outputs"


def iter_hists(output: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(name, hist)`` for every :class:`hist.Hist` in a nested accumulator."""
    import hist

    if isinstance(output, hist.Hist):
        yield prefix, output
    elif isinstance(output, Mapping):
        for key, value in output.items():
            yield from iter_hists(value, f"{prefix}/{key}" if prefix else str(key))


def iter_counters(output: Any, prefix: str = "") -> Iterator[tuple[str, int | float]]:
    """Yield ``(name, number)`` for every number in a nested accumulator (event counts, cutflows).

    Examples
    --------
    >>> list(iter_counters({"events": 40, "cutflow": {"all": 40, "2 jets": 12}, "h": "not a number"}))
    [('events', 40), ('cutflow/all', 40), ('cutflow/2 jets', 12)]
    """
    import numbers

    if isinstance(output, numbers.Number) and not isinstance(output, bool | complex):
        yield prefix, output.item() if hasattr(output, "item") else output
    elif isinstance(output, Mapping):
        for key, value in output.items():
            yield from iter_counters(value, f"{prefix}/{key}" if prefix else str(key))


def is_category(axis: Any) -> bool:
    """True for a categorical histogram axis (``StrCategory`` / ``IntCategory``), false for numeric ones.

    Examples
    --------
    >>> import hist
    >>> h = hist.Hist.new.StrCat(["a"], name="dataset").Reg(4, 0, 1, name="x").Weight()
    >>> [is_category(axis) for axis in h.axes]
    [True, False]
    """
    import boost_histogram as bh

    return isinstance(axis, bh.axis.StrCategory | bh.axis.IntCategory)


def _slices(name: str, h: Any) -> Iterator[tuple[str, Any]]:
    import hist

    cat = [i for i, ax in enumerate(h.axes) if is_category(ax)]
    if not cat:
        yield name, h
        return
    values = [list(h.axes[i]) for i in cat]
    for combo in itertools.product(*values):
        index = {h.axes[i].name or i: v for i, v in zip(cat, combo, strict=True)}
        key = "/".join([name, *(str(v) for v in combo)])
        yield key, h[{k: hist.loc(v) for k, v in index.items()}]


def add_missing_datasets(output: Any, datasets: Iterable[str]) -> Any:
    """Give every histogram of *output* with a growable ``dataset`` category axis all of *datasets*.

    A dataset whose events were all cut away fills nothing, so its category never grows into the axis;
    a fit or a plot expecting it then fails. Missing datasets are added as empty categories (mappings
    are updated in place); returns *output*.

    Examples
    --------
    >>> import hist
    >>> h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(2, 0, 1, name="x").Weight()
    >>> out = add_missing_datasets({"x": h.fill(dataset="dy", x=[0.2])}, ["dy", "ttbar"])
    >>> list(out["x"].axes["dataset"]), out["x"][{"dataset": "ttbar"}].sum().value
    (['dy', 'ttbar'], 0.0)
    """
    import hist

    wanted = list(datasets)
    if isinstance(output, hist.Hist):
        names = [ax.name for ax in output.axes]
        if "dataset" not in names:
            return output
        axis = output.axes["dataset"]
        missing = [d for d in wanted if d not in list(axis)]
        if not missing or not isinstance(axis, hist.axis.StrCategory) or not axis.traits.growth:
            return output
        empty_axis = hist.axis.StrCategory(missing, name="dataset", growth=True)
        empty_axis.__dict__.update(axis.__dict__)  # the same metadata (label ...), or they do not add
        axes = [empty_axis if ax.name == "dataset" else ax for ax in output.axes]
        return output + hist.Hist(*axes, storage=output.storage_type())
    if isinstance(output, MutableMapping):
        for key, value in output.items():
            output[key] = add_missing_datasets(value, wanted)
    return output


def write_histograms(output: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write every histogram of *output* to a ROOT file at *path* (atomically); returns the index.

    Examples
    --------
    >>> import hist
    >>> from distproc.io import write_histograms
    >>> h = hist.Hist.new.StrCat(["a"], name="dataset").Reg(4, 0, 1, name="x").Weight()
    >>> write_histograms({"x": h.fill(dataset="a", x=[0.5])}, "h.root")  # doctest: +SKIP
    {'x': {'categories': ['dataset'], 'written': ['x/a']}}
    """
    import uproot

    path = Path(path)
    index: dict[str, Any] = {}
    with atomic_write(path) as tmp, uproot.recreate(tmp) as f:
        for name, h in iter_hists(output):
            dims = sum(not is_category(ax) for ax in h.axes)
            entry = {"categories": [ax.name for ax in h.axes if is_category(ax)], "written": []}
            index[name] = entry
            if not 1 <= dims <= 3:
                entry["skipped"] = f"{dims} numeric axes (ROOT histograms have 1 to 3)"
                continue
            for key, sliced in _slices(name, h):
                f[key] = sliced
                entry["written"].append(key)
        f["_index"] = json.dumps(index)
    return index


def save(result: RunResult, directory: str | os.PathLike[str]) -> Path:
    """Write ``histograms.root``, ``output.pkl`` and ``report.json`` for *result* into *directory*, and
    the ``manifest.json`` of each column output (:func:`distproc.columns.write_manifest`) that
    :func:`distproc.columns.read_columns` reads: what ``distproc run`` writes.

    The files are written into a new set directory and published together (:func:`publish`), the
    manifests of column outputs inside *directory* included: a reader never sees a manifest of one run
    beside the histograms of another. If writing fails, the set published before stays in place and
    the error propagates. A column output bound to a directory outside *directory* gets its manifest
    next to its files, written atomically but not as part of the set.

    Examples
    --------
    >>> import distproc
    >>> result = distproc.run(MyProcessor(), {"dy": ["dy.root"]})  # doctest: +SKIP
    >>> distproc.save(result, "out")  # doctest: +SKIP
    """
    import cloudpickle

    from distproc.columns import iter_column_files, write_manifest

    directory = Path(directory)
    staging = directory / _SETS / f"run-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        for _, files in iter_column_files(result.output):
            inside = _relative_to(Path(files.directory), directory)
            write_manifest(files, into=None if inside is None else staging / inside)
        write_histograms(result.output, staging / "histograms.root")
        with atomic_write(staging / "output.pkl") as tmp:
            tmp.write_bytes(cloudpickle.dumps(result.output))
        with atomic_write(staging / "report.json") as tmp:
            tmp.write_text(json.dumps(result.report.to_dict(), indent=2, default=str))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(directory, staging.name)
    return directory


def _relative_to(path: Path, directory: Path) -> Path | None:
    """*path* relative to *directory* when it lies inside it (both resolved), else ``None``."""
    try:
        return path.resolve().relative_to(directory.resolve())
    except ValueError:
        return None


def publish(directory: str | os.PathLike[str], run_set: str) -> None:
    """Make the set ``DIR/.outputs/<run_set>`` the published one, all its files at once.

    ``DIR/.outputs/current`` (a symbolic link) is replaced by one rename; every file of the set
    (:data:`OUTPUT_FILES`, and column manifests at ``<column dir>/manifest.json``) has a link at the
    same relative path in *directory* to ``.outputs/current/<path>`` (created the first time). Earlier
    sets are then removed.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> (out / ".outputs" / "run-a").mkdir(parents=True)
    >>> _ = (out / ".outputs" / "run-a" / "report.json").write_text("{}")
    >>> publish(out, "run-a")
    >>> (out / "report.json").read_text()
    '{}'
    """
    directory = Path(directory)
    sets = directory / _SETS
    link = sets / f".current-{uuid.uuid4().hex[:12]}"
    os.symlink(run_set, link)
    os.replace(link, sets / "current")
    for file in sorted(p for p in (sets / run_set).rglob("*") if p.is_file()):
        name = file.relative_to(sets / run_set)
        target = directory / name
        wanted = os.path.join(*[".."] * (len(name.parts) - 1), _SETS, "current", *name.parts)
        if not (target.is_symlink() and os.readlink(target) == wanted):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.link")
            os.symlink(wanted, tmp)
            os.replace(tmp, target)
    for old in sets.iterdir():
        if old.name.startswith("run-") and old.name != run_set:
            shutil.rmtree(old, ignore_errors=True)


def load(directory: str | os.PathLike[str]) -> RunResult:
    """Read back what :func:`save` wrote.

    Examples
    --------
    >>> import distproc
    >>> result = distproc.load("out")  # doctest: +SKIP
    >>> result.report.partial  # doctest: +SKIP
    False
    """
    import pickle

    directory = Path(directory)
    with open(directory / "output.pkl", "rb") as f:
        output = pickle.load(f)
    report = RunReport.from_dict(json.loads((directory / "report.json").read_text()))
    return RunResult(output=output, report=report)
