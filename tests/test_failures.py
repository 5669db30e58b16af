"""A failing processor through the Python API and the CLI: raised by default, nothing lost, grouped, and a
failure that repeats from the first partitions stops the run early."""

from __future__ import annotations

import json
import textwrap

import pytest
from _cli import cli

import distproc
from distproc.engine.failures import REPEATED_FAILURES

TYPO = textwrap.dedent("""\
    import distproc


    class Typo(distproc.Processor):
        def process(self, events):
            return {"pt": events.Muon.ptt}
""")
#: nano_dy.root's 40 events in partitions of about 3 events.
CHUNKSIZE = 3


@pytest.fixture
def typo(tmp_path):
    (tmp_path / "typo.py").write_text(TYPO)
    return distproc.load_processor(f"{tmp_path / 'typo.py'}:Typo")


def _run(processor, nano_dy, tmp_path, client, **options):
    return distproc.run(
        processor,
        {"dy": [str(nano_dy)]},
        cluster=client,
        chunksize=CHUNKSIZE,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
        **options,
    )


@pytest.mark.cluster
def test_failed_partitions_raise_with_the_partial_result(client, typo, nano_dy, tmp_path):
    """A typo in process(): the API raises PartitionError naming the file, the entries, the near miss and
    the user's line; the run stopped after the first identical failures; the partial result is attached."""
    with pytest.raises(distproc.PartitionError) as info:
        _run(typo, nano_dy, tmp_path, client)
    err = info.value
    message = str(err)
    expected = "partitions failed with AttributeError: no field 'ptt' in Muon; did you mean 'pt'"
    assert message.startswith(f"{REPEATED_FAILURES} {expected}")
    assert f"first: {nano_dy} [Events], entries " in message
    assert "stopped early" in message
    assert f'File "{tmp_path / "typo.py"}", line 6, in process' in message
    assert err.file == str(nano_dy)
    report = err.result.report
    assert err.report is report
    assert len(report.failures) == REPEATED_FAILURES < report.partitions
    assert f"the other {report.partitions - REPEATED_FAILURES} were cancelled" in report.stopped_early
    assert report.partial
    assert report.to_dict()["stopped_early"] == report.stopped_early


@pytest.mark.cluster
def test_allow_failures_returns_the_partial_result(client, typo, nano_dy, tmp_path):
    result = _run(typo, nano_dy, tmp_path, client, allow_failures=True)
    assert result.partial
    assert result.report.stopped_early
    assert {f.exception.split(";")[0] for f in result.report.failures} == {
        "AttributeError: no field 'ptt' in Muon"
    }


FAILS_LATE = textwrap.dedent("""\
    import distproc


    class FailsLate(distproc.Processor):
        def process(self, events):
            if events.metadata["entrystart"] >= 30:
                raise ValueError("bad event range")
            return {"events": len(events)}
""")


@pytest.mark.cluster
def test_failures_after_successes_do_not_stop_the_run(client, nano_dy, tmp_path):
    """Partitions failing after others succeeded: every partition runs, the failures are grouped in one
    error and the successful partitions' output is in its result."""
    (tmp_path / "late.py").write_text(FAILS_LATE)
    processor = distproc.load_processor(f"{tmp_path / 'late.py'}:FailsLate")
    with pytest.raises(distproc.PartitionError) as info:
        _run(processor, nano_dy, tmp_path, client)
    result = _run(processor, nano_dy, tmp_path, client, allow_failures=True)
    failures = result.report.failures
    assert not result.report.stopped_early
    assert 1 < len(failures) < result.report.partitions
    assert str(info.value).startswith(f"{len(failures)} partitions failed with ValueError: bad event range")
    assert all(f.entry_start >= 30 for f in failures)
    assert result.output["events"] == min(f.entry_start for f in failures)  # every other partition ran
    assert result.report.events == result.output["events"]


@pytest.mark.cluster
def test_cli_groups_identical_failures_and_points_to_the_report(tmp_path, nano_dy):
    (tmp_path / "typo.py").write_text(TYPO)
    command = f"run --processor typo.py:Typo --fileset {nano_dy} -o out --workers 1 --chunksize {CHUNKSIZE}"
    ran = cli(*command.split(), cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr + ran.stdout
    lines = [line for line in ran.stdout.splitlines() if "failed with AttributeError" in line]
    assert len(lines) == 1, ran.stdout
    expected = f"FAILED {REPEATED_FAILURES} partitions failed with AttributeError: no field 'ptt' in Muon"
    assert lines[0].startswith(expected)
    assert f"first: {nano_dy}" in lines[0]
    assert "stopped early" in ran.stdout
    assert "details: out/report.json" in ran.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["failures"]) == REPEATED_FAILURES
    assert report["stopped_early"]
    assert report["partial"] is True


def test_a_failures_error_object_stays_out_of_report_json():
    """A failure keeps a distproc error itself (for the client to raise again); report.json has its text."""
    from distproc.exceptions import DaskModeError
    from distproc.report import PartitionFailure, RunReport

    error = DaskModeError("unfilled histogram", output="output['pt']")
    failed = PartitionFailure("dy", "dy.root", "Events", 0, 10, f"DaskModeError: {error}", "", error=error)
    report = RunReport.build(
        stats=[],
        failures=[failed],
        planned={},
        planned_partitions=1,
        wall_seconds=1.0,
        preprocess_seconds=0.0,
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert "error" not in data["failures"][0]
    back = RunReport.from_dict(data)
    assert back.failures == [failed]
    assert back.failures[0].error is None
    assert report.failures[0].error is error
