"""``cluster="inline"``: the partitions run one after another in the calling process and thread, with
the output and report a cluster gives, the processor's own exception and a working ``breakpoint()``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pytest
from _cli import cli

import distproc

PROCS = Path(__file__).parent / "procs" / "muon.py"

WHERE = textwrap.dedent("""\
    import os
    import threading

    import distproc


    class Where(distproc.Processor):
        def process(self, events):
            main = threading.current_thread() is threading.main_thread()
            return {"where": {(os.getpid(), main)}, "events": len(events)}


    class Raises(distproc.Processor):
        def process(self, events):
            muons = events.Muon
            return {"pt": muons.ptt}
""")
RAISING_LINE = 16  # `return {"pt": muons.ptt}` above


def _run(processor, fileset, tmp_path, **options):
    return distproc.run(
        processor, fileset, chunksize=50, progress=False, cache_dir=str(tmp_path / "cache"), **options
    )


@pytest.mark.cluster
def test_inline_run_equals_a_local_cluster_run(nano_dy, nano_tt, tmp_path):
    fileset = {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}
    processor = distproc.load_processor(f"{PROCS}:MuonPt")
    inline = _run(processor, fileset, tmp_path, cluster="inline")
    local = _run(processor, fileset, tmp_path, cluster={"kind": "local", "workers": 1})
    assert inline.output["events"] == local.output["events"] == 240
    np.testing.assert_array_equal(
        inline.output["muon_pt"].values(flow=True), local.output["muon_pt"].values(flow=True)
    )
    assert inline.report.partitions == local.report.partitions
    assert {k: v.events for k, v in inline.report.datasets.items()} == {"dy": 40, "tt": 200}
    assert inline.report.cluster.startswith("inline")
    assert not inline.partial


def test_inline_runs_process_in_the_calling_thread(nano_dy, tmp_path):
    (tmp_path / "where.py").write_text(WHERE)
    result = _run(
        distproc.load_processor(f"{tmp_path / 'where.py'}:Where"),
        {"dy": [str(nano_dy)]},
        tmp_path,
        cluster="inline",
    )
    assert result.output["where"] == {(os.getpid(), True)}
    assert result.output["events"] == 40


def test_inline_failure_raises_from_the_processors_own_exception(nano_dy, tmp_path):
    """The PartitionError's cause is the AttributeError itself: its traceback ends on the user's line
    (what ``pdb.post_mortem`` and IDEs show)."""
    (tmp_path / "where.py").write_text(WHERE)
    processor = distproc.load_processor(f"{tmp_path / 'where.py'}:Raises")
    with pytest.raises(distproc.PartitionError, match="no field 'ptt' in Muon; did you mean 'pt'") as info:
        _run(processor, {"dy": [str(nano_dy)]}, tmp_path, cluster="inline")
    cause = info.value.__cause__
    assert isinstance(cause, AttributeError)
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(cause.__traceback__)]
    assert (str(tmp_path / "where.py"), RAISING_LINE) in frames
    assert len(info.value.result.report.failures) == 1  # stopped at the first failure, like coffea


BREAKPOINT = textwrap.dedent("""\
    import distproc


    class Stop(distproc.Processor):
        def process(self, events):
            n = len(events)
            breakpoint()
            return {"events": n}


    result = distproc.run(Stop(), {"dy": [FILE]}, cluster="inline", progress=False)
    print("EVENTS", result.output["events"])
""")


def test_breakpoint_in_process_stops_in_the_terminal(nano_dy, tmp_path):
    """A script run with ``cluster="inline"``: pdb stops in process(), reads commands from stdin."""
    (tmp_path / "stop.py").write_text(BREAKPOINT.replace("FILE", repr(str(nano_dy))))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONBREAKPOINT"}
    ran = subprocess.run(
        [sys.executable, "stop.py"],
        cwd=tmp_path,
        input="p n * 1000\nc\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**env, "DISTPROC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "stop.py(8)process()" in ran.stdout  # pdb's location line: the user's file and line
    assert "40000" in ran.stdout  # the `p` command ran in the frame of process()
    assert "EVENTS 40" in ran.stdout


def test_inline_from_a_run_yaml(nano_dy, tmp_path):
    (tmp_path / "where.py").write_text(WHERE)
    (tmp_path / "run.yaml").write_text(
        f"processor: {{class: where.py:Where}}\nfileset: {{dy: [{nano_dy}]}}\ncluster: {{kind: inline}}\n"
    )
    ran = cli("run", "run.yaml", "--output", "out", cwd=tmp_path, DISTPROC_CACHE_DIR=str(tmp_path / "cache"))
    assert ran.returncode == 0, ran.stderr + ran.stdout
    saved = distproc.load(tmp_path / "out")
    assert saved.output["events"] == 40
    ((_, in_main_thread),) = saved.output["where"]
    assert in_main_thread
    assert saved.report.cluster.startswith("inline")
