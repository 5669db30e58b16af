"""Reading ROOT files: opening trees with bounded retries, counting entries, building NanoEvents.

Everything that touches uproot or coffea's NanoEvents factory lives here, so the engine only deals with
partitions (file, tree, entry range).
"""

from __future__ import annotations

import contextlib
import re
import struct
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from distproc._compat import schema_with_form, tree_base_form
from distproc._paths import is_remote
from distproc.exceptions import ConfigError, FilesetError, ReadError, format_options
from distproc.parquet_input import count_rows_and_uuid, is_parquet, open_parquet, parquet_events
from distproc.remote import RETRIES, RetryingSource, is_permanent_xrootd, remote_options, with_retries

__all__ = (
    "SCHEMAS",
    "SKIPPED_TOPIC",
    "check_schema",
    "count_entries",
    "count_entries_and_uuid",
    "file_format",
    "format_skipped",
    "partition_events",
    "skipped_branches",
)

#: Schema names accepted in config → coffea schema class names (imported lazily).
SCHEMAS = {
    "nanoaod": "NanoAODSchema",
    "physlite": "PHYSLITESchema",
    "base": "BaseSchema",
}

#: What a file of each schema's format looks like: its usual tree name, a label for messages, and
#: whether a tree's top-level branch names are of that format (see :func:`file_format`).
_FORMATS: dict[str, tuple[str, str, Callable[[set[str]], bool]]] = {
    "nanoaod": ("Events", "NanoAOD", lambda keys: {"run", "luminosityBlock", "event"} <= keys),
    "physlite": (
        "CollectionTree",
        "PHYSLITE",
        lambda keys: "EventInfoAux." in keys and any(k.startswith("Analysis") for k in keys),
    ),
}


def file_format(tree: Any) -> str | None:
    """The schema whose format *tree* has (``"nanoaod"``, ``"physlite"``), from its branch names; None
    for anything else (a flat ntuple)."""
    keys = set(tree.keys(recursive=False))
    return next((name for name, (_, _, looks) in _FORMATS.items() if looks(keys)), None)


def check_schema(tree: Any, schema: str, *, dataset: str | None = None) -> None:
    """Raise :class:`~distproc.exceptions.FilesetError` when *tree* is of another format than *schema*.

    ``"base"`` reads any tree. The message names the format found, the tree, the schema given and the
    fix: ``this file looks like PHYSLITE (CollectionTree); schema is nanoaod: set schema: physlite``.
    """
    found = file_format(tree)
    if schema == "base" or found is None or found == schema:
        return
    usual_tree, label, _ = _FORMATS[found]
    fix = f"set schema: {found}" + ("" if tree.name == usual_tree else f" (its tree is usually {usual_tree})")
    msg = f"this file looks like {label} ({tree.name}); schema is {schema}: {fix}"
    raise FilesetError(
        msg, dataset=dataset, file=tree.file.file_path, treename=tree.object_path.lstrip("/").split(";")[0]
    )


#: Warnings coffea's NanoAOD schema emits for every partition of files whose cross-references point to
#: collections that were dropped (common in skims). They say nothing about the partition, so they are
#: silenced here rather than repeated once per partition in every worker's log.
_SCHEMA_NOISE = ("Missing cross-reference", "Branch .* already exists but its values will be replaced")


def _uproot_open(path: str, local_reads: str = "thread", retries: int = RETRIES) -> Any:
    """``uproot.open(path)``; a remote file's reads are retried (:mod:`distproc.remote`).

    With *local_reads* ``"thread"`` (the ``local_reads`` run option), local files are read with plain
    file reads in the thread that asks (uproot's ``MultithreadedFileSource`` without threads). uproot's
    default for them (``"fsspec"``) hands every read to fsspec's event-loop thread; the two threads
    trading the GIL cost about 10 ms of CPU per 100k-event partition of the throughput benchmark (86 -> 76
    ms, benchmarks/README.md). A file is used by one task at a time (see
    :class:`distproc.engine.state.RunState`), so it needs no locking. Memory-mapping (``MemmapSource``)
    was as fast but puts the mapped file in the worker's RSS, which Dask's memory limits count.

    A remote file is read through :class:`~distproc.remote.RetryingSource`: every read of it (the open's
    included) is retried *retries* times after a transient error, reopening the file before each, with
    bounded XRootD timeouts. A missing or forbidden remote file raises ``FileNotFoundError`` at once.
    """
    import uproot

    if not is_remote(path):
        if local_reads == "thread":
            return uproot.open(
                path.removeprefix("file://"), handler=uproot.MultithreadedFileSource, use_threads=False
            )
        return uproot.open(path)
    try:
        return uproot.open(path, handler=RetryingSource, read_retries=retries, **remote_options(path))
    except OSError as err:
        if is_permanent_xrootd(err):
            raise FileNotFoundError(str(err)) from err
        raise


def schema_class(name: str) -> type:
    """The coffea schema class for a config name (``nanoaod``, ``physlite``, ``base``)."""
    try:
        attr = SCHEMAS[name.lower()]
    except KeyError:
        msg = f"unknown schema {name!r}. {format_options(name, SCHEMAS, 'schemas')}"
        raise ConfigError(msg, key="schema") from None
    from coffea import nanoevents

    return getattr(nanoevents, attr)


@contextlib.contextmanager
def _open_file(path: str, *, retries: int = RETRIES, dataset: str | None = None) -> Iterator[Any]:
    """Open *path* with uproot (a remote file's reads with bounded retries); errors name the file."""
    try:
        file = _uproot_open(path, retries=retries)
    except FileNotFoundError as err:
        msg = f"file not found or not readable: {err}" if is_remote(path) else "file not found"
        raise ReadError(msg, dataset=dataset, file=path) from err
    except ReadError:  # the retries were used up: its message names the file and the last error
        raise
    except Exception as err:
        msg = f"file is not a readable ROOT file: {type(err).__name__}: {err}"
        raise ReadError(msg, dataset=dataset, file=path) from err
    with file:
        yield file


def _get_tree(file: Any, path: str, treename: str, dataset: str | None) -> Any:
    """``file[treename]`` of *file*, opened from *path*; a missing tree names the near-miss keys."""
    try:
        tree = file[treename]
    except KeyError as err:
        keys = {k.split(";")[0] for k in file.keys(recursive=False)}
        msg = f"no tree named {treename!r}. {format_options(treename, keys, 'keys')}"
        for schema, (usual_tree, label, _) in _FORMATS.items():
            if usual_tree in keys and usual_tree != treename:
                fix = f"set treename: {usual_tree}, schema: {schema}"
                msg += f"\nthis file looks like {label} ({usual_tree}): {fix}"
        raise FilesetError(msg, dataset=dataset, file=path, treename=treename) from err
    except Exception as err:
        msg = f"tree could not be read: {type(err).__name__}: {err}"
        raise ReadError(msg, dataset=dataset, file=path, treename=treename) from err
    if not hasattr(tree, "num_entries"):
        msg = f"{treename!r} is a {getattr(tree, 'classname', type(tree).__name__)}, not a tree"
        raise FilesetError(msg, dataset=dataset, file=path, treename=treename)
    return tree


def count_entries(path: str, treename: str, dataset: str | None = None, retries: int = RETRIES) -> int:
    """Number of entries of *treename* in *path* (runs on a worker during preprocessing).

    Reads the head of the tree's record only (:func:`_header_entries`), else the whole tree. A Parquet
    file's rows are read from its footer (:mod:`distproc.parquet_input`).
    """
    return count_entries_and_uuid(path, treename, dataset, retries)[0]


def count_entries_and_uuid(
    path: str, treename: str, dataset: str | None = None, retries: int = RETRIES
) -> tuple[int, str]:
    """:func:`count_entries` and the file's UUID (for Parquet, a digest of its footer:
    :attr:`~distproc.parquet_input.ParquetInput.uuid`), which preprocessing records
    (:mod:`distproc.integrity`)."""
    if is_parquet(path):
        return count_rows_and_uuid(path, dataset)
    with _open_file(path, retries=retries, dataset=dataset) as file:
        entries = _header_entries(file, treename)
        if entries is None:
            entries = _get_tree(file, path, treename, dataset).num_entries
        return int(entries), str(file.file.uuid)


_FENTRIES = struct.Struct(">q")
#: The bases a TTree record starts with in the TTree versions uproot reads (16 to 20, ROOT 5.x and 6.x);
#: fEntries, an int64, follows them. Older versions stored it differently (a double).
_TTREE_BASES = ("TNamed", "TAttLine", "TAttFill", "TAttMarker")
_TTREE_VERSIONS = range(16, 21)


def _header_entries(file: Any, treename: str) -> int | None:
    """A TTree's ``fEntries`` read from the head of its record, or None (then read the whole tree).

    ``file[treename]`` deserialises every branch to give ``num_entries``: 0.9 s for a real NanoAOD file
    (1500 branches), 1.1 s for PHYSLITE, 16 ms for a 30-branch one, against 3, 5 and 0.2 ms for this (the
    record is still decompressed). ROOT writes each of the record's bases with a byte count, so they are
    skipped by it; anything else (another class or TTree version, no byte count, memberwise streaming, a
    missing key, a damaged record) gives None, and the caller's full read reports what is wrong.
    """
    from uproot.deserialization import numbytes_version

    try:
        key = file.key(treename)
        if key.fClassName != "TTree":
            return None
        chunk, cursor = key.get_uncompressed_chunk_cursor()
        context = {"breadcrumbs": (), "TKey": key}
        num_bytes, version, memberwise = numbytes_version(chunk, cursor, context)  # the TTree's own
        if num_bytes is None or memberwise or version not in _TTREE_VERSIONS:
            return None
        for _base in _TTREE_BASES:  # each base's whole record, skipped by its byte count
            start = cursor.index
            num_bytes, _version, memberwise = numbytes_version(chunk, cursor, context)
            if num_bytes is None or memberwise:
                return None
            cursor.move_to(start + num_bytes)
        return int(cursor.field(chunk, _FENTRIES, context))
    except Exception:  # noqa: BLE001  (the full read names the problem)
        return None


def partition_events(
    path: str,
    treename: str,
    entry_start: int,
    entry_stop: int,
    *,
    schema: str = "nanoaod",
    metadata: dict[str, Any] | None = None,
    retries: int = RETRIES,
    file: Any = None,
    local_reads: str = "thread",
) -> tuple[Any, Any]:
    """Open one partition as coffea NanoEvents in virtual mode (only the branches used are read).

    Returns ``(events, file)``; the caller closes *file* when done (its ``source`` counts bytes read).
    *file*, the file a previous call returned for the same *path*, is read again instead of reopening
    *path*: its tree's metadata is then not read and parsed again. *local_reads* is the run option of
    that name (see :func:`_uproot_open`). A remote file's reads, the lazy ones of the events included,
    are retried *retries* times after a transient error (:mod:`distproc.remote`).
    """
    schema_cls = schema_class(schema)
    if is_parquet(path):
        file = file or with_retries(lambda: open_parquet(path), what=path, retries=retries)
        return parquet_events(file, entry_start, entry_stop, schema_cls, metadata), file
    if file is None:
        file = _uproot_open(path, local_reads, retries)
    with warnings.catch_warnings():
        for message in _SCHEMA_NOISE:
            warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
        events = _virtual_events(file, treename, entry_start, entry_stop, schema_cls, metadata)
    return events, file


#: coffea's warning for each branch its schema leaves out ("Skipping AnalysisTrigMatch_HLT_... as it is it
#: cannot be represented as an Awkward array"): 250 per PHYSLITE file and worker process. They are
#: collected here and summarised once per run (:func:`skipped_branches`, :func:`format_skipped`).
_SKIPPING = re.compile(r"^Skipping (?P<branch>\S+) as it is (?:it )?(?P<reason>.+?)\.?$")
#: Topic of the distributed event that carries one file's skipped branches from a worker to the client.
SKIPPED_TOPIC = "distproc-skipped-branches"
#: Skipped branches of files read outside a Dask worker (in-process runs): file → (``time.time()`` when
#: reported, reason → branches); :func:`skipped_branches` gives a run only those reported since it started.
_LOCAL_SKIPPED: dict[str, tuple[float, dict[str, list[str]]]] = {}


def _report_skipped(path: str, caught: list[warnings.WarningMessage]) -> None:
    """Group coffea's "Skipping ..." warnings of one file by reason and report them (re-emit others)."""
    skipped: dict[str, list[str]] = {}
    for warning in caught:
        match = _SKIPPING.match(str(warning.message))
        if match is None:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            continue
        names = skipped.setdefault(match.group("reason"), [])
        if match.group("branch") not in names:
            names.append(match.group("branch"))
    if not skipped:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        _LOCAL_SKIPPED[path] = (time.time(), skipped)
        return
    worker.log_event(SKIPPED_TOPIC, {"file": path, "skipped": skipped})


def skipped_branches(client: Any = None, since: float | None = None) -> dict[str, dict[str, list[str]]]:
    """The branches coffea's schema left out, per file and reason, reported since *since* (a
    ``time.time()``): by the workers of *client* and by this process.

    Examples
    --------
    >>> skipped_branches()  # doctest: +SKIP
    {'/data/PHYSLITE.root': {'cannot be represented as an Awkward array': ['AnalysisTrigMatch_...', ...]}}
    """
    found = {path: names for path, (at, names) in _LOCAL_SKIPPED.items() if since is None or at >= since}
    if client is not None:
        for stamp, event in client.get_events(SKIPPED_TOPIC):
            if since is None or stamp >= since:
                found[event["file"]] = event["skipped"]
    return found


def format_skipped(skipped: Mapping[str, Mapping[str, list[str]]]) -> str | None:
    """One paragraph summarising :func:`skipped_branches` (None when nothing was skipped).

    Examples
    --------
    >>> print(format_skipped({"a.root": {"not interpretable by Uproot": ["EventInfoAuxDyn.link"]}}))
    note: coffea's schema left out 1 branch(es) of 1 file(s) (not in events; use uproot to read them):
      1 not interpretable by Uproot: EventInfoAuxDyn.link
    """
    by_reason: dict[str, set[str]] = {}
    for reasons in skipped.values():
        for reason, names in reasons.items():
            by_reason.setdefault(reason, set()).update(names)
    if not by_reason:
        return None
    total = sum(len(names) for names in by_reason.values())
    lines = [
        f"note: coffea's schema left out {total:,} branch(es) of {len(skipped)} file(s) (not in events; "
        "use uproot to read them):"
    ]
    for reason, names in sorted(by_reason.items()):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        lines.append(f"  {len(names):,} {reason}: {shown}")
    return "\n".join(lines)


def _checked_schema(tree: Any, schema_cls: type, dataset: str | None) -> Any:
    """Build *tree*'s schema after :func:`check_schema`; coffea's "Skipping ..." warnings are collected
    (:func:`_report_skipped`) instead of printed."""
    names = {cls_name: name for name, cls_name in SCHEMAS.items()}
    check_schema(tree, names.get(schema_cls.__name__, "base"), dataset=dataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base_form = tree_base_form(tree)
        base_form["typenames"] = tree.typenames()
        schema = schema_cls(base_form)
    _report_skipped(tree.file.file_path, caught)
    return schema


def _schema(tree: Any, schema_cls: type, metadata: Mapping[str, Any] | None) -> Any:
    """The NanoEvents schema of *tree* with *metadata*; the schema itself is built once per file.

    Building it walks every branch of the tree and then builds the collections: for a real NanoAOD
    file (1500 branches) that was most of the cost of a partition's NanoEvents, and the same for every
    partition of the file (``benchmarks/nanoevents.py``). The cached schema is built without metadata;
    each partition gets a shallow copy whose form carries ``{**metadata, **what the schema adds}`` (the
    NanoAOD schema adds its ``version``), as ``from_root`` would give. Schemas are kept in the run's
    worker state (:func:`distproc.engine.state.current_state`, at most its ``MAX_ENTRIES``), by (file
    UUID, tree path, schema class): a schema depends on neither the entry range nor the metadata.
    """
    from distproc.engine.state import current_state

    def build() -> Any:
        return _checked_schema(tree, schema_cls, (metadata or {}).get("dataset"))

    key = (str(tree.file.uuid), tree.object_path, f"{schema_cls.__module__}.{schema_cls.__qualname__}")
    schema = current_state().cached("schema", key, build)

    def with_metadata(form: dict[str, Any]) -> dict[str, Any]:
        parameters = dict(form.get("parameters", {}))
        parameters["metadata"] = {**(metadata or {}), **parameters.get("metadata", {})}
        return {**form, "parameters": parameters}

    return schema_with_form(schema, with_metadata)


def _virtual_events(
    file: Any, treename: str, entry_start: int, entry_stop: int, schema_cls: type, metadata: Any
) -> Any:
    """``NanoEventsFactory.from_root(file, mode="virtual", ...).events()`` with the schema cached.

    This is coffea's own virtual-mode path (coffea is pinned exactly; tests/test_engine.py checks that
    the events equal ``from_root``'s), except that the schema comes from :func:`_schema`.
    """
    from coffea.nanoevents import NanoEventsFactory
    from coffea.nanoevents.mapping import UprootSourceMapping
    from coffea.nanoevents.mapping.uproot import TrivialUprootOpener
    from coffea.nanoevents.util import tuple_to_key

    tree = file[treename]
    entry_start = max(entry_start, 0)
    entry_stop = min(entry_stop, tree.num_entries)
    partition_key = (str(tree.file.uuid), tree.object_path, f"{entry_start}-{entry_stop}")
    mapping = UprootSourceMapping(
        TrivialUprootOpener({partition_key[0]: tree.file.file_path}, {}),
        entry_start,
        entry_stop,
        cache={},
        file_handle=file,
        use_ak_forth=True,
        virtual=True,
    )
    mapping.preload_column_source(partition_key[0], partition_key[1], tree)
    if metadata is not None:  # coffea's Runner gives the file's UUID too
        metadata = {**metadata, "fileuuid": partition_key[0]}
    schema = _schema(tree, schema_cls, metadata)
    return NanoEventsFactory(schema, mapping, tuple_to_key(partition_key), mode="virtual").events()
