"""Worker-side state of the runs a worker process serves: one bounded :class:`RunState` per run.

A worker keeps things between the partitions of a run: the unpickled processor, the input files it
reads (open, for the run's next partitions of them), NanoEvents schemas, compiled corrections, ONNX
sessions. They belong to the run: two runs on one scheduler (an ``address`` or ``gateway`` cluster) each
get their own :class:`RunState`, keyed by the run's token, so neither evicts the other's processor or
files, and a run never reads a file another run left open (it may have been rewritten since).

Everything is bounded: the process-wide registry :data:`WORKER` keeps the :data:`MAX_RUNS` most
recently used runs (an evicted run's files are closed), and each run keeps at most
``open_files`` files and :data:`MAX_ENTRIES` entries of each other kind, least recently used first out.

Code that runs inside a partition (the processor, corrections, ONNX models) finds its run's state with
:func:`current_state`; outside a run (a plain ``client.submit``, an interactive session) that is the
process's default state, bounded alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import pickle
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = (
    "MAX_ENTRIES",
    "MAX_RUNS",
    "WORKER",
    "RunState",
    "WorkerState",
    "active",
    "close_quietly",
    "current_state",
)

T = TypeVar("T")

#: Run states one worker process keeps; the least recently used run beyond this is dropped.
MAX_RUNS = 4
#: Entries of each kind (schemas, corrections, ONNX sessions, ...) one run keeps on a worker.
MAX_ENTRIES = 16
#: Input files one run keeps open per worker process by default (the ``open_files`` run option).
OPEN_FILES = 4


def close_quietly(file: Any) -> None:
    with contextlib.suppress(Exception):
        file.close()


class RunState:
    """What one worker process keeps for one run: processor, open files and cached entries.

    Thread-safe: the worker's threads run the run's partitions at the same time.

    Examples
    --------
    >>> from distproc.engine.state import RunState
    >>> state = RunState("run-1", open_files=2)
    >>> state.cached("answer", "key", lambda: 42)
    42
    >>> state.cached("answer", "key", lambda: 0)  # built once, then reused
    42
    """

    def __init__(
        self, token: str, *, open_files: int = OPEN_FILES, built: Counter[str] | None = None
    ) -> None:
        self.token = token
        self.open_files = open_files
        self._lock = threading.Lock()
        self._build_lock = threading.RLock()  # a build (unpickling) may use the cache
        #: The run's processor once :meth:`processor` unpickled it (None before).
        self.loaded_processor: Any = None
        self._files: OrderedDict[str, Any] = OrderedDict()
        self._entries: dict[str, OrderedDict[Any, Any]] = {}
        self._built = built if built is not None else Counter()

    def processor(self, payload: bytes) -> Any:
        """The run's processor, unpickled from *payload* once per process.

        The processor travels as cloudpickle bytes because distributed pickles graph values with plain
        pickle when it can, which would reference a user's processor module by name instead of carrying it.
        """
        with self._build_lock:
            if self.loaded_processor is None:
                self.loaded_processor = pickle.loads(payload)
            return self.loaded_processor

    def take_file(self, path: str) -> Any:
        """A file of this run left open by an earlier partition (or None); in use, it is out of the
        state, so threads never share one."""
        with self._lock:
            return self._files.pop(path, None)

    def keep_file(self, path: str, file: Any) -> None:
        """Put *file* back for the next partition of *path*; the least recently used beyond the limit
        close."""
        closing = []
        with self._lock:
            if path in self._files or self.open_files <= 0:
                closing.append(file)
            else:
                self._files[path] = file
                while len(self._files) > self.open_files:
                    closing.append(self._files.popitem(last=False)[1])
        for old in closing:
            close_quietly(old)

    def lookup(self, kind: str, key: Any) -> Any:
        """The entry *key* of *kind* if this run has it, else None."""
        with self._lock:
            entries = self._entries.get(kind)
            if entries is None or key not in entries:
                return None
            entries.move_to_end(key)
            return entries[key]

    def cached(self, kind: str, key: Any, build: Callable[[], T], *, limit: int = MAX_ENTRIES) -> T:
        """The entry *key* of *kind*, built by *build* on first use (once, whichever thread asks first).

        At most *limit* entries of *kind* are kept, the least recently used dropped first.
        """
        found = self.lookup(kind, key)
        if found is not None:
            return found
        with self._build_lock:
            found = self.lookup(kind, key)
            if found is not None:
                return found
            value = build()
            with self._lock:
                entries = self._entries.setdefault(kind, OrderedDict())
                entries[key] = value
                while len(entries) > limit:
                    entries.popitem(last=False)
                self._built[kind] += 1
            return value

    def sizes(self) -> dict[str, int]:
        """How many entries of each kind (``"files"`` for open files) this run holds."""
        with self._lock:
            return {"files": len(self._files), **{k: len(v) for k, v in self._entries.items()}}

    def close(self) -> None:
        """Close the open files and drop everything (the run is over on this worker)."""
        with self._lock:
            files, self._files = list(self._files.values()), OrderedDict()
            self._entries.clear()
            self.loaded_processor = None
        for file in files:
            close_quietly(file)


class WorkerState:
    """The registry of one process's :class:`RunState` objects, at most *max_runs*, thread-safe.

    Examples
    --------
    >>> from distproc.engine.state import WorkerState
    >>> registry = WorkerState(max_runs=2)
    >>> for token in ("a", "b", "c"):
    ...     _ = registry.run_state(token)
    >>> registry.tokens()
    ['b', 'c']
    """

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._built: Counter[str] = Counter()
        self.default = RunState("", built=self._built)

    def run_state(self, token: str, *, open_files: int = OPEN_FILES) -> RunState:
        """The state of run *token*, created on its first partition in this process."""
        evicted = []
        with self._lock:
            state = self._runs.get(token)
            if state is None:
                state = self._runs[token] = RunState(token, open_files=open_files, built=self._built)
                while len(self._runs) > self.max_runs:
                    evicted.append(self._runs.popitem(last=False)[1])
            else:
                self._runs.move_to_end(token)
        for old in evicted:
            old.close()
        return state

    def states(self) -> list[RunState]:
        """The run states this process holds, least recently used first."""
        with self._lock:
            return list(self._runs.values())

    def tokens(self) -> list[str]:
        """The runs this process holds a state for, least recently used first."""
        with self._lock:
            return list(self._runs)

    def built(self, kind: str) -> int:
        """How many entries of *kind* this process has built, in all runs (and outside runs)."""
        with self._lock:
            return self._built[kind]

    def clear(self, kind: str | None = None) -> None:
        """Drop the entries of *kind* (every run, and the default state); ``None``: every run's state."""
        with self._lock:
            states = [*self._runs.values(), self.default]
            if kind is None:
                self._runs.clear()
        for state in states:
            if kind is None:
                state.close()
            else:
                with state._lock:
                    state._entries.pop(kind, None)


#: The one registry of this (worker) process.
WORKER = WorkerState()

_CURRENT: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("distproc_run_state", default=None)


def current_state() -> RunState:
    """The state of the run whose partition this thread is processing, else the process's default state.

    Examples
    --------
    >>> from distproc.engine.state import WORKER, current_state
    >>> current_state() is WORKER.default
    True
    """
    state = _CURRENT.get()
    return WORKER.default if state is None else state


@contextlib.contextmanager
def active(state: RunState) -> Iterator[RunState]:
    """Make *state* the :func:`current_state` of this thread for the ``with`` block."""
    reset = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(reset)
