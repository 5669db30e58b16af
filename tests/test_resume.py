"""Checkpoints and resume with real processes: ``distproc run`` interrupted (SIGINT, SIGTERM, SIGKILL, its
scheduler killed), rerun, and compared bin for bin with a fault-free run; outputs published as a set."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import distproc
from distproc.engine.checkpoint import checkpoint_status, open_checkpoint

pytestmark = pytest.mark.cluster

SLOW = Path(__file__).parent / "procs" / "slow.py"
PARTITIONS = 16


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "distproc.cli", *args]


def cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli_command(*args), capture_output=True, text=True, timeout=600, check=False, cwd=cwd, **kwargs
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A sample of 16 partitions, a config whose processor sleeps 0.25 s per partition, a reference run."""
    from distproc.samples import make_sample

    root = tmp_path_factory.mktemp("resume")
    make_sample("ttbar", 8000, root / "sample", seed=3, events_per_file=4000)
    config = root / "run.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        processor: {{class: {SLOW}:SlowJets, args: {{delay: 0.25}}}}
        fileset: {{tt: {{files: {{"sample/*.root": Events}}}}}}
        cluster: {{kind: local, workers: 1}}
        chunksize: 500
        cache_dir: cache
        progress: false
        """)
    )
    done = cli("run", str(config), "--output", "reference", "--no-checkpoint", cwd=root)
    assert done.returncode == 0, done.stderr
    return root, config, distproc.load(root / "reference")


def _wait_for(checkpoint: Path, done: int, proc: subprocess.Popen) -> None:
    """Wait until *done* partitions are in *checkpoint* (the run is then mid-way)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (checkpoint / "meta.json").exists() and checkpoint_status(checkpoint)[0] >= done:
            return
        time.sleep(0.1)
    pytest.fail(f"the run never had {done} partitions in {checkpoint} (exit status {proc.poll()})")


def _assert_equal_to_reference(out: Path, reference: distproc.RunResult) -> distproc.RunResult:
    result = distproc.load(out)
    h, ref = result.output["jet_pt"], reference.output["jet_pt"]
    np.testing.assert_array_equal(h.values(), ref.values())
    np.testing.assert_array_equal(h.variances(), ref.variances())
    assert result.output["events"] == reference.output["events"] == 8000
    assert result.report.events == 8000
    assert not result.partial
    return result


def _resume_and_check(root: Path, config: Path, out: Path, reference: distproc.RunResult) -> None:
    """Rerun; it must read the checkpointed partitions, process only the others, and match the reference."""
    done_before, planned = checkpoint_status(out / ".checkpoint")
    assert 0 < done_before < planned == PARTITIONS
    status = cli("status", str(out), cwd=root)
    assert status.returncode == 0
    assert f"{done_before} of {PARTITIONS} partitions done, {PARTITIONS - done_before} left" in status.stdout
    again = cli("run", str(config), "--output", str(out), cwd=root)
    assert again.returncode == 0, again.stderr
    result = _assert_equal_to_reference(out, reference)
    assert result.report.resumed_partitions == done_before
    assert checkpoint_status(out / ".checkpoint") == (PARTITIONS, PARTITIONS)
    assert len(list((out / ".checkpoint" / "entries").iterdir())) == 1  # one entry for the whole run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes(setup, signum):
    root, config, reference = setup
    out = root / f"out-{signum.name}"
    proc = subprocess.Popen(
        _cli_command("run", str(config), "--output", str(out)), cwd=root, stderr=subprocess.PIPE, text=True
    )
    _wait_for(out / ".checkpoint", 4, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "rerun the same command to resume" in stderr
    assert not (out / "report.json").exists()
    _resume_and_check(root, config, out, reference)


def test_killed_client_resumes(setup):
    """SIGKILL of the client and of its local workers (a batch job killed): nothing is cleaned up."""
    root, config, reference = setup
    out = root / "out-kill"
    proc = subprocess.Popen(
        _cli_command("run", str(config), "--output", str(out)), cwd=root, start_new_session=True
    )
    _wait_for(out / ".checkpoint", 4, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    _resume_and_check(root, config, out, reference)


def _start_cluster(root: Path, name: str) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    """An external ``dask scheduler`` and one ``dask worker`` process; returns them and the address."""
    file = root / f"{name}-scheduler.json"
    file.unlink(missing_ok=True)
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen(
        [*dask, "--port", "0", "--scheduler-file", str(file), "--no-dashboard"], cwd=root
    )
    deadline = time.monotonic() + 60
    while not file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(file.read_text())["address"]
    worker_cmd = [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        address,
        "--nthreads",
        "1",
        "--no-dashboard",
    ]
    worker = subprocess.Popen(worker_cmd, cwd=root)
    return scheduler, worker, address


def test_dead_scheduler_resumes(setup):
    root, config, reference = setup
    out = root / "out-scheduler"
    scheduler, worker, address = _start_cluster(root, "first")
    try:
        proc = subprocess.Popen(
            _cli_command("run", str(config), "--output", str(out), "--scheduler", address),
            cwd=root,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(out / ".checkpoint", 4, proc)
        scheduler.kill()
        _, stderr = proc.communicate(timeout=300)
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait()
    assert proc.returncode == 3, stderr
    assert "rerun to resume" in stderr
    scheduler, worker, address = _start_cluster(root, "second")
    try:
        done_before = checkpoint_status(out / ".checkpoint")[0]
        again = cli("run", str(config), "--output", str(out), "--scheduler", address, cwd=root)
        assert again.returncode == 0, again.stderr
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait()
    result = _assert_equal_to_reference(out, reference)
    assert result.report.resumed_partitions == done_before > 0


def test_checkpoint_of_another_processor_is_refused_then_fresh_ignores_it(setup):
    root, config, reference = setup
    out = root / "out-foreign"
    other = distproc.load_processor(f"{SLOW}:SlowJets", {"delay": 0.5})
    open_checkpoint(out / ".checkpoint", other, {"schema": "nanoaod", "chunksize": 500})
    refused = cli("run", str(config), "--output", str(out), cwd=root)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"checkpoint {out / '.checkpoint'} was made by another processor" in lines[0]
    assert "--fresh" in lines[0]
    fresh = cli("run", str(config), "--output", str(out), "--fresh", cwd=root)
    assert fresh.returncode == 0, fresh.stderr
    assert _assert_equal_to_reference(out, reference).report.resumed_partitions == 0


def test_checkpoint_directory_that_is_a_file(setup):
    root, config, _ = setup
    (root / "ckpt-file").write_text("not a directory")
    done = cli("run", str(config), "--output", "out-file", "--checkpoint", "ckpt-file", cwd=root)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: checkpoint ckpt-file is a file, not a directory: give another --checkpoint or remove it"
    )


def test_unwritable_output_directory_fails_before_the_run(setup):
    root, config, _ = setup
    (root / "plain-file").write_text("")
    done = cli("run", str(config), "--output", "plain-file/out", cwd=root)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: output directory plain-file/out cannot be written: Not a directory")


def _limit_file_size() -> None:
    """In the child: files may not grow past 4 kB (a full disk for histograms.root); writes fail with
    EFBIG instead of the signal."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_full_disk_keeps_the_previous_outputs_and_a_rerun_publishes(setup):
    root, config, reference = setup
    out = root / "out-full"
    first = cli("run", str(config), "--output", str(out), "--max-chunks", "2", cwd=root)
    assert first.returncode == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in ("histograms.root", "output.pkl", "report.json")}
    full = cli("run", str(config), "--output", str(out), cwd=root, preexec_fn=_limit_file_size)
    assert full.returncode == 3, full.stderr
    assert f"the outputs could not be written to {out}" in full.stderr
    assert {name: (out / name).read_bytes() for name in before} == before  # the previous set, intact
    assert [p.name for p in (out / ".outputs").iterdir() if p.name.startswith("run-")] == [
        os.readlink(out / ".outputs" / "current")
    ]
    assert checkpoint_status(out / ".checkpoint") == (PARTITIONS, PARTITIONS)  # the result is kept
    again = cli("run", str(config), "--output", str(out), cwd=root)
    assert again.returncode == 0, again.stderr
    assert _assert_equal_to_reference(out, reference).report.resumed_partitions == PARTITIONS


def test_report_counts_lost_workers_and_reexecuted_partitions(setup):
    """A worker process dies mid-run: the run completes, equal to the reference, and the report says
    one worker was lost and which partitions ran twice."""
    import threading

    from distproc.cluster import open_client

    root, _, reference = setup
    proc = distproc.load_processor(f"{SLOW}:SlowJets", {"delay": 0.25})
    fileset = {"tt": {"files": {str(root / "sample" / "*.root"): "Events"}}}
    with open_client(workers=2) as client:
        victim = sorted(client.run(os.getpid))[0]
        ckpt = root / "ledger-ckpt"

        def kill_when_started() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (ckpt / "meta.json").exists() and checkpoint_status(ckpt)[0] >= 4:
                    # The worker has run (and holds) partitions; its connection closes as it dies.
                    with contextlib.suppress(OSError):
                        client.run(os._exit, 1, workers=[victim])
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        result = distproc.run(proc, fileset, cluster=client, chunksize=500, checkpoint=ckpt, progress=False)
        killer.join()
    np.testing.assert_array_equal(result.output["jet_pt"].values(), reference.output["jet_pt"].values())
    assert result.output["events"] == 8000
    assert result.report.workers_lost == 1
    assert result.report.reexecuted_partitions, "the dead worker's partitions ran again"
    assert all(n == 2 for n in result.report.reexecuted_partitions.values())
    assert all(label.startswith("tt: ") for label in result.report.reexecuted_partitions)


def test_checkpoint_that_cannot_be_written_is_reported_and_the_run_completes(setup):
    """The checkpoint's directory goes away mid-run (replaced by a file): every entry written after that
    fails on its worker; the run's output is still complete, and the client warns how many entries
    were not written, and why."""
    import shutil
    import threading

    from distproc.cluster import open_client

    root, _, reference = setup
    proc = distproc.load_processor(f"{SLOW}:SlowJets", {"delay": 0.25})
    fileset = {"tt": {"files": {str(root / "sample" / "*.root"): "Events"}}}
    ckpt = root / "broken-ckpt"

    def break_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (ckpt / "meta.json").exists() and checkpoint_status(ckpt)[0] >= 2:
                shutil.rmtree(ckpt / "entries")
                (ckpt / "entries").write_text("not a directory")
                return
            time.sleep(0.02)

    with open_client(workers=1) as client:
        breaker = threading.Thread(target=break_checkpoint)
        breaker.start()
        with pytest.warns(
            RuntimeWarning, match=r"checkpoint entries could not be written to .*broken-ckpt"
        ) as got:
            result = distproc.run(
                proc, fileset, cluster=client, chunksize=500, checkpoint=ckpt, progress=False
            )
        breaker.join()
    assert (ckpt / "entries").is_file(), "the checkpoint was broken before the run ended"
    [warning] = [w for w in got if "checkpoint entries" in str(w.message)]
    assert "(first: entry " in str(warning.message)
    assert "Error" in str(warning.message)  # the reason (NotADirectoryError, FileNotFoundError)
    assert not result.report.failures
    np.testing.assert_array_equal(result.output["jet_pt"].values(), reference.output["jet_pt"].values())
    assert result.output["events"] == 8000
