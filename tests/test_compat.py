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
    for name in ("dask", "distributed", "coffea"):
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
