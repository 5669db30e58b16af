"""distproc._compat, the one module using private APIs of distproc's dependencies: pinned and exercised.

When a dependency is upgraded, the first test fails and names what changed; the others fail where a
private API moved. Re-check each function of src/distproc/_compat.py against the new release, then update
``CHECKED_WITH``.
"""

from __future__ import annotations

import importlib.metadata
import operator
import re
import tomllib
import warnings
from pathlib import Path

import awkward as ak
import pytest
import uproot

from distproc import _compat

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def test_installed_versions_are_the_checked_ones():
    installed = {name: importlib.metadata.version(name) for name in _compat.CHECKED_WITH}
    differing = {
        name: f"checked with {checked}, installed {installed[name]}"
        for name, checked in _compat.CHECKED_WITH.items()
        if installed[name] != checked
    }
    assert not differing, (
        f"distproc._compat uses private APIs of these packages, checked with other versions: {differing}. "
        "Re-check each function of src/distproc/_compat.py against the installed release, then update "
        "CHECKED_WITH."
    )


def test_checked_versions_are_the_pyproject_pins():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = {}
    for spec in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^;\s]+)", spec.strip())
        if match:
            pins[match[1]] = match[2]
    pinned = [name for name in _compat.CHECKED_WITH if name in pins]
    assert {"dask", "distributed", "coffea", "dask-awkward", "dask-histogram"} <= set(pinned)
    for name in pinned:
        assert _compat.CHECKED_WITH[name] == pins[name], f"{name}: pyproject pins {pins[name]}"


@pytest.mark.cluster
def test_send_graph_gives_the_priorities_and_a_later_graph_refers_to_an_earlier_key():
    import inspect

    from dask._task_spec import TaskRef
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert "internal_priority" in inspect.signature(client._graph_to_futures).parameters
        graph = {"a": 20, ("b", 0): (operator.add, "a", 1)}
        priority = {"a": 7, ("b", 0): 3}
        futures = _compat.send_graph(client, graph, ["a", ("b", 0)], priority)
        assert futures[1].result() == 21

        def given(dask_scheduler, keys):
            return [dask_scheduler.tasks[k].priority[-1] for k in keys]

        assert client.run_on_scheduler(given, keys=["a", ("b", 0)]) == [7, 3]
        ref = _compat.task_ref("a")
        assert isinstance(ref, TaskRef)
        later = _compat.send_graph(client, {("c", 0): (operator.mul, ref, 2)}, [("c", 0)], {("c", 0): 0})
        assert later[0].result() == 40


def test_tree_base_form_and_schema_with_form(nano_dy):
    from coffea.nanoevents import NanoAODSchema

    tree = uproot.open(nano_dy)["Events"]
    base_form = _compat.tree_base_form(tree)
    assert "Muon_pt" in base_form["fields"]
    base_form["typenames"] = tree.typenames()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample's dropped cross-references
        schema = NanoAODSchema(base_form)
    before = schema.form

    def tagged(form):
        return {**form, "parameters": {**form.get("parameters", {}), "tag": 1}}

    copied = _compat.schema_with_form(schema, tagged)
    assert copied.form["parameters"]["tag"] == 1
    assert schema.form is before
    assert "tag" not in schema.form.get("parameters", {})


def test_awkward_error_context_keeps_errors():
    from awkward._errors import OperationErrorContext  # the private API the speed-up relies on

    assert callable(OperationErrorContext)
    with _compat.awkward_error_context("distproc.test"):
        assert ak.sum(ak.Array([[1, 2], [3]])) == 6
        with pytest.raises(ValueError, match="cannot broadcast"):
            ak.Array([[1, 2], [3]]) + ak.Array([[1], [2], [3]])


def test_forget_gateway_loop():
    dask_gateway = pytest.importorskip("dask_gateway")
    gateway = dask_gateway.Gateway("http://127.0.0.1:9")  # never contacted
    assert hasattr(gateway, "_loop_runner")
    gateway.close()
    _compat.forget_gateway_loop(gateway)
    assert not hasattr(gateway, "_loop_runner")
    _compat.forget_gateway_loop(gateway)  # twice: nothing left to forget


def test_is_dask_awkward_where_finds_where_nodes_only():
    import dask_awkward as dak
    from dask._task_spec import convert_legacy_graph
    from dask.base import collections_to_dsk

    pt = dak.from_awkward(ak.Array([[31.0, 62.5], [], [48.0]]), npartitions=1)
    out = ak.where(pt > 50, 0.9, pt * 2)
    graph = convert_legacy_graph(dict(collections_to_dsk([out], optimize_graph=False)))
    found = {key[0].split("-")[0] for key, node in graph.items() if _compat.is_dask_awkward_where(node.func)}
    assert found == {"where"}
    assert graph[(out.name, 0)].func.highlevel  # the attribute FlatWhere reads


def test_dask_awkward_meta_is_the_collections_typetracer():
    import dask_awkward as dak

    pt = dak.from_awkward(ak.Array([[31.0, 62.5], [], [48.0]]), npartitions=1)
    meta = _compat.dask_awkward_meta(pt)
    assert ak.backend(meta) == "typetracer"
    assert meta.layout.form == pt.form
    _compat.dask_awkward_meta(pt).attrs["@note"] = "set"  # the collection's own attrs
    assert pt.attrs["@note"] == "set"


def test_clear_dask_awkward_cache_empties_the_graph_cache():
    import dask_awkward as dak
    from dask_awkward.lib.core import dak_cache

    pt = dak.from_awkward(ak.Array([[31.0, 62.5], [], [48.0]]), npartitions=1)
    dak.map_partitions(operator.neg, pt)
    assert len(dak_cache) > 0
    _compat.clear_dask_awkward_cache()
    assert len(dak_cache) == 0


def test_histogram_postcompute_gives_the_eager_histogram_without_the_graph():
    import pickle

    import dask_awkward as dak
    import hist
    import hist.dask as hda

    pt = dak.from_awkward(ak.Array([[31.0, 62.5], [], [48.0]]), npartitions=1)
    h = hda.Hist.new.Reg(4, 0.0, 100.0, name="pt").Double()
    h.fill(pt=dak.flatten(pt))
    function, args = _compat.histogram_postcompute(h)
    assert len(pickle.dumps((function, args))) < 1000  # the class, not the collection and its graph
    partial = hist.Hist.new.Reg(4, 0.0, 100.0, name="pt").Double().fill([31.0, 62.5, 48.0])
    out = function([partial], *args)
    assert type(out) is type(h.compute())
    assert not hasattr(out, "_dask")
    assert out.values().tolist() == h.compute().values().tolist() == [0.0, 2.0, 1.0, 0.0]


def test_graph_tasks_and_with_task_function():
    import dask_awkward as dak

    pt = dak.from_awkward(ak.Array([[31.0, 62.5], [], [48.0]]), npartitions=1)
    doubled = pt * 2
    tasks = _compat.graph_tasks([doubled])
    node = tasks[(doubled.name, 0)]
    assert node.key == (doubled.name, 0)
    assert (pt.name, 0) in node.dependencies
    replaced = _compat.with_task_function(node, operator.neg)
    assert replaced.func is operator.neg
    assert (replaced.key, replaced.args, replaced.kwargs) == (node.key, node.args, node.kwargs)
    assert _compat.with_task_function("not a task", operator.neg) == "not a task"


def test_cloudpickle_dispatch_table_holds_the_code_reducer():
    import types

    table = _compat.cloudpickle_dispatch_table()
    assert isinstance(table, dict)
    assert types.CodeType in table
