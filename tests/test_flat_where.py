"""FlatWhere (dask mode's evaluation of ``ak.where`` nodes) against ``ak.where`` itself: the same type,
parameters, behavior, attributes and bytes in every case it takes, and ``ak.where`` itself (its result or
its error) in every case it does not."""

from __future__ import annotations

import warnings

import awkward as ak
import dask_awkward as dak
import numpy as np
import pytest
from dask_awkward.lib.structure import _WhereFn

from distproc.engine.dask_mode import _execution_plan
from distproc.engine.flat_where import FlatWhere
from distproc.samples import make_sample

PT = ak.Array([[31.0, 62.5, 12.0], [], [48.0, 101.0], [7.5], [55.0, 20.0, 90.0, 3.0]])
COUNTS = ak.values_astype(ak.Array([[1, 7, 3], [], [2, 9], [0], [4, 4, 8, 1]]), np.int32)
NESTED = ak.Array([[[1.0, 2.0], []], [], [[3.0], [4.0, 5.0, 6.0]]])
BEHAVIOR = {("__typestr__", "pts"): "pts"}


def _where(condition, x, y, **kwargs):
    return ak.where(condition, x, y, **kwargs)


def assert_identical(got: ak.Array, want: ak.Array) -> None:
    assert type(got) is type(want)
    assert got.layout.form.is_equal_to(want.layout.form, all_parameters=True)
    assert got.behavior == want.behavior
    assert dict(got.attrs) == dict(want.attrs)
    got_buffers = ak.to_buffers(ak.to_packed(got))[2]
    want_buffers = ak.to_buffers(ak.to_packed(want))[2]
    assert list(got_buffers) == list(want_buffers)
    for key, buffer in got_buffers.items():
        assert np.asarray(buffer).tobytes() == np.asarray(want_buffers[key]).tobytes(), key


TAKEN = {
    "scalar-then-array": lambda: (PT > 50, 0.95, PT * 0.0 + 1.0),
    "array-then-scalar": lambda: (PT > 50, PT, -1),
    "float32-and-python-float": lambda: (PT > 50, ak.values_astype(PT, np.float32), 0.5),
    "float32-and-numpy-float32": lambda: (PT > 50, ak.values_astype(PT, np.float32), np.float32(0.5)),
    "int32-and-float32": lambda: (PT > 50, COUNTS, ak.values_astype(PT, np.float32)),
    "int32-and-numpy-int8": lambda: (COUNTS > 2, COUNTS, np.int8(-1)),
    "uint64-and-int64": lambda: (COUNTS > 2, ak.values_astype(COUNTS, np.uint64), COUNTS * 1),
    "booleans": lambda: (PT > 50, PT > 90, False),
    "nan-payloads": lambda: (PT > 50, PT * np.nan, np.inf),
    "flat": lambda: (ak.Array([True, False, True]), ak.Array([1.0, 2.0, 3.0]), ak.Array([4, 5, 6])),
    "nested-lists": lambda: (NESTED > 2, NESTED, 0.0),
    "sliced-offsets": lambda: (PT[2:5] > 50, PT[2:5], PT[2:5] * 2),
    "list-array": lambda: (PT[[4, 0, 2]] > 50, PT[[4, 0, 2]], 1.0),
    "indexed-values": lambda: (PT[PT > 10] > 50, ak.zip({"pt": PT})[PT > 10].pt, 0.0),  # a selection's field
    "behavior-and-attrs": lambda: (
        PT > 50,
        ak.Array(ak.with_parameter(PT, "__list__", "pts"), behavior=BEHAVIOR, attrs={"sample": "tt"}),
        0.0,
    ),
    "empty-partition": lambda: (PT[:0] > 50, ak.Array(np.zeros(0)), PT[:0]),
    "per-event-value-into-lists": lambda: (PT > 50, ak.Array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.0),
    "per-event-sliced-into-sliced-lists": lambda: (PT[1:4] > 50, ak.Array(np.arange(10.0))[5:8], PT[1:4]),
    "lists-into-nested-lists": lambda: (NESTED > 2, ak.Array([[10.0, 20.0], [], [30.0, 40.0]]), NESTED),
    "per-event-into-nested-lists": lambda: (NESTED > 2, ak.Array([7, 8, 9]), -1),
    "content-parameters": lambda: (
        PT > 50,
        ak.with_parameter(PT * 1, "__doc__", "jet pT", highlevel=True),
        0.0,
    ),
}


@pytest.mark.parametrize("case", TAKEN)
def test_flat_evaluation_is_ak_where_exactly(case):
    condition, x, y = TAKEN[case]()
    if case == "indexed-values":
        assert isinstance(x.layout.content, ak.contents.IndexedArray)
    if case == "list-array":
        assert isinstance(x.layout, ak.contents.ListArray)
    flat = FlatWhere(_WhereFn())
    assert flat._flat(condition, x, y) is not None  # taken, not passed on to ak.where
    assert_identical(flat(condition, x, y), _where(condition, x, y))


NOT_TAKEN = {
    "optional-values": lambda: (
        PT > 50,
        ak.Array([[1.0, None, 3.0], [], [4.0, 5.0], [6.0], [7, 8, 9, 10]]),
        0.0,
    ),
    "optional-condition": lambda: (ak.mask(PT > 50, PT > 10), PT, 0.0),
    "strings": lambda: (ak.Array([True, False]), ak.Array(["ab", "c"]), ak.Array(["d", "ef"])),
    "records": lambda: (
        ak.Array([True, False]),
        ak.Array([{"a": 1}, {"a": 2}]),
        ak.Array([{"a": 3}, {"a": 4}]),
    ),
    # awkward chooses whole lists here and gives a ListArray: the type check turns the flat result down
    "per-event-condition-choosing-lists": lambda: (ak.Array([True, False, True, True, False]), PT, COUNTS),
    "per-event-of-another-length": lambda: (PT > 50, ak.Array([1.0, 2.0, 3.0]), 0.0),
    "flat-of-another-length": lambda: (ak.Array([True, False]), ak.Array([1.0, 2.0, 3.0]), 0.0),
    "flat-of-length-one": lambda: (ak.Array([True, False]), ak.Array([1.0]), 0.0),
    "lists-of-other-outer-lists": lambda: (
        NESTED > 2,
        ak.Array([[10.0], [], [30.0, 40.0]]),  # each event's sublist count differs from NESTED's
        0.0,
    ),
    "regular-lists": lambda: (
        ak.to_regular(ak.Array([[True, False], [False, True]])),
        ak.to_regular(ak.Array([[1.0, 2.0], [3.0, 4.0]])),
        0.0,
    ),
    "complex": lambda: (ak.Array([True, False]), ak.Array([1j, 2j]), 0.0),
    "boolean-and-number": lambda: (PT > 50, PT > 90, 0.0),
    "integer-condition": lambda: (COUNTS, PT, 0.0),
    "scalar-condition-operand-string": lambda: (PT > 50, "high", 0.0),
}


@pytest.mark.parametrize("case", NOT_TAKEN)
def test_anything_else_is_ak_where_itself(case):
    condition, x, y = NOT_TAKEN[case]()
    flat = FlatWhere(_WhereFn())
    assert flat._flat(condition, x, y) is None
    try:
        want = _where(condition, x, y)
    except Exception as err:  # noqa: BLE001 - the same error as ak.where's, whatever it is
        with pytest.raises(type(err)):
            flat(condition, x, y)
    else:
        assert_identical(flat(condition, x, y), want)


def test_lists_of_other_lengths_are_ak_where_s_error():
    other = ak.Array([[1.0, 2.0, 3.0], [], [4.0], [5.0], [6.0, 7.0, 8.0, 9.0]])
    flat = FlatWhere(_WhereFn())
    assert flat._flat(PT > 50, other, 0.0) is None
    with pytest.raises(ValueError, match="cannot broadcast"):
        _where(PT > 50, other, 0.0)
    with pytest.raises(ValueError, match="cannot broadcast"):
        flat(PT > 50, other, 0.0)
    with pytest.raises(ValueError, match="cannot broadcast"):
        flat(ak.Array([True, False]), ak.Array([1.0, 2.0, 3.0]), 0.0)  # numpy.where would not say which


def test_mergebool_and_low_level_calls_go_to_ak_where():
    flat = FlatWhere(_WhereFn(mergebool=False))
    assert flat._flat(PT > 50, PT > 90, 0.0) is None
    want = ak.where(PT > 50, PT > 90, 0.0, mergebool=False)
    assert isinstance(want.layout.content, ak.contents.UnionArray)  # booleans and numbers kept apart
    assert_identical(flat(PT > 50, PT > 90, 0.0), want)
    low = FlatWhere(_WhereFn(highlevel=False))
    got = low(PT > 50, PT, 0.0)
    assert isinstance(got, ak.contents.Content)
    assert got.form == ak.where(PT > 50, PT, 0.0, highlevel=False).form


def test_nanoevents_columns_and_only_those_are_read(tmp_path):
    """On virtual NanoEvents (what a dask-mode partition evaluates on): the jets' pT, after a selection,
    with NanoEvents' behavior and per-partition attributes, and no other branch materialised."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    info = make_sample("ttbar", 2000, tmp_path, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the generated file's missing cross-references
        events = NanoEventsFactory.from_root(
            {str(info.files[0]): "Events"}, schemaclass=NanoAODSchema, mode="virtual"
        ).events()
    jets = events.Jet[events.Jet.eta < 2]
    flat = FlatWhere(_WhereFn())
    for condition, x, y in [
        (jets.pt > 60, 0.9, jets.pt * 0 + 1),
        (events.Jet.pt >= 30, events.Jet.pt, 0.0),
        (events.Jet.pt > 30, events.genWeight, 0),  # a per-event weight into the jets
    ]:
        assert flat._flat(condition, x, y) is not None
        assert_identical(flat(condition, x, y), ak.where(condition, x, y))
    for field in ("mass", "phi", "btagCSVV2"):
        assert not events.Jet[field].layout.content.data.is_materialized, field


def test_dask_mode_plans_where_nodes_with_flat_where():
    array = dak.from_awkward(PT, npartitions=1)
    out = ak.where(array > 50, 0.95, array * 0 + 1)
    shared, nodes, _ = _execution_plan([out], [(out.name, 0)], (array.name, 0))
    (where,) = [node for node in nodes if isinstance(node.func, FlatWhere)]
    assert where.key == (out.name, 0)
    values: dict = {}
    for node in shared + nodes:
        values[node.key] = node(values)
    assert_identical(values[where.key], out.compute())
