"""Reading ROOT files: opening trees with bounded retries, counting entries, building NanoEvents.

Everything that touches uproot or coffea's NanoEvents factory lives here, so the engine only deals with
partitions (file, tree, entry range).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from distproc.exceptions import ConfigError, FilesetError, ReadError, format_options

__all__ = ("SCHEMAS", "count_entries", "file_identity", "open_tree", "partition_events")

T = TypeVar("T")

#: Schema names accepted in config → coffea schema class names (imported lazily).
SCHEMAS = {
    "nanoaod": "NanoAODSchema",
    "physlite": "PHYSLITESchema",
    "base": "BaseSchema",
}

#: Transient errors retried when reading (network hiccups on remote storage).
_TRANSIENT = (OSError, TimeoutError)


def schema_class(name: str) -> type:
    """The coffea schema class for a config name (``nanoaod``, ``physlite``, ``base``)."""
    try:
        attr = SCHEMAS[name.lower()]
    except KeyError:
        msg = f"unknown schema {name!r}. {format_options(name, SCHEMAS, 'schemas')}"
        raise ConfigError(msg, key="schema") from None
    from coffea import nanoevents

    return getattr(nanoevents, attr)


def with_retries(fn: Callable[[], T], *, what: str, retries: int = 3, backoff: float = 0.5) -> T:
    """Call *fn*, retrying transient I/O errors up to *retries* times with exponential back-off.

    A missing local file is not transient and fails at once.
    """
    for attempt in range(retries):
        try:
            return fn()
        except FileNotFoundError:
            raise
        except _TRANSIENT:
            time.sleep(backoff * 2**attempt)
    return fn()


@contextlib.contextmanager
def open_tree(path: str, treename: str, *, retries: int = 3, dataset: str | None = None) -> Iterator[Any]:
    """Open *treename* in *path* with uproot; errors name the file, tree and near-miss keys.

    Examples
    --------
    >>> from distproc.reading import open_tree
    >>> with open_tree("events.root", "Events") as tree:  # doctest: +SKIP
    ...     tree.num_entries
    """
    import uproot

    try:
        file = with_retries(lambda: uproot.open(path), what=path, retries=retries)
    except FileNotFoundError as err:
        msg = "file not found"
        raise ReadError(msg, dataset=dataset, file=path) from err
    except Exception as err:
        kind = (
            "could not be read after retries"
            if isinstance(err, _TRANSIENT)
            else "is not a readable ROOT file"
        )
        msg = f"file {kind}: {type(err).__name__}: {err}"
        raise ReadError(msg, dataset=dataset, file=path) from err
    with file:
        try:
            tree = file[treename]
        except KeyError as err:
            keys = {k.split(";")[0] for k in file.keys(recursive=False)}
            msg = f"no tree named {treename!r}. {format_options(treename, keys, 'keys')}"
            raise FilesetError(msg, dataset=dataset, file=path, treename=treename) from err
        except Exception as err:
            msg = f"tree could not be read: {type(err).__name__}: {err}"
            raise ReadError(msg, dataset=dataset, file=path, treename=treename) from err
        yield tree


def file_identity(path: str) -> str | None:
    """A cheap identity of a file's content (path, size, mtime) without opening it as ROOT.

    Returns ``None`` when the file cannot be stat-ed (it then gets no cache entry).
    """
    if "://" in path and not path.startswith("file://"):
        try:
            import fsspec

            fs, fspath = fsspec.core.url_to_fs(path)
            info = fs.info(fspath)
        except Exception:  # noqa: BLE001  (any failure just means: do not cache)
            return None
        return f"{path}|{info.get('size')}|{info.get('mtime', info.get('modified', ''))}"
    try:
        st = os.stat(path.removeprefix("file://"))
    except OSError:
        return None
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def count_entries(path: str, treename: str, dataset: str | None = None, retries: int = 3) -> int:
    """Number of entries of *treename* in *path* (runs on a worker during preprocessing)."""
    with open_tree(path, treename, retries=retries, dataset=dataset) as tree:
        return int(tree.num_entries)


def partition_events(
    path: str,
    treename: str,
    entry_start: int,
    entry_stop: int,
    *,
    schema: str = "nanoaod",
    metadata: dict[str, Any] | None = None,
    retries: int = 3,
) -> tuple[Any, Any]:
    """Open one partition as coffea NanoEvents in virtual mode (only the branches used are read).

    Returns ``(events, file)``; the caller closes *file* when done (its ``source`` counts bytes read).
    """
    import uproot
    from coffea.nanoevents import NanoEventsFactory

    schema_cls = schema_class(schema)
    file = with_retries(lambda: uproot.open(path), what=path, retries=retries)
    factory = NanoEventsFactory.from_root(
        file,
        treepath=treename,
        entry_start=entry_start,
        entry_stop=entry_stop,
        schemaclass=schema_cls,
        metadata=metadata,
        mode="virtual",
    )
    return factory.events(), file
