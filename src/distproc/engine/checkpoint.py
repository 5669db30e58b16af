"""Checkpoints: every finished partition's output kept on disk, so an interrupted run resumes.

A checkpoint is a directory (a local path or any fsspec URL the workers can write) holding
``meta.json`` (the fingerprint of the processor and the result-changing run options, and the number of
partitions planned) and ``entries/``. Each entry is the pickled :class:`~distproc.engine.worker.Partial`
of a *span* of consecutive partitions ``[lo, hi)`` of the run's partition table, named
``LO-HI-DIGEST.pkl``; ``DIGEST`` hashes the identity of every partition in the span (dataset, file path,
size and modification time of local files, tree, entry range), so an entry is used only for exactly the
partitions it was computed from.

Workers write the entries: a partition task writes the entry of its partitions (or, when one of them
failed, one entry per partition that succeeded), and every reduction task of the tree writes the merged
entry of its subtree and then deletes its children's. At any time the checkpoint holds about
one entry per unfinished subtree, and a finished run one entry for everything: resuming a 10^5-partition
run reads back a handful of files, not 10^5. An entry is written under a temporary name and renamed
(fsspec: written, then moved) so a half-written entry never has an entry's name. A subtree with a failed
partition writes no merged entry (its successful children's entries stay), so a rerun retries exactly the
failed partitions.

On resume, :meth:`Checkpoint.covering` lists ``entries/`` once and takes the largest valid spans first
(an entry superseded by its parent but not yet deleted when the run stopped is never counted twice).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import pickle
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distproc._paths import atomic_write, is_remote
from distproc.engine.worker import Partial, merge, process_partition
from distproc.exceptions import CheckpointError
from distproc.partitioning import PartitionTable

__all__ = (
    "Checkpoint",
    "checkpoint_status",
    "fingerprint",
    "load_entry",
    "merge_and_save",
    "open_checkpoint",
    "process_and_save",
)

_FORMAT = 1
_DIGEST = 8  # bytes of each partition's identity hash


def _stable(value: Any) -> Any:
    """*value* as JSON-ready data that is the same in every process (no ids, no memory addresses)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _stable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()
    except Exception:  # noqa: BLE001  (unpicklable state, an open session: its type stands for it)
        return f"{type(value).__module__}.{type(value).__qualname__}"


def _source(obj: Any) -> str:
    """The source of the module defining *obj* (a class or function; its whole file: helpers it calls
    change results too)."""
    try:
        return Path(inspect.getfile(obj)).read_text()
    except (OSError, TypeError):
        try:
            return inspect.getsource(obj)
        except (OSError, TypeError):
            return ""


def fingerprint(processor: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs' partition outputs interchangeable: the processor's class (or function) and
    the source of its module, its attributes (constructor arguments) and the result-changing run
    *options*.

    Examples
    --------
    >>> class P:
    ...     def __init__(self, cut):
    ...         self.cut = cut
    >>> options = {"schema": "nanoaod"}
    >>> fingerprint(P(30), options)["digest"] == fingerprint(P(40), options)["digest"]
    False
    """
    cls = processor if inspect.isfunction(processor) else type(processor)
    attributes = _stable(
        {k: v for k, v in vars(processor).items() if not k.startswith("_")}
        if hasattr(processor, "__dict__")
        else {}
    )
    described = {
        "processor": f"{cls.__module__}.{cls.__qualname__}",
        "source": hashlib.sha256(_source(cls).encode()).hexdigest(),
        "attributes": hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest(),
        "options": _stable(dict(options)),
    }
    described["digest"] = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return described


def _identities(table: PartitionTable) -> bytes:
    """One :data:`_DIGEST`-byte hash per partition of *table* (dataset and its metadata, file identity,
    tree, entry range)."""
    stats: dict[str, str] = {}
    for _, path, _ in table.files:
        if not is_remote(path) and path not in stats:
            try:
                st = os.stat(path.removeprefix("file://"))
                stats[path] = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stats[path] = ""
    metadata = [json.dumps(_stable(m), sort_keys=True) for m in table.metadata]
    out = bytearray()
    for i in range(len(table)):
        part = table[i]
        meta = metadata[table.files[table.file_index[i]][0]]
        ident = (
            part.dataset,
            meta,
            part.file,
            stats.get(part.file, ""),
            part.treename,
            part.entry_start,
            part.entry_stop,
        )
        out += hashlib.sha256(repr(ident).encode()).digest()[:_DIGEST]
    return bytes(out)


@dataclass(frozen=True)
class Checkpoint:
    """A run's checkpoint at *url*, for the partitions whose identities are *identities*.

    One graph key of the run (shipped once per worker). Use :func:`open_checkpoint` to make one.
    """

    url: str
    identities: bytes = b""

    def _fs(self) -> tuple[Any, str]:
        return _fs(self.url)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Write ``meta.json`` atomically."""
        self._write("", "meta.json", json.dumps(meta, indent=2).encode())

    def plan(self, table: PartitionTable) -> Checkpoint:
        """This checkpoint for the run's partitions *table* (records how many are planned)."""
        fs, root = self._fs()
        meta = json.loads(_read(fs, f"{root}/meta.json"))
        self.write_meta({**meta, "partitions": len(table)})
        return Checkpoint(url=self.url, identities=_identities(table))

    def entry_name(self, lo: int, hi: int) -> str:
        """The file name of the entry of partitions ``[lo, hi)``."""
        digest = hashlib.sha256(self.identities[lo * _DIGEST : hi * _DIGEST]).hexdigest()[:16]
        return f"{lo:09d}-{hi:09d}-{digest}.pkl"

    def save(self, lo: int, hi: int, partial: Partial) -> None:
        """Write the entry of ``[lo, hi)`` atomically (temporary name, then rename or move)."""
        import cloudpickle  # outputs may hold behaviour lambdas (dask mode, vector) that pickle refuses

        data = cloudpickle.dumps(partial, protocol=pickle.HIGHEST_PROTOCOL)
        self._write("/entries", self.entry_name(lo, hi), data)

    def _write(self, subdirectory: str, name: str, data: bytes) -> None:
        """Write *data* to *name* in the checkpoint's *subdirectory* (``""``: the checkpoint itself) under a
        temporary name first, then rename or move it: a reader never sees a half-written file."""
        fs, root = self._fs()
        final = f"{root}{subdirectory}/{name}"
        if not is_remote(self.url):
            with atomic_write(final) as path:
                path.write_bytes(data)
            return
        tmp = f"{root}{subdirectory}/.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with fs.open(tmp, "wb") as f:  # every fsspec file system writes so (fsspec-xrootd: no pipe_file)
                f.write(data)
            _move(fs, tmp, final)
        finally:
            with contextlib.suppress(OSError):
                if fs.exists(tmp):
                    fs.rm_file(tmp)

    def drop(self, spans: Iterable[tuple[int, int]]) -> None:
        """Delete the entries of *spans* (superseded by their parent's)."""
        fs, root = self._fs()
        for lo, hi in spans:
            path = f"{root}/entries/{self.entry_name(lo, hi)}"
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)

    def load(self, lo: int, hi: int) -> Partial:
        """Read the entry of ``[lo, hi)``."""
        fs, root = self._fs()
        return pickle.loads(_read(fs, f"{root}/entries/{self.entry_name(lo, hi)}"))

    def _names(self) -> list[str]:
        fs, root = self._fs()
        fs.invalidate_cache(f"{root}/entries")  # workers in other processes write it (fsspec-xrootd caches)
        try:
            return [p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/entries", detail=False)]
        except FileNotFoundError:
            return []

    def covering(self, nodes: Iterable[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
        """The spans whose entries are valid for this run, chosen largest first, never overlapping, in
        order. With *nodes* (the spans of the run's reduction tree), only those: a resumed run then adds
        its partial outputs in the order a fault-free run does, and its result is equal bit for bit."""
        nodes = None if nodes is None else set(nodes)
        n = len(self.identities) // _DIGEST
        spans = []
        for name in self._names():
            parts = name.removesuffix(".pkl").split("-")
            if len(parts) != 3 or not name.endswith(".pkl") or not all(p.isdigit() for p in parts[:2]):
                continue
            lo, hi = int(parts[0]), int(parts[1])
            if 0 <= lo < hi <= n and (nodes is None or (lo, hi) in nodes) and name == self.entry_name(lo, hi):
                spans.append((lo, hi))
        taken = bytearray(n)
        chosen = []
        for lo, hi in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
            if not any(taken[lo:hi]):
                taken[lo:hi] = b"\1" * (hi - lo)
                chosen.append((lo, hi))
        return sorted(chosen)


def _read(fs: Any, path: str) -> bytes:
    """The content of *path* on *fs* (through ``open``, as every fsspec file system reads; fsspec-xrootd's
    ``cat_file`` wants a byte range)."""
    with fs.open(path, "rb") as f:
        return f.read()


def _move(fs: Any, source: str, target: str) -> None:
    """Move *source* to *target* on *fs*; on XRootD by the server's own move (fsspec-xrootd has none of
    its own, and fsspec's fallback, a copy, is not implemented there either)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "root" not in protocols:
        fs.mv(source, target)
        return
    from XRootD import client

    from distproc.remote import XROOTD_TIMEOUT

    server = client.FileSystem(f"root://{fs.hostid}")
    status, _ = server.mv(source, target, timeout=XROOTD_TIMEOUT)
    if not status.ok:
        msg = f"cannot move root://{fs.hostid}/{source} to {target}: {status.message.strip()}"
        raise OSError(msg)


def _fs(url: str) -> tuple[Any, str]:
    """The fsspec file system of *url* and the path on it (XRootD with bounded timeouts)."""
    import fsspec

    from distproc.remote import remote_options

    return fsspec.core.url_to_fs(url, **remote_options(url))


def open_checkpoint(
    url: str | os.PathLike[str], processor: Any, options: Mapping[str, Any], *, fresh: bool = False
) -> Checkpoint:
    """The checkpoint at *url* for *processor* and the result-changing run *options*: created if
    missing, emptied with *fresh*. Call :meth:`Checkpoint.plan` with the run's partitions next.

    Raises :class:`~distproc.exceptions.CheckpointError` when *url* is a file, or when the checkpoint
    there was made by another processor or other options (unless *fresh*).

    Examples
    --------
    >>> import tempfile
    >>> class P:
    ...     cut = 30
    >>> ckpt = open_checkpoint(tempfile.mkdtemp() + "/ckpt", P(), {"schema": "nanoaod"})
    >>> ckpt.covering()
    []
    """
    url = os.fspath(url)
    fs, root = _fs(url)
    if fs.isfile(root):
        msg = f"checkpoint {url} is a file, not a directory: give another --checkpoint or remove it"
        raise CheckpointError(msg, key="checkpoint")
    mine = fingerprint(processor, options)
    meta_path = f"{root}/meta.json"
    if fs.exists(meta_path) and not fresh:
        theirs = json.loads(_read(fs, meta_path)).get("fingerprint", {})
        if theirs.get("digest") != mine["digest"]:
            differ = [k for k in ("processor", "source", "attributes", "options") if theirs.get(k) != mine[k]]
            msg = (
                f"checkpoint {url} was made by another processor or other run options ({', '.join(differ)} "
                f"differ; processor {theirs.get('processor')} there, {mine['processor']} now): "
                "rerun with --fresh to discard it, or give another --checkpoint"
            )
            raise CheckpointError(msg, key="checkpoint")
    if fresh and fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(f"{root}/entries", exist_ok=True)
    checkpoint = Checkpoint(url=url)
    checkpoint.write_meta({"format": _FORMAT, "fingerprint": mine, "partitions": None})
    return checkpoint


def checkpoint_status(url: str | os.PathLike[str]) -> tuple[int, int]:
    """``(partitions done, partitions planned)`` of the checkpoint at *url* (from its file names).

    Examples
    --------
    >>> checkpoint_status("out/.checkpoint")  # doctest: +SKIP
    (54, 60)
    """
    url = os.fspath(url)
    fs, root = _fs(url)
    if not fs.exists(f"{root}/meta.json"):
        msg = f"no checkpoint at {url} (no meta.json)"
        raise CheckpointError(msg, key="checkpoint")
    planned = int(json.loads(_read(fs, f"{root}/meta.json"))["partitions"] or 0)
    # Without the partition table the digests cannot be checked: count the largest non-overlapping spans.
    spans = []
    for name in Checkpoint(url)._names():
        parts = name.removesuffix(".pkl").split("-")
        if name.endswith(".pkl") and len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            spans.append((int(parts[0]), int(parts[1])))
    taken = bytearray(planned)
    for lo, hi in sorted(spans, key=lambda s: s[0] - s[1]):
        if hi <= planned and not any(taken[lo:hi]):
            taken[lo:hi] = b"\1" * (hi - lo)
    return sum(taken), planned


def _save_quietly(checkpoint: Checkpoint, lo: int, hi: int, partial: Partial) -> str | None:
    """Save an entry; a checkpoint that cannot be written costs the resume, not the run: returns why it
    was not written (the run reports it, :attr:`Partial.unsaved`), or None."""
    try:
        checkpoint.save(lo, hi, partial)
    except (OSError, pickle.PicklingError, TypeError) as err:
        return f"entry {lo}-{hi}: {type(err).__name__}: {err}"
    return None


def process_and_save(
    proc: Any, table: PartitionTable, lo: int, hi: int, checkpoint: Checkpoint, done: Sequence[int] = ()
) -> Partial:
    """:func:`~distproc.engine.worker.process_partitions` of ``[lo, hi)``, reading the partitions in
    *done* from their entries instead, then the entry of ``[lo, hi)`` (replacing those of *done*); when a
    partition failed, an entry for each other partition processed here instead."""
    parts = [
        checkpoint.load(i, i + 1) if i in done else process_partition(proc, table, i) for i in range(lo, hi)
    ]
    merged = merge(parts)
    if not merged.failures:
        unsaved = _save_quietly(checkpoint, lo, hi, merged)
        if unsaved is None:
            checkpoint.drop((i, i + 1) for i in done)
        return _with_unsaved(merged, [unsaved])
    saves = [
        _save_quietly(checkpoint, i, i + 1, part)
        for i, part in enumerate(parts, lo)
        if not part.failures and i not in done
    ]
    return _with_unsaved(merged, saves)


def _with_unsaved(partial: Partial, unsaved: Sequence[str | None]) -> Partial:
    """*partial*, or a copy of it naming the entries that were not written (a task's result is not
    changed in place: the scheduler may hold it for another task)."""
    errors = [u for u in unsaved if u is not None]
    return dataclasses.replace(partial, unsaved=[*partial.unsaved, *errors]) if errors else partial


def merge_and_save(
    parts: Sequence[Partial],
    checkpoint: Checkpoint,
    span: tuple[int, int],
    children: Sequence[tuple[int, int]],
) -> Partial:
    """:func:`~distproc.engine.worker.merge`, then the subtree's entry replaces its children's.

    A subtree with a failed partition writes nothing (the children's entries stay, so a rerun redoes only
    the failed partitions).
    """
    merged = merge(parts)
    if merged.failures or list(children) == [span]:
        return merged
    unsaved = _save_quietly(checkpoint, *span, merged)
    if unsaved is None:
        checkpoint.drop(c for c in children if c != span)
    return _with_unsaved(merged, [unsaved])


def load_entry(checkpoint: Checkpoint, lo: int, hi: int) -> Partial:
    """The checkpointed output of partitions ``[lo, hi)`` (a leaf of a resumed run's graph)."""
    return checkpoint.load(lo, hi)
