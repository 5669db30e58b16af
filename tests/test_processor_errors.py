"""Errors in a user's processor point at the user's code: file and line, and the field they meant."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import awkward as ak
import pytest
from _cli import cli

from distproc.missing_field import missing_field_message
from distproc.reading import partition_events

BAD_PROCESSOR = textwrap.dedent("""\
    import distproc


    class Typo(distproc.Processor):
        def process(self, events):
            muons = events.Muon
            return {"pt": muons.ptt}
""")
RAISING_LINE = 7  # `return {"pt": muons.ptt}` above


@pytest.mark.cluster
def test_worker_traceback_names_the_processor_file_and_line(tmp_path, nano_dy):
    """A processor file raising in process(), run on a LocalCluster through the CLI without a YAML: the
    failure's traceback (from the worker) names the user's file and the raising line, not
    "<dynamic-code>"."""
    (tmp_path / "typo.py").write_text(BAD_PROCESSOR)
    ran = cli(
        "run",
        "--processor",
        "typo.py:Typo",
        "--fileset",
        str(nano_dy),
        "--output",
        "out",
        "--workers",
        "1",
        "--max-chunks",
        "1",
        cwd=tmp_path,
    )
    assert ran.returncode == 1, ran.stderr + ran.stdout
    failure = json.loads((tmp_path / "out" / "report.json").read_text())["failures"][0]
    assert f'File "{tmp_path / "typo.py"}", line {RAISING_LINE}, in process' in failure["traceback"]
    assert 'return {"pt": muons.ptt}' in failure["traceback"]  # the worker found the source line too
    assert "<dynamic-code>" not in failure["traceback"]


@pytest.mark.cluster
def test_worker_traceback_names_a_plain_script(tmp_path, nano_dy):
    """The same processor defined in the script that runs it (``python analysis.py``, the class lives in
    ``__main__``): the worker's traceback names the script and the line too."""
    script = tmp_path / "analysis.py"
    script.write_text(
        BAD_PROCESSOR
        + textwrap.dedent(f"""\

            result = distproc.run(
                Typo(), {{"dy": [{str(nano_dy)!r}]}}, workers=1, max_chunks=1, allow_failures=True,
                progress=False,
            )
            print(result.report.failures[0].traceback)
        """)
    )
    ran = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert f'File "{script}", line {RAISING_LINE}, in process' in ran.stdout
    assert 'return {"pt": muons.ptt}' in ran.stdout
    assert "<dynamic-code>" not in ran.stdout


@pytest.fixture(scope="module")
def dy_events(nano_dy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        events, file = partition_events(str(nano_dy), "Events", 0, 50)
    yield events
    file.close()


def _raised(fn):
    with pytest.raises((AttributeError, LookupError)) as info:
        fn()
    return info.value


@pytest.mark.parametrize(
    "access",
    [lambda ev: ev.Muon.ptt, lambda ev: ev.Muon["ptt"], lambda ev: ev["Muon", "ptt"]],
    ids=["attribute", "item", "path"],
)
def test_misspelled_field_names_the_collection_and_the_near_miss(dy_events, access):
    """awkward's AttributeError and FieldNotFoundError on real NanoEvents become one message."""
    message = missing_field_message(_raised(lambda: access(dy_events)), dy_events)
    assert message.startswith("no field 'ptt' in Muon; did you mean 'pt'")
    assert "'eta'" in message  # the available fields follow


def test_misspelled_collection_and_cross_reference(dy_events):
    """A misspelled collection is looked up among the events' fields; a field of a cross-referenced
    collection (Jet.matched_muons) names the target collection."""
    collection = missing_field_message(_raised(lambda: dy_events.Muonn), dy_events)
    assert collection.startswith("no field 'Muonn' in events; did you mean 'Muon'")
    matched = missing_field_message(_raised(lambda: dy_events.Jet.matched_muons.ptt), dy_events)
    assert matched.startswith("no field 'ptt' in Muon; did you mean 'pt'")
    met = missing_field_message(_raised(lambda: dy_events.MET.phii), dy_events)
    assert met.startswith("no field 'phii' in MET; did you mean 'phi'")


def test_without_a_traceback_the_events_are_searched(dy_events):
    """An exception that lost its traceback (pickled back from a worker): the collections with a close
    field are listed."""
    err = _raised(lambda: dy_events.Muon.pfRelIso04_alll)
    err.__traceback__ = None
    assert missing_field_message(err, dy_events).startswith(
        "no field 'pfRelIso04_alll' in Muon; did you mean 'pfRelIso04_all', "
    )
    err = _raised(lambda: dy_events.Muon.ptt)
    err.__traceback__ = None
    message = missing_field_message(err, dy_events)
    with_pt = [c for c in dy_events.fields if "pt" in getattr(dy_events[c], "fields", ())]
    assert message.startswith("no field 'ptt'; did you mean one of ")
    assert message.endswith(f" (and {len(with_pt) - 5} more)?")
    named = message.removeprefix("no field 'ptt'; did you mean one of ").split(" (and")[0].split(", ")
    assert len(named) == 5
    assert {place.removesuffix(".pt") for place in named} <= set(with_pt)


def test_other_errors_are_left_alone(dy_events):
    assert missing_field_message(ValueError("no field named 'x'"), dy_events) is None
    assert missing_field_message(_raised(lambda: dy_events.Muon.pt.nonsense_method()), dy_events) is None
    assert missing_field_message(AttributeError("'float' object has no attribute 'x'")) is None


def test_plain_awkward_records():
    events = ak.Array([{"jets": [{"pt": 40.0, "eta": 1.0}], "met": 12.0}])
    message = missing_field_message(_raised(lambda: events.jets.pts), events)
    assert message.startswith("no field 'pts' in jets; did you mean 'pt'")
    assert missing_field_message(_raised(lambda: events.mett), events).startswith(
        "no field 'mett' in events; did you mean 'met'"
    )
    other = ak.Array([{"a": 1.0}])
    assert (
        missing_field_message(_raised(lambda: other.b), events)
        == "no field 'b' in the record. Available fields: 'a'"
    )
