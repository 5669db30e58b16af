"""Reading ROOT files: entry counts from the head of the tree's record, and their fall-back."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

import distproc
from distproc import reading
from distproc.reading import count_entries


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A file with a tree at the top, a tree in a directory and a histogram."""
    path = tmp_path_factory.mktemp("reading") / "small.root"
    with uproot.recreate(path) as file:
        file.mktree("Events", {"x": np.float32, "n": np.int32})
        file["Events"].extend({"x": np.arange(7, dtype=np.float32), "n": np.arange(7, dtype=np.int32)})
        file["Events"].extend({"x": np.ones(5, dtype=np.float32), "n": np.ones(5, dtype=np.int32)})
        file.mktree("skim/Events", {"x": np.float64})
        file["skim/Events"].extend({"x": np.zeros(3)})
        file["hist"] = np.histogram(np.arange(10), bins=5)
    return path


@pytest.mark.parametrize(
    ("sample", "tree"),
    [
        ("small_file", "Events"),
        ("small_file", "skim/Events"),
        ("nano_dy", "Events"),
        ("nano_tt", "Events"),
        ("physlite", "CollectionTree"),
    ],
)
def test_count_entries_reads_only_the_head_of_the_tree(request, monkeypatch, sample, tree):
    """The count comes from the tree record's head, without deserialising the branches, and equals
    uproot's num_entries (real CMS NanoAOD and ATLAS PHYSLITE included)."""
    path = str(request.getfixturevalue(sample))
    with uproot.open(path) as file:
        want = file[tree].num_entries

    def must_not_read_branches(*args, **kwargs):
        raise AssertionError("the whole tree was deserialised")

    monkeypatch.setattr(reading, "_get_tree", must_not_read_branches)
    assert count_entries(path, tree) == want


def test_count_entries_falls_back_to_the_whole_tree(small_file, monkeypatch):
    """What the head reader does not recognise (another class, a missing key) is read in full, which
    names the problem."""
    with uproot.open(small_file) as file:
        assert reading._header_entries(file, "Events") == 12
        assert reading._header_entries(file, "hist") is None
        assert reading._header_entries(file, "nothing") is None
        monkeypatch.setattr(reading, "_TTREE_VERSIONS", range(0))  # as for a TTree version it does not know
        assert reading._header_entries(file, "Events") is None
    monkeypatch.setattr(reading, "_header_entries", lambda file, treename: None)
    assert count_entries(str(small_file), "Events") == 12


def test_count_entries_of_something_that_is_not_a_tree(small_file):
    with pytest.raises(distproc.FilesetError, match=r"'hist' is a TH1D, not a tree") as info:
        count_entries(str(small_file), "hist", "dy")
    assert str(small_file) in str(info.value)
    with pytest.raises(distproc.FilesetError, match=r"no tree named 'Event'\. Did you mean 'Events'"):
        count_entries(str(small_file), "Event", "dy")


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_local_files_are_read_in_the_calling_thread(small_file, prefix):
    """Local paths (plain or file://) are read with plain file reads in the task's own thread, the
    bytes read are counted for the report, and the values are the file's."""
    from distproc.reading import partition_events

    events, file = partition_events(f"{prefix}{small_file}", "Events", 2, 9, schema="base")
    with file:
        assert isinstance(file.file.source, uproot.MultithreadedFileSource)
        assert events.x.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 1.0]
        assert file.file.source.num_requested_bytes > 0
    assert count_entries(f"{prefix}{small_file}", "Events") == 12
