"""Dask mode: a coffea dask-awkward processor, unchanged, evaluated partition by partition.

A processor written for coffea 2024's dask mode builds a graph: ``process(events)`` receives a
``dask_awkward.Array`` and returns ``hist.dask`` histograms, ``dask_awkward`` arrays and scalars. coffea
then traces and optimises that graph once per dataset on the client and ships every task with the
NanoEvents behaviour in it. Here the processor is wrapped (:class:`DaskModeProcessor`) so that the engine
runs it like any other: in each worker, ``process`` is called on a one-partition ``dask_awkward.Array``
of typetracer events (:func:`_trace`), which builds the user's graph, once per file form and run — and
again for another dataset only where the metadata the processor read has other values there
(:class:`_RecordedMetadata`);
each partition task then evaluates that graph on its own partition's events (virtual NanoEvents, so only
the branches the graph touches are read — dask-awkward's column optimisation, by construction), and the
outputs are combined across partitions by the engine's tree reduction exactly as dask would combine them:

* a ``dask_awkward`` reduction (``dak.sum``, ``dak.max``, ``ak.num(events, axis=0)``, ...): each partition
  gives the reduction's per-partition chunk; merging applies the reduction's own tree-node function and
  the end its finalize function (the functions of the reduction's ``AwkwardTreeReductionLayer``);
* a ``hist.dask`` histogram: the partition's filled histogram; merging adds them;
* a ``dask_awkward`` array: the partitions' arrays, concatenated in partition order at the end;
* anything else in the output (numbers, strings, eager ``hist.Hist``): returned as ``process`` built it,
  as ``dask.compute`` leaves it.

That split is exact only when every step before the final combination works partition by partition. An
output whose graph combines partitions anywhere else (a histogram weighted by ``dak.sum`` of the whole
dataset, ``dak.sum(x) / dak.sum(y)``, ``dask.delayed`` over the events, the events combined with another
collection that has partitions of its own) is refused with an error naming the output and the step, never
evaluated per partition into a wrong number. A ``dask.delayed`` value that does not depend on the events
(how correctionlib evaluates a correction on ``dask_awkward`` arrays) is one value all partitions share: it
is computed once per trace and handed to every partition, as dask would.

The result is what ``coffea.dataset_tools.apply_to_fileset`` + ``dask.compute`` give: ``{dataset: output}``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distproc._compat import (
    clear_dask_awkward_cache,
    dask_awkward_meta,
    graph_tasks,
    histogram_postcompute,
    is_dask_awkward_where,
    with_task_function,
)
from distproc.engine.dask_output import (
    ADD,
    PARTS,
    REDUCE,
    DaskOutput,
    DatasetResult,
    Leaf,
    LeafSpec,
    flatten,
    is_collection,
    path_str,
    unflatten,
)
from distproc.engine.flat_where import FlatWhere
from distproc.engine.state import current_state
from distproc.exceptions import DaskModeError

__all__ = ("DaskModeProcessor",)

#: ``events.metadata`` keys the engine adds per partition; a dask-mode trace sees the dataset's metadata
#: only (what coffea's ``apply_to_fileset`` gives), so these are removed before tracing.
_PARTITION_KEYS = ("filename", "treename", "entrystart", "entrystop", "fileuuid")


class _BoundEvents:
    """The dask-awkward input function of a trace: it yields the concrete events of the partition being
    evaluated (set by :meth:`_Traced.evaluate`), so the traced graph is reused for every partition."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta
        self.local = threading.local()

    def mock(self) -> Any:
        return self.meta

    def __call__(self, *args: Any) -> Any:
        return self.local.events


def _classify(path: str, leaf: Any, input_name: str) -> tuple[LeafSpec, Any]:
    """How output *leaf* is evaluated: ``(spec, the graph key to compute per partition)``.

    Raises :class:`DaskModeError` when the leaf's graph combines partitions other than in its final step,
    or in a final step whose combination is not known here.
    """
    from dask.blockwise import Blockwise
    from dask_awkward.layers import AwkwardBlockwiseLayer, AwkwardInputLayer, AwkwardTreeReductionLayer

    graph = leaf.__dask_graph__()
    (final_name,) = leaf.__dask_layers__()
    final = graph.layers[final_name]
    for name, layer in graph.layers.items():
        # an input layer is Blockwise too: only the events' own is theirs (another has its own partitions)
        partitionwise = name == input_name or (
            isinstance(layer, (AwkwardBlockwiseLayer, Blockwise)) and not isinstance(layer, AwkwardInputLayer)
        )
        if name != final_name and not partitionwise and not _shared_value(graph, name, input_name):
            msg = (
                f"{path} cannot be evaluated partition by partition: its graph combines partitions (or "
                f"brings in a collection with partitions of its own) in step {name!r} "
                f"({type(layer).__name__}) before its final step. distproc's dask mode "
                "evaluates the graph per partition and combines only a final reduction, histogram fill "
                "or array; compute such an output from returned pieces after the run (e.g. return "
                "dak.sum(x) and dak.sum(y) rather than their ratio)"
            )
            raise DaskModeError(msg, output=path)
    post = leaf.__dask_postcompute__()
    if isinstance(final, AwkwardTreeReductionLayer):
        if type(final).__module__.startswith("dask_histogram"):  # fills of hist.dask: added
            post = histogram_postcompute(leaf)
            return LeafSpec(path, ADD, post=post), (final_name, 0)
        combine = (final.concat_func, final.tree_node_func, final.finalize_func)
        return LeafSpec(path, REDUCE, combine=combine, post=post), (final.name_input, 0)
    if isinstance(final, (AwkwardBlockwiseLayer, Blockwise)) and getattr(leaf, "npartitions", 0) == 1:
        return LeafSpec(path, PARTS, post=post), (final_name, 0)
    from dask_awkward.lib.structure import _numaxis0

    tasks = list(dict(final).values())
    task = tasks[0] if len(tasks) == 1 else None
    func = task[0] if isinstance(task, tuple) and task else getattr(task, "func", None)
    if func is _numaxis0:  # ak.num(events, axis=0): the partitions' counts, summed
        return LeafSpec(path, ADD, post=post), (final_name, 0)
    msg = (
        f"{path} ends in step {final_name!r} ({type(final).__name__}), which combines partitions in a "
        "way distproc's dask mode cannot split; supported outputs are dask_awkward arrays, "
        "dask_awkward reductions over axis 0 or None, ak.num(events, axis=0) and hist.dask histograms"
    )
    raise DaskModeError(msg, output=path)


def _shared_value(graph: Any, name: str, input_name: str) -> bool:
    """Whether layer *name* of *graph* is one value every partition shares: a ``dask.delayed`` object (a
    correctionlib correction on dask-awkward arrays, a lookup table) that depends neither on the events
    nor on any other partitioned collection, so that each partition may use it as dask would."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        layer = stack.pop()
        if layer in seen:
            continue
        seen.add(layer)
        if layer == input_name or any(not isinstance(key, str) for key in graph.layers[layer]):
            return False  # the events, or a collection with partitions of its own
        stack.extend(graph.dependencies.get(layer, ()))
    return True


def _evaluated(node: Any) -> Any:
    """*node* as a partition evaluates it: an ``ak.where`` node with :class:`FlatWhere`, any other as is."""
    if is_dask_awkward_where(getattr(node, "func", None)):
        return with_task_function(node, FlatWhere(node.func))
    return node


def _execution_plan(
    collections: list[Any], keys: list[Any], input_key: Any
) -> tuple[list[Any], list[Any], dict[Any, int]]:
    """The graph nodes needed for *keys*, in dask's order: ``(shared, per_partition, users)``, the nodes
    that do not depend on the events (*input_key*; computed once), those that do, and how many of the
    latter use each per-partition key."""
    from dask.order import order

    dsk = graph_tasks(collections)
    needed: dict[Any, Any] = {}
    stack = list(keys)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed[key] = dsk[key]
            stack.extend(needed[key].dependencies)
    priority = order(needed)
    shared: list[Any] = []
    per_partition: list[Any] = []
    varying = {input_key}
    for node in sorted(needed.values(), key=lambda node: priority[node.key]):
        if node.key in varying or not varying.isdisjoint(node.dependencies):
            varying.add(node.key)
            per_partition.append(_evaluated(node))
        else:
            shared.append(node)
    users: dict[Any, int] = dict.fromkeys(varying, 0)
    for node in per_partition:
        for dep in node.dependencies & varying:
            users[dep] += 1
    return shared, per_partition, users


@dataclass
class _Traced:
    """A processor's graph for one dataset and file form, and how to evaluate it on a partition."""

    structure: Any
    specs: tuple[LeafSpec, ...]
    keys: list[Any]
    #: The nodes that do not depend on the events (``dask.delayed`` values), computed once.
    shared: list[Any]
    nodes: list[Any]
    users: dict[Any, int]
    source: _BoundEvents
    #: True once a partition was evaluated with it (only then may another dataset reuse it).
    verified: bool = False
    _shared_values: dict[Any, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _shared(self) -> dict[Any, Any]:
        """The values of the :attr:`shared` nodes, computed at the first partition (as dask computes each
        key once)."""
        with self._lock:
            if self._shared_values is None:
                values: dict[Any, Any] = {}
                for node in self.shared:
                    values[node.key] = node(values)
                self._shared_values = values
        return self._shared_values

    def evaluate(self, events: Any) -> list[Any]:
        """The per-partition value of every leaf, for the concrete *events* of one partition."""
        cache = dict(self._shared()) if self.shared else {}
        self.source.local.events = events
        users = dict(self.users)
        wanted = set(self.keys)
        try:
            for node in self.nodes:
                cache[node.key] = node(cache)
                for dep in node.dependencies & users.keys():
                    users[dep] -= 1
                    if users[dep] == 0 and dep not in wanted:
                        del cache[dep]
        finally:
            self.source.local.events = None
        pairs = zip(self.keys, self.specs, strict=True)
        return [[cache[key]] if spec.kind == PARTS else cache[key] for key, spec in pairs]


def _trace(process: Callable[[Any], Any], meta: Any) -> _Traced:
    """Call *process* on a one-partition ``dask_awkward.Array`` with typetracer *meta*; plan its graph."""
    import dask
    import dask_awkward as dak

    clear_dask_awkward_cache()
    source = _BoundEvents(meta)
    events = dak.from_map(source, [0], label="distproc-events", meta=meta)
    dask_awkward_meta(events).attrs["@original_array"] = events  # what coffea's dask-mode factory sets
    output = process(events)
    leaves: list[tuple[str, Any]] = []
    structure = flatten(output, (), leaves)
    input_name = events.name
    specs, keys, collections = [], [], []
    constants = {}
    for i, (path, leaf) in enumerate(leaves):
        if input_name not in leaf.__dask_graph__().layers:
            constants[i] = leaf  # does not depend on the events: computed once, as dask.compute would
            continue
        spec, key = _classify(path, leaf, input_name)
        specs.append(spec)
        keys.append(key)
        collections.append(leaf)
    if constants:
        computed = dict(zip(constants, dask.compute(*constants.values(), scheduler="sync"), strict=True))
        index = iter(range(len(specs)))
        renumber = [computed[i] if i in computed else Leaf(next(index)) for i in range(len(leaves))]
        structure = unflatten(structure, renumber)
    shared, nodes, users = (
        _execution_plan(collections, keys, (input_name, 0)) if collections else ([], [], {})
    )
    return _Traced(structure, tuple(specs), keys, shared, nodes, users, source)


#: Traces kept per form and run in a worker process (each holds a graph and a typetracer of the form).
_MAX_TRACES = 64
_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """Whether two metadata values are the same (type and value; an uncomparable pair is not)."""
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001  (arrays and other values without a plain truth value)
        return False


class _RecordedMetadata(Mapping):
    """The ``events.metadata`` a trace sees: it records what the processor reads, so that the trace is
    reused for another dataset only where those values are the same (most processors read the dataset
    name; a processor that reads nothing is traced once per form).

    Reading it after the trace (a graph holding the mapping itself reads it while evaluating) marks the
    trace as never to be shared, and raises if it already was: such a graph would see the first
    dataset's metadata.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.reads: dict[Any, Any] = {}
        self.whole = False
        self.traced = False
        self.late = False
        self.shared = False

    def _used(self) -> None:
        if self.traced:
            self.late = True
            if self.shared:
                msg = (
                    "the processor's graph reads events.metadata while it is evaluated (it holds the "
                    "mapping itself), so its trace cannot serve several datasets; read the metadata "
                    "in process() instead"
                )
                raise DaskModeError(msg)

    def __getitem__(self, key: Any) -> Any:
        self._used()
        self.reads[key] = self._data.get(key, _MISSING)
        return self._data[key]

    def __iter__(self) -> Any:
        self._used()
        self.whole = True
        return iter(self._data)

    def __len__(self) -> int:
        self._used()
        self.whole = True
        return len(self._data)

    def __reduce__(self) -> tuple[Any, ...]:
        """A copy (or pickle) is a plain dict of everything: the processor took the whole mapping."""
        self._used()
        self.whole = True
        return (dict, (self._data,))

    def matches(self, meta: Mapping[str, Any]) -> bool:
        """Whether *meta* gives what this trace read the same values."""
        if self.late:
            return False
        if self.whole:
            return set(meta) == set(self._data) and all(_same(meta[k], v) for k, v in self._data.items())
        return all(_same(meta.get(k, _MISSING), v) for k, v in self.reads.items())


class _Traces:
    """The traces of one form in one run's worker state, with the metadata each was traced with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, _RecordedMetadata, _Traced]] = []

    def find(self, dataset: str, meta: Mapping[str, Any]) -> _Traced | None:
        """The dataset's own trace, else a verified one whose metadata reads match *meta*."""
        for name, _, traced in self.entries:
            if name == dataset:
                return traced
        for _, recorded, traced in self.entries:
            if traced.verified and recorded.matches(meta):
                recorded.shared = True
                self.entries.append((dataset, recorded, traced))
                return traced
        return None

    def add(self, dataset: str, recorded: _RecordedMetadata, traced: _Traced) -> None:
        self.entries.append((dataset, recorded, traced))
        del self.entries[: -_MAX_TRACES * 4]


class DaskModeProcessor:
    """Runs a coffea dask-mode processor (or a function of a ``dask_awkward.Array``) in the engine.

    ``process(events)`` takes one partition's concrete NanoEvents, traces the wrapped processor on the
    events' form (once per form, again per dataset only where the metadata it read differs) in this
    process, evaluates the traced graph on the events and returns a :class:`DaskOutput`;
    ``postprocess`` turns the reduced output into ``{dataset: output}``, as ``apply_to_fileset`` +
    ``dask.compute`` give.

    Examples
    --------
    >>> import dask_awkward as dak, distproc
    >>> def analysis(events):
    ...     return {"muons": dak.sum(dak.num(events.Muon, axis=1))}
    >>> distproc.run(analysis, {"dy": ["dy.root"]}, mode="dask").output  # doctest: +SKIP
    {'dy': {'muons': 3621}}
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        #: Keys this wrapper's traces in a worker's run state (the client's default state is shared).
        self.token = uuid.uuid4().hex[:12]

    def _form(self, events: Any, meta: Mapping[str, Any]) -> tuple[str, Any]:
        """``(hash, form)`` of the events' form, without the per-partition metadata (once per file)."""

        def build() -> tuple[str, Any]:
            form = events.layout.form
            form = form.copy(parameters={k: v for k, v in form.parameters.items() if k != "metadata"})
            return hashlib.sha1(json.dumps(form.to_dict(), sort_keys=True).encode()).hexdigest(), form

        key = (self.token, str(meta.get("filename")), str(meta.get("treename")))
        return current_state().cached("dask-form", key, build)

    def _traced(self, events: Any) -> tuple[_Traced, str]:
        """The trace for the events' dataset and form: built once per run and worker process, and reused
        for another dataset of the same form when the metadata it read has the same values there."""
        import awkward as ak

        meta = dict(events.metadata or {})
        dataset = str(meta.get("dataset", ""))
        digest, form = self._form(events, meta)
        trace_meta = {k: v for k, v in meta.items() if k not in _PARTITION_KEYS}
        traces = current_state().cached("dask-traces", (self.token, digest), _Traces)
        with traces.lock:
            traced = traces.find(dataset, trace_meta)
            if traced is None:
                recorded = _RecordedMetadata(trace_meta)
                typed = form.copy(parameters={**form.parameters, "metadata": recorded})
                array = ak.typetracer.typetracer_from_form(typed, highlevel=True, behavior=events.behavior)
                traced = _trace(getattr(self.processor, "process", self.processor), array)
                recorded.traced = True
                traces.add(dataset, recorded, traced)
        return traced, dataset

    def process(self, events: Any) -> DaskOutput:
        """Evaluate the processor's graph on one partition of *events*."""
        traced, dataset = self._traced(events)
        values = traced.evaluate(events)
        traced.verified = True  # evaluated once: a read of the metadata while evaluating would show now
        meta = events.metadata or {}
        where = f"{meta.get('filename')} [{meta.get('entrystart')}-{meta.get('entrystop')}]"
        return DaskOutput({dataset: DatasetResult(traced.structure, traced.specs, values, [where])})

    def postprocess(self, accumulator: Any) -> Any:
        """``{dataset: output}`` (the wrapped processor's ``postprocess`` is not called, as in coffea's
        ``apply_to_fileset``)."""
        return accumulator.result() if isinstance(accumulator, DaskOutput) else accumulator


#: The error dask-awkward raises when a dak function (``dak.sum``, ``dak.flatten``...) gets concrete arrays.
_DAK_ON_CONCRETE = "expects at least one Dask collection"


def check_partition_output(output: Any) -> None:
    """Raise :class:`DaskModeError` if a default-mode processor returned dask collections.

    Such a processor is written for dask-awkward: its histograms were never filled (the fill is lazy) and
    its ``dask_awkward`` results never computed, so adding them up would give a silently wrong answer.
    """
    found = _first_collection(output, ())
    if found is not None:
        path, leaf = found
        msg = (
            f"the processor returned a dask collection ({type(leaf).__module__}.{type(leaf).__name__} at "
            f"{path}): it is written for dask-awkward (coffea's dask mode), and in distproc's default mode "
            "it would return unfilled histograms. Run it with distproc.run(processor, fileset, "
            "mode='dask') (YAML: mode: dask)"
        )
        raise DaskModeError(msg, output=path)


def _first_collection(obj: Any, path: tuple[Any, ...]) -> tuple[str, Any] | None:
    """``(path, collection)`` of the first dask collection in *obj* (dicts, lists, tuples), or None."""
    if is_collection(obj):
        return path_str(path), obj
    if isinstance(obj, Mapping):
        items: Any = obj.items()
    else:
        items = enumerate(obj) if isinstance(obj, list | tuple) else ()
    for key, value in items:
        found = _first_collection(value, (*path, key))
        if found is not None:
            return found
    return None


def dask_written_error(err: BaseException) -> DaskModeError | None:
    """The :class:`DaskModeError` to raise instead of *err* when *err* shows a default-mode processor
    calling dask-awkward functions on concrete arrays, else None."""
    if isinstance(err, TypeError) and _DAK_ON_CONCRETE in str(err):
        msg = (
            f"the processor calls dask-awkward functions (TypeError: {err}): it is written for "
            "dask-awkward (coffea's dask mode). Run it with distproc.run(processor, fileset, mode='dask') "
            "(YAML: mode: dask)"
        )
        return DaskModeError(msg)
    return None


def trace_on_client(processor: DaskModeProcessor, table: Any, *, schema: str, retries: int) -> None:
    """Trace *processor* for the first partition's dataset here, on the client, so that an output dask
    mode cannot evaluate is one :class:`DaskModeError` rather than a failure per partition, and comes at
    once (also while batch jobs wait in a queue). The engine calls it once the tasks are submitted, so
    the trace does not delay the workers' first partitions.

    Any other exception is left to the partitions, which report it with their file and entry range.
    """
    from distproc.reading import partition_events

    if not len(table):
        return
    part = table[0]
    try:
        events, file = partition_events(
            part.file,
            part.treename,
            part.entry_start,
            part.entry_start,
            schema=schema,
            metadata=table.dataset_metadata(0),
            retries=retries,
        )
    except Exception:  # noqa: BLE001  (an unreadable file is reported by its partitions)
        return
    try:
        processor._traced(events)
    except DaskModeError:
        raise
    except Exception:  # noqa: BLE001  (reported by the partitions, with file and entry range)
        return
    finally:
        file.close()
