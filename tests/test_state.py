"""The per-run worker state (distproc.engine.state): bounded, and runs never evict each other's state."""

from __future__ import annotations

import pickle
import threading

import uproot

from distproc.engine.state import MAX_ENTRIES, WORKER, RunState, WorkerState, active, current_state


def test_runs_are_bounded_and_an_evicted_run_closes_its_files(nano_dy):
    registry = WorkerState(max_runs=2)
    first = registry.run_state("a", open_files=2)
    file = uproot.open(nano_dy)
    first.keep_file(str(nano_dy), file)
    registry.run_state("b")
    assert registry.run_state("a") is first  # used again: now the most recent
    registry.run_state("c")
    assert registry.tokens() == ["a", "c"]
    assert not file.file.closed
    registry.run_state("d")
    registry.run_state("e")
    assert registry.tokens() == ["d", "e"]
    assert file.file.closed  # "a" was dropped: its open file closed
    assert first.take_file(str(nano_dy)) is None


def test_each_kind_of_entry_is_bounded_least_recently_used_first():
    state = RunState("run")
    for i in range(MAX_ENTRIES + 5):
        assert state.cached("thing", i, lambda i=i: f"value {i}") == f"value {i}"
    assert state.sizes() == {"files": 0, "thing": MAX_ENTRIES}
    assert state.lookup("thing", 0) is None
    assert state.lookup("thing", MAX_ENTRIES + 4) == f"value {MAX_ENTRIES + 4}"
    assert state.cached("small", "x", lambda: 1, limit=1) == 1
    state.cached("small", "y", lambda: 2, limit=1)
    assert state.sizes()["small"] == 1


def test_open_files_are_bounded_per_run(nano_dy, nano_tt, physlite):
    state = RunState("run", open_files=2)
    files = {str(p): uproot.open(p) for p in (nano_dy, nano_tt, physlite)}
    for path, file in files.items():
        state.keep_file(path, file)
    assert state.sizes()["files"] == 2
    assert files[str(nano_dy)].file.closed  # the least recently used went out, closed
    assert state.take_file(str(nano_tt)) is files[str(nano_tt)]  # in use: out of the state
    assert state.sizes()["files"] == 1
    none_kept = RunState("run", open_files=0)
    again = uproot.open(nano_dy)
    none_kept.keep_file(str(nano_dy), again)
    assert again.file.closed
    for file in files.values():
        file.close()


def test_two_runs_keep_their_own_processor_and_entries():
    registry = WorkerState()
    a, b = registry.run_state("a"), registry.run_state("b")
    assert a.processor(pickle.dumps({"run": "a"})) == {"run": "a"}
    assert b.processor(pickle.dumps({"run": "b"})) == {"run": "b"}
    assert a.processor(b"not read again") == {"run": "a"}  # unpickled once per run
    a.cached("schema", "same key", lambda: "a's")
    assert b.cached("schema", "same key", lambda: "b's") == "b's"
    assert registry.built("schema") == 2


def test_current_state_follows_the_run_of_this_thread():
    state = RunState("run")
    seen = []
    with active(state):
        assert current_state() is state
        thread = threading.Thread(target=lambda: seen.append(current_state()))
        thread.start()
        thread.join()
    assert current_state() is WORKER.default
    assert seen == [WORKER.default]  # another thread is not in the run


def test_an_entry_is_built_once_by_concurrent_threads():
    state = RunState("run")
    barrier = threading.Barrier(4)
    builds = []

    def build() -> object:
        builds.append(1)
        return object()

    def use() -> None:
        barrier.wait()
        results.append(state.cached("session", "model", build))

    results: list[object] = []
    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert all(r is results[0] for r in results)
