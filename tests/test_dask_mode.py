"""Dask mode: coffea dask-awkward processors, unchanged, against coffea's own dask path on the same files
and steps (``apply_to_fileset`` + ``dask.compute``), on a real LocalCluster."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import awkward as ak
import dask
import numpy as np
import pytest
from coffea.dataset_tools import apply_to_fileset, preprocess
from coffea.nanoevents import BaseSchema, NanoAODSchema, PHYSLITESchema
from distributed import Client, LocalCluster

import distproc
from distproc.exceptions import DaskModeError
from distproc.samples import make_sample

PROCS = Path(__file__).parent / "procs" / "dask_procs.py"
pytestmark = pytest.mark.cluster


def _function(name):
    """A function of tests/procs/dask_procs.py, imported as load_processor imports (pickled by value)."""
    module = sys.modules[type(distproc.load_processor(f"{PROCS}:Ratio")).__module__]
    return getattr(module, name)


def _preprocess(fileset, step_size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea suggests its pydantic fileset API for plain dicts
        available, _ = preprocess(fileset, step_size=step_size, save_form=False)
    return available


def _coffea(proc, fileset, schema):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing cross-references, uninterpretable PHYSLITE branches
        (out,) = dask.compute(apply_to_fileset(proc, fileset, schemaclass=schema))
    return out


def _run(proc, fileset, tmp_path, **kwargs):
    kwargs.setdefault("progress", False)
    return distproc.run(proc, fileset, mode="dask", cache_dir=str(tmp_path / "cache"), **kwargs)


def assert_same(ours, theirs, where="output"):
    """Equal structure and values, up to the rounding of sums taken in another order."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif hasattr(theirs, "variances"):
        assert ours.axes == theirs.axes, where
        np.testing.assert_allclose(ours.values(), theirs.values(), rtol=1e-12, err_msg=where)
        assert (ours.variances() is None) == (theirs.variances() is None), where
        if theirs.variances() is not None:
            np.testing.assert_allclose(ours.variances(), theirs.variances(), rtol=1e-12, err_msg=where)
    elif isinstance(theirs, ak.Array):
        assert ak.to_list(ours) == ak.to_list(theirs), where
    elif isinstance(theirs, float | np.floating):
        # sums in another order: float32 rounding bound n·2^-24 for the ~10^2 values summed here
        rel = 1e-5 if np.asarray(theirs).dtype == np.float32 else 1e-12
        assert ours == pytest.approx(theirs, rel=rel), where
    else:
        assert ours == theirs, where


@pytest.fixture
def nano_fileset(nano_dy, nano_tt):
    fileset = {
        "dy": {"files": {str(nano_dy): "Events"}, "metadata": {"xsec": 6077.2}},
        "tt": {"files": {str(nano_tt): "Events"}, "metadata": {"xsec": 729.8}},
    }
    return _preprocess(fileset, step_size=20)


def test_nanoaod_equals_coffea(client, nano_fileset, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonCutflow")
    theirs = _coffea(proc, nano_fileset, NanoAODSchema)
    result = _run(proc, nano_fileset, tmp_path, cluster=client)
    assert not result.partial
    assert_same(result.output, theirs)
    assert result.output["tt"]["cutflow"]["all"] == 200
    assert result.output["dy"]["muon_pt"].sum().value > 0
    # the preprocessed steps are the partitions; the report is the default mode's
    steps = {name: sum(len(f["steps"]) for f in ds["files"].values()) for name, ds in nano_fileset.items()}
    assert {name: d.partitions for name, d in result.report.datasets.items()} == steps
    assert {name: d.events for name, d in result.report.datasets.items()} == {"dy": 40, "tt": 200}
    assert all(d.bytes_read > 0 for d in result.report.datasets.values())


def test_correctionlib_on_dask_arrays_equals_coffea(client, nano_fileset, tmp_path):
    """correctionlib evaluates a correction on dask_awkward arrays through a ``dask.delayed`` of the
    correction, one value all partitions share: evaluated per partition (once per worker), as coffea."""
    proc = distproc.load_processor(f"{PROCS}:CorrectedJets")
    theirs = _coffea(proc, nano_fileset, NanoAODSchema)
    result = _run(proc, nano_fileset, tmp_path, cluster=client)
    assert not result.partial
    assert_same(result.output, theirs)
    import uproot

    (path,) = nano_fileset["tt"]["files"]
    with uproot.open(path) as f:
        pt = f["Events"]["Jet_pt"].array()
    want = ak.sum(pt * ak.where(pt < 30, 0.9, ak.where(pt < 60, 1.0, 1.1)))
    assert result.output["tt"]["sum_pt"] == pytest.approx(want, rel=1e-5)  # float32 sums in another order
    assert want != pytest.approx(ak.sum(pt), rel=1e-3)  # the correction changed the pT


def test_physlite_equals_coffea(client, physlite, tmp_path):
    # coffea's own dask path fails on this PHYSLITE file when split (uproot reads 60 entries of
    # xTrigDecisionAux for a 50-entry step), so it runs on one step; distproc also on two.
    fileset = _preprocess({"atlas": {"files": {str(physlite): "CollectionTree"}}}, step_size=None)
    proc = distproc.load_processor(f"{PROCS}:ElectronPt")
    theirs = _coffea(proc, fileset, PHYSLITESchema)
    result = _run(proc, fileset, tmp_path, cluster=client, schema="physlite")
    assert_same(result.output, theirs)
    assert result.output["atlas"]["n"] > 0
    fileset["atlas"]["files"][str(physlite)]["steps"] = [[0, 50], [50, 100]]
    split = _run(proc, fileset, tmp_path, cluster=client, schema="physlite").output["atlas"]
    # a Double-storage histogram added from two partitions has no variances (as in dask.compute)
    np.testing.assert_array_equal(split.pop("pt").values(), theirs["atlas"]["pt"].values())
    assert_same(split, {k: v for k, v in theirs["atlas"].items() if k != "pt"})


def test_base_schema_function_equals_coffea(client, tmp_path):
    info = make_sample("ttbar", 3000, tmp_path / "data", events_per_file=1000, seed=3)
    fileset = _preprocess({"ttbar": {"files": {str(p): "Events" for p in info.files}}}, step_size=400)
    flat_jets = _function("flat_jets")
    theirs = _coffea(flat_jets, fileset, BaseSchema)
    result = _run(flat_jets, fileset, tmp_path, cluster=client, schema="base")
    assert_same(result.output, theirs)
    assert result.output["ttbar"]["nev"] == 3000


def test_only_touched_branches_are_read(nano_dy, tmp_path, monkeypatch):
    """Every branch read (recorded on uproot's TBranch.array in an in-process cluster) is one that
    dask-awkward's column optimisation finds necessary for coffea's own graph, and no other."""
    import dask_awkward as dak
    import uproot

    read: set[str] = set()
    original = uproot.behaviors.TBranch.TBranch.array

    def recording_array(self, *args, **kwargs):
        read.add(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(uproot.behaviors.TBranch.TBranch, "array", recording_array)
    fileset = _preprocess({"dy": {"files": {str(nano_dy): "Events"}}}, step_size=20)
    proc = distproc.load_processor(f"{PROCS}:MuonCutflow")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cl, Client(cl) as c:
        result = _run(proc, fileset, tmp_path, cluster=c)
    assert not result.partial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        graph = apply_to_fileset(proc, fileset, schemaclass=NanoAODSchema)["dy"]
    (necessary,) = dak.necessary_columns(*dask.base.unpack_collections(graph)[0]).values()
    assert read == set(necessary)
    assert read == {"nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge", "genWeight"}


def test_processor_exception_names_its_partitions(client, nano_fileset, tmp_path):
    proc = distproc.load_processor(f"{PROCS}:MuonCutflow", {"fail_dataset": "dy"})
    result = _run(proc, nano_fileset, tmp_path, cluster=client, allow_failures=True)
    assert result.partial
    assert set(result.output) == {"tt"}  # the other dataset is complete
    assert result.output["tt"]["cutflow"]["all"] == 200
    ranges = sorted((f.entry_start, f.entry_stop) for f in result.report.failures)
    assert ranges == [(0, 20), (20, 40)]
    assert all(f.dataset == "dy" and f.file.endswith("nano_dy.root") for f in result.report.failures)
    assert "deliberate failure in dy" in result.report.failures[0].exception


def test_a_checkpointed_run_resumes_what_it_finished(client, nano_dy, nano_tt, tmp_path):
    """Dask-mode outputs go to the checkpoint like any other: a run that adds a dataset to a finished
    one's fileset takes that one's partitions from the checkpoint (8 partitions: one subtree of the
    reduction, split_every=8) and equals coffea on both."""
    tt = _preprocess({"tt": {"files": {str(nano_tt): "Events"}}}, step_size=25)["tt"]
    dy = _preprocess({"dy": {"files": {str(nano_dy): "Events"}}}, step_size=20)["dy"]
    proc = distproc.load_processor(f"{PROCS}:MuonCutflow")
    checkpoint = str(tmp_path / "checkpoint")
    first = _run(proc, {"tt": tt}, tmp_path, cluster=client, checkpoint=checkpoint)
    assert first.report.resumed_partitions == 0
    fileset = {"tt": tt, "dy": dy}  # tt's partitions first, as before
    result = _run(proc, fileset, tmp_path, cluster=client, checkpoint=checkpoint)
    assert result.report.resumed_partitions == first.report.partitions == 8
    assert result.report.partitions == 10
    assert_same(result.output, _coffea(proc, fileset, NanoAODSchema))


def test_read_errors_are_recorded_per_partition(client, nano_dy, nano_tt, tmp_path):
    broken = tmp_path / "broken.root"
    shutil.copy(nano_dy, broken)
    with broken.open("r+b") as f:  # keep the header, destroy the baskets
        f.seek(4096)
        f.write(b"\0" * (broken.stat().st_size - 8192))
    fileset = {
        "dy": {"files": {str(broken): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}},
        "tt": {"files": {str(nano_tt): {"object_path": "Events", "steps": [[0, 100], [100, 200]]}}},
    }
    proc = distproc.load_processor(f"{PROCS}:MuonCutflow")
    result = _run(proc, fileset, tmp_path, cluster=client, allow_failures=True)
    assert result.partial
    assert result.output["tt"]["cutflow"]["all"] == 200
    assert sorted((f.file, f.entry_start, f.entry_stop) for f in result.report.failures) == [
        (str(broken), 0, 20),
        (str(broken), 20, 40),
    ]


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("Ratio", "['mean_pt']"),
        ("NormalisedFill", "['pt']"),
        ("DelayedSum", "['n']"),
        ("ForeignPartitions", "['pt']"),
    ],
)
def test_outputs_needing_every_partition_are_refused(client, nano_dy, tmp_path, name, output):
    fileset = {"dy": {"files": {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}}}
    proc = distproc.load_processor(f"{PROCS}:{name}")
    with pytest.raises(DaskModeError, match="cannot be evaluated partition by partition") as err:
        _run(proc, fileset, tmp_path, cluster=client)
    assert err.value.output == f"output{output}"


def test_a_dataset_whose_outputs_cannot_be_added_is_named_and_the_rest_kept(
    client, nano_dy, nano_tt, tmp_path
):
    """Two file forms in one dataset, binned differently by the processor: that dataset's output is
    reported (key, partitions) and left out; the other dataset's is returned and saved."""
    one = {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}
    both = {**one, str(nano_tt): {"object_path": "Events", "steps": [[0, 100], [100, 200]]}}
    fileset = {"dy": {"files": one}, "mixed": {"files": both}}
    proc = distproc.load_processor(f"{PROCS}:FormDependent")
    result = _run(proc, fileset, tmp_path, cluster=client, progress=True)
    assert result.partial
    assert set(result.output) == {"dy"}
    assert result.output["dy"]["n"] == 40
    assert result.output["dy"]["pt"].sum() > 0
    (conflict,) = result.report.output_conflicts
    assert conflict.startswith("output['mixed'] cannot be added")
    assert "axes not mergable" in conflict
    assert f"mixed: {nano_dy} [0-20]" in conflict
    saved = distproc.load(distproc.save(result, tmp_path / "out"))
    assert saved.output["dy"]["n"] == 40
    assert saved.report.output_conflicts == result.report.output_conflicts


@pytest.mark.parametrize("progress", [False, True])
def test_an_unevaluable_output_is_refused_without_waiting_for_workers(nano_dy, tmp_path, progress):
    """The client traces the processor once the tasks are submitted (so the trace does not delay the
    workers): with no worker at all (batch jobs still queued), the error comes from that trace, and the
    run's tasks are cancelled."""
    import time

    fileset = {"dy": {"files": {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}}}
    proc = distproc.load_processor(f"{PROCS}:Ratio")
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        with pytest.raises(DaskModeError, match="cannot be evaluated partition by partition") as err:
            _run(proc, fileset, tmp_path, cluster=c, progress=progress)
        assert err.value.output == "output['mean_pt']"
        assert "first raised in" not in str(err.value)  # the client's trace, not a partition's

        def tasks(dask_scheduler):
            return len(dask_scheduler.tasks)

        deadline = time.monotonic() + 60
        while c.run_on_scheduler(tasks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.run_on_scheduler(tasks) == 0


def test_an_output_refused_on_a_worker_keeps_its_key(client, nano_dy, tmp_path):
    """The client traces the first dataset only; the refusal of another dataset's output happens in a
    worker process and reaches the caller as the same DaskModeError, ``output`` and all."""
    steps = {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}
    fileset = {name: {"files": steps} for name in ("a", "b")}
    proc = distproc.load_processor(f"{PROCS}:RatioIn", {"dataset": "b"})
    with pytest.raises(DaskModeError, match="cannot be evaluated partition by partition") as err:
        _run(proc, fileset, tmp_path, cluster=client)
    assert err.value.output == "output['pt']"
    assert f"first raised in b: {nano_dy} [Events] entries " in str(err.value)
    assert str(err.value).count("cannot be evaluated") == 1


@pytest.mark.parametrize(
    ("name", "max_chunks", "output"),
    [
        ("MuonCutflow", 1, None),
        ("MuonCutflow", None, None),
        ("LazyFill", 1, "output['pt']"),
        ("LazyFill", None, "output['pt']"),
        ("ReturnsCollection:array", None, "output['lazy']['array']"),
        ("ReturnsCollection:scalar", None, "output['lazy']['scalar']"),
        ("ReturnsCollection:delayed", None, "output['lazy']['delayed']"),
    ],
)
def test_dask_processor_in_partition_mode_is_one_clear_error(
    client, nano_dy, tmp_path, name, max_chunks, output
):
    """dak functions on concrete arrays, or dask collections returned (a hist.dask histogram left
    unfilled, a dask_awkward array or scalar, a dask.delayed), with one partition or several: never a
    silent answer.
    The error is raised in a worker process and reaches the caller with its ``output`` (the key of the
    unfilled histogram; none for a dak call) and the partition it was first raised in."""
    name, _, kind = name.partition(":")
    proc = distproc.load_processor(f"{PROCS}:{name}", {"kind": kind} if kind else None)
    with pytest.raises(DaskModeError, match=r"written for dask-awkward.*mode='dask'") as err:
        distproc.run(
            proc,
            {"dy": [str(nano_dy)]},
            cluster=client,
            chunksize=10,
            max_chunks=max_chunks,
            progress=False,
            cache_dir=str(tmp_path / "cache"),
        )
    assert err.value.output == output
    assert f"first raised in dy: {nano_dy} [Events] entries " in str(err.value)
    assert str(err.value).count("written for dask-awkward") == 1


def test_yaml_mode_dask_through_the_cli(nano_dy, tmp_path):
    from test_cli import cli

    config = tmp_path / "run.yaml"
    config.write_text(
        f'processor: "{PROCS}:MuonCutflow"\n'
        f'fileset: {{dy: {{files: {{"{nano_dy}": {{object_path: Events, steps: [[0, 20], [20, 40]]}}}}}}}}\n'
        f'mode: dask\ncluster: {{kind: local, workers: 1}}\ncache_dir: "{tmp_path}/cache"\n'
    )
    ran = cli("run", str(config), "--output", "out", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    result = distproc.load(tmp_path / "out")
    assert result.report.datasets["dy"].partitions == 2
    assert result.output["dy"]["cutflow"]["all"] == 40
    import uproot

    with uproot.open(tmp_path / "out" / "histograms.root") as f:
        np.testing.assert_allclose(f["dy/muon_pt/dy"].values(), result.output["dy"]["muon_pt"].values()[0])


def test_a_scheduler_address_is_enough(client, nano_dy, tmp_path):
    """Dask mode needs only a distributed Client: the ``address`` back-end (any scheduler) runs it."""
    fileset = {"dy": {"files": {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}}}
    proc = distproc.load_processor(f"{PROCS}:MuonCutflow")
    result = _run(proc, fileset, tmp_path, cluster=client.scheduler.address)
    assert result.output["dy"]["cutflow"]["all"] == 40
    assert result.report.cluster == client.scheduler.address


@pytest.mark.parametrize(("read_dataset", "traces"), [(False, 1), (True, 3)])
def test_one_trace_per_form_unless_the_metadata_read_differs(client, nano_dy, tmp_path, read_dataset, traces):
    """Three datasets of the same file: a processor that reads no metadata is traced once per worker
    (plus once on the client), one that reads the dataset name once per dataset; results as coffea's."""
    steps = {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}
    fileset = {name: {"files": steps, "metadata": {"xsec": 1.0}} for name in ("a", "b", "c")}
    log = tmp_path / "traces.log"
    proc = distproc.load_processor(f"{PROCS}:CountedTraces", {"log": str(log), "read_dataset": read_dataset})
    theirs = _coffea(proc, fileset, NanoAODSchema)
    log.unlink()
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        result = _run(proc, fileset, tmp_path, cluster=c)
    assert_same(result.output, theirs)
    assert len(log.read_text().splitlines()) == 1 + traces


def test_metadata_read_inside_the_graph_is_per_dataset(client, nano_dy, tmp_path):
    steps = {str(nano_dy): {"object_path": "Events", "steps": [[0, 20], [20, 40]]}}
    fileset = {name: {"files": steps, "metadata": {"xsec": x}} for name, x in (("a", 1.0), ("b", 2.0))}
    proc = distproc.load_processor(f"{PROCS}:ScaledByXsec")
    theirs = _coffea(proc, fileset, NanoAODSchema)
    result = _run(proc, fileset, tmp_path, cluster=client)
    assert_same(result.output, theirs)
    assert result.output["b"]["sumw"] == pytest.approx(2 * result.output["a"]["sumw"], rel=1e-6)
