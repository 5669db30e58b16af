"""Cluster back-ends: registry, options and their errors, job scripts of every batch system (no batch
system needed, as in dask-jobqueue's own tests), unreachable schedulers and gateways, TLS, and the
worker version check against real worker processes."""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dask
import pytest

import distproc
from distproc.allocator import batch_worker_prologue
from distproc.cluster import backend_names, check_worker_versions, get_backend, open_client

HERE = Path(__file__).resolve().parent
PROCESSOR = f"{HERE / 'services' / 'muon_processor.py'}:MuonPt"
UNSET_LINE, MALLOC_LINE = batch_worker_prologue()
BATCH_KINDS = ("slurm", "pbs", "sge", "lsf", "htcondor")


@pytest.fixture
def fileset(nano_dy: Path) -> dict[str, list[str]]:
    return {"dy": [str(nano_dy)]}


# --- registry and options ---------------------------------------------------------------------------


def test_every_backend_is_registered() -> None:
    assert set(backend_names()) == {"local", "address", "gateway", "inline", *BATCH_KINDS}


def test_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(distproc.ConfigError, match=r"unknown cluster kind 'slurmm'") as info:
        get_backend("slurmm")
    message = str(info.value)
    assert "Did you mean 'slurm'" in message
    for kind in backend_names():
        assert repr(kind) in message
    assert info.value.key == "cluster.kind"


def test_unknown_kind_fails_before_anything_starts(fileset: dict[str, list[str]], tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(distproc.ConfigError, match="Available kinds: 'address', 'gateway', 'htcondor'"):
        distproc.run(
            lambda events: {},
            fileset,
            cluster={"kind": "kubernetes"},
            progress=False,
            cache_dir=str(tmp_path),
        )
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("kind", BATCH_KINDS)
def test_missing_cores_shows_an_example_block(kind: str) -> None:
    with pytest.raises(distproc.ConfigError, match=f"cluster kind '{kind}' needs option 'cores'") as info:
        get_backend(kind, memory="2GB", disk="1GB") if kind == "htcondor" else get_backend(kind, memory="2GB")
    assert f"cluster: {{kind: {kind}, cores: 1, memory: 2GB" in str(info.value)
    assert f"jobqueue.{kind}.cores" in str(info.value)
    assert info.value.key == "cluster.cores"


def test_missing_memory_and_htcondor_disk() -> None:
    with pytest.raises(distproc.ConfigError, match="needs option 'memory'"):
        get_backend("slurm", cores=1)
    block = r"(?s)needs option 'disk'.*kind: htcondor, cores: 1, memory: 2GB, disk: 4GB"
    with pytest.raises(distproc.ConfigError, match=block):
        get_backend("htcondor", cores=1, memory="2GB")


def test_required_options_fall_back_to_dask_jobqueue_config() -> None:
    config = {
        "jobqueue.slurm.cores": 3,
        "jobqueue.slurm.memory": "6GB",
        "jobqueue.slurm.queue": "from-config",
        "jobqueue.slurm.job-script-prologue": ["module load root"],
    }
    with dask.config.set(config):
        script = get_backend("slurm").job_script()
    assert "#SBATCH --cpus-per-task=3" in script
    assert "#SBATCH -p from-config" in script
    lines = script.splitlines()
    assert lines.index(UNSET_LINE) < lines.index(MALLOC_LINE) < lines.index("module load root")


def test_bad_option_values_are_config_errors() -> None:
    with pytest.raises(distproc.ConfigError, match=r"unknown option 'walltimee'.*Did you mean 'walltime'"):
        get_backend("slurm", cores=1, memory="2GB", walltimee="1:00:00")
    with pytest.raises(distproc.ConfigError, match=r"htcondor' has no option 'walltime'.*MaxRuntime"):
        get_backend("htcondor", cores=1, memory="2GB", disk="1GB", walltime="01:00:00")
    with pytest.raises(distproc.ConfigError, match=r"either jobs .* or minimum_jobs/maximum_jobs"):
        get_backend("pbs", cores=1, memory="2GB", jobs=2, maximum_jobs=4)
    with pytest.raises(distproc.ConfigError, match="'partition' and 'queue' mean the same thing"):
        get_backend("slurm", cores=1, memory="2GB", partition="a", queue="b")
    with pytest.raises(distproc.ConfigError, match="dask-jobqueue rejected"):
        get_backend("slurm", cores=1, memory="lots").job_script()


def test_yaml_cluster_block_builds_the_backend(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "processor: proc.py:P\nfileset: {dy: [dy.root]}\n"
        "cluster: {kind: slurm, cores: 2, memory: 4GB, partition: short, jobs: 3}\n"
    )
    cluster = dict(distproc.load_config(config).cluster)
    backend = get_backend(cluster.pop("kind"), **cluster)
    assert backend.config["queue"] == "short"
    assert backend.config["jobs"] == 3
    assert "#SBATCH -p short" in backend.job_script()


# --- job scripts of every batch system ------------------------------------------------------------

PROLOGUE = "source /opt/venv/bin/activate"


def _options(kind: str) -> dict[str, object]:
    options: dict[str, object] = {
        "cores": 2,
        "memory": "4GB",
        "job_script_prologue": [PROLOGUE],
        "log_directory": "/scratch/logs",
        "python": "/opt/venv/bin/python",
        "local_directory": "/tmp/dask-spill",
    }
    if kind == "htcondor":
        options.update(disk="2GB", job_extra_directives={"+MaxRuntime": 5400, "accounting_group": "phys"})
    else:
        options.update(walltime="01:30:00", queue="short", account="phys")
    if kind == "slurm":
        options["job_extra_directives"] = ["--exclusive"]
    return options


EXPECTED = {
    "slurm": [
        "#SBATCH -p short",
        "#SBATCH -A phys",
        "#SBATCH -t 01:30:00",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=4G",
        "#SBATCH --exclusive",
        "#SBATCH -e /scratch/logs/",
    ],
    "pbs": ["#PBS -q short", "#PBS -A phys", "#PBS -l walltime=01:30:00", "ncpus=2"],
    "sge": ["#$ -q short", "#$ -P phys", "#$ -l h_rt=01:30:00"],
    "lsf": ["#BSUB -q short", '#BSUB -P "phys"', "#BSUB -W 01:30", "#BSUB -n 2", "#BSUB -M 4000000"],
    "htcondor": [
        "MY.DaskWorkerCores = 2",
        "MY.DaskWorkerMemory = 4000000000",
        "MY.DaskWorkerDisk = 2000000000",
        "+MaxRuntime = 5400",
        "accounting_group = phys",
        "LogDirectory = /scratch/logs",
    ],
}


@pytest.mark.parametrize("kind", BATCH_KINDS)
def test_job_script_has_every_option(kind: str) -> None:
    script = get_backend(kind, **_options(kind)).job_script()
    for expected in EXPECTED[kind]:
        assert expected in script, f"{expected!r} missing from the {kind} script:\n{script}"
    assert "/opt/venv/bin/python -m distributed.cli.dask_worker" in script
    assert "--local-directory /tmp/dask-spill" in script
    if kind == "htcondor":
        # HTCondor runs the prologue in the worker's command line, with its own quote doubling.
        assert (
            "export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=''{\"\"MALLOC_TRIM_THRESHOLD_\"\": None}''"
            in script
        )
        assert script.index("MALLOC_TRIM") < script.index(PROLOGUE) < script.index("dask_worker")
        assert "-c 'unset MALLOC_TRIM_THRESHOLD_; export" in script
    else:
        lines = script.splitlines()
        assert lines.index(UNSET_LINE) < lines.index(MALLOC_LINE) < lines.index(PROLOGUE) < len(lines) - 1


def test_malloc_prologue_removes_the_nannys_trim_threshold() -> None:
    """Run the job-script lines in a shell whose environment has the variable (as a job inherits it from
    a client process where a nanny ran), then ask a real nanny what its worker process would get."""
    code = (
        "import os, distributed\nfrom distributed.nanny import _get_env_variables\n"
        "env = {**os.environ, **_get_env_variables('distributed.nanny.pre-spawn-environ')}\n"
        "print(env.get('MALLOC_TRIM_THRESHOLD_', 'unset'), env.get('OMP_NUM_THREADS'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["MALLOC_TRIM_THRESHOLD_"] = "65536"
    prologue = "\n".join(batch_worker_prologue())
    shell = f"{prologue}\n{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    with_lines = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, check=True)
    env.pop("MALLOC_TRIM_THRESHOLD_")
    without = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert without.stdout.split() == ["65536", "1"]
    assert with_lines.stdout.split() == ["unset", "1"]  # the rest of the nanny's environment is kept


# --- unreachable clusters ---------------------------------------------------------------------------


def _worker_settings(dask_worker: Any) -> tuple[str | None, str, float, str]:
    return (
        os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        dask.config.get("distributed.worker.profile.interval"),
        dask_worker._tick_interval,  # what the worker's event-loop tick really runs at, in seconds
        dask.config.get("distributed.admin.system-monitor.interval"),
    )


@pytest.mark.cluster
def test_local_workers_get_the_allocator_and_quieter_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # so only the nanny could set it
    with get_backend("local", workers=1).client() as client:
        assert list(client.run(_worker_settings).values()) == [(None, "100ms", 0.5, "1s")]
        assert client.cluster.scheduler._tick_interval == 0.5
    mine = {"distributed.worker.profile.interval": "20ms", "distributed.admin.tick.interval": "50ms"}
    with dask.config.set(mine), get_backend("local", workers=1).client() as client:
        # a user's own choices stay
        assert list(client.run(_worker_settings).values()) == [(None, "20ms", 0.05, "1s")]


def test_unreachable_scheduler_fails_within_its_timeout(
    fileset: dict[str, list[str]], tmp_path: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(
        distproc.ClusterError, match=r"no Dask scheduler answered at 'tcp://127.0.0.1:1' within 2 s"
    ):
        distproc.run(
            lambda events: {},
            fileset,
            cluster={"kind": "address", "address": "tcp://127.0.0.1:1", "timeout": 2},
            progress=False,
            cache_dir=str(tmp_path),
        )
    assert time.monotonic() - start < 10


def test_unreachable_gateway_is_a_cluster_error() -> None:
    pytest.importorskip("dask_gateway")
    start = time.monotonic()
    with (
        pytest.raises(distproc.ClusterError, match="gateway"),
        open_client({"kind": "gateway", "address": "http://127.0.0.1:1", "start_timeout": 5}),
    ):
        pass
    assert time.monotonic() - start < 30


def test_gateway_without_dask_gateway_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_gateway", None)
    with (
        pytest.raises(distproc.ClusterError, match=r"pip install 'distproc\[gateway\]'"),
        open_client("gateway"),
    ):
        pass


def _gateway(server: Any) -> dict[str, Any]:
    """The cluster option of a one-worker cluster of the test gateway *server*."""
    return {
        "kind": "gateway",
        "address": server.address,
        "auth": "basic",
        "workers": 1,
        "cluster_options": {"worker_cores": 1},
        "start_timeout": 120,
    }


@pytest.mark.cluster
def test_gateway_run_equals_local_files_and_shuts_its_cluster_down(
    gateway_server, fileset: dict[str, list[str]], tmp_path: Path
) -> None:
    from dask_gateway import Gateway

    cluster = _gateway(gateway_server)
    result = distproc.run(
        distproc.load_processor(PROCESSOR), fileset, cluster=cluster, progress=False, cache_dir=str(tmp_path)
    )
    assert result.output["events"] == {"dy": 40}
    assert "GatewayCluster" in result.report.cluster
    assert set(result.output["malloc_trim_threshold"]) == {"unset"}  # via the gateway's environment option
    gateway = Gateway(gateway_server.address, auth="basic")
    try:
        assert gateway.list_clusters() == []
    finally:
        gateway.close()
        del gateway._loop_runner  # dask-gateway's __del__ would close it again and raise
    with pytest.raises(distproc.ConfigError, match=r"no cluster option 'worker_gpus'.*'worker_cores'"):
        distproc.run(
            lambda events: {},
            fileset,
            cluster={**cluster, "cluster_options": {"worker_gpus": 1}},
            progress=False,
            cache_dir=str(tmp_path),
        )


@pytest.mark.cluster
def test_gateway_runs_dask_mode_as_coffea(gateway_server, nano_dy: Path, tmp_path: Path) -> None:
    """``mode="dask"`` on a gateway cluster: a coffea dask-awkward processor's outputs as coffea's
    ``apply_to_fileset`` + ``dask.compute`` give them on the same steps."""
    from coffea.nanoevents import NanoAODSchema
    from test_dask_mode import PROCS, _coffea, _preprocess, assert_same

    fileset = _preprocess({"dy": {"files": {str(nano_dy): "Events"}}}, step_size=20)
    processor = distproc.load_processor(f"{PROCS}:MuonCutflow")
    cluster = _gateway(gateway_server)
    result = distproc.run(
        processor, fileset, mode="dask", cluster=cluster, progress=False, cache_dir=str(tmp_path)
    )
    assert not result.report.failures, result.report.failures[0].traceback
    assert "GatewayCluster" in result.report.cluster
    assert result.report.datasets["dy"].partitions == 2
    assert_same(result.output, _coffea(processor, fileset, NanoAODSchema))
    assert result.output["dy"]["cutflow"]["all"] == 40


# --- real workers -----------------------------------------------------------------------------------


def _shim(directory: Path, versions: dict[str, str]) -> Path:
    """A directory that, first on PYTHONPATH, makes installed-package metadata report *versions*."""
    for name, version in versions.items():
        info = directory / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return directory


@pytest.fixture
def scheduler():
    """A scheduler without workers (in this process); tests attach real worker processes to it."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, dashboard_address=":0", processes=True) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _start_worker(
    address: str, pythonpath: Path | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard"]
    stderr = log.open("wb") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


@pytest.mark.cluster
@pytest.mark.parametrize("package", ["distproc", "dask"])
def test_worker_with_another_version_is_refused(
    scheduler, package: str, tmp_path: Path, fileset: dict[str, list[str]]
) -> None:
    from importlib.metadata import version

    mine = version(package)
    numpy_patch = version("numpy").rsplit(".", 1)[0] + ".999"  # same major.minor: compatible
    worker = _start_worker(
        scheduler.scheduler.address, _shim(tmp_path / "shim", {package: "9999.0.0", "numpy": numpy_patch})
    )
    try:
        scheduler.wait_for_workers(1, timeout=60)
        address = next(iter(scheduler.scheduler_info()["workers"]))
        with pytest.raises(distproc.ClusterError) as info:
            distproc.run(
                distproc.load_processor(PROCESSOR),
                fileset,
                cluster=scheduler.scheduler.address,
                progress=False,
                cache_dir=str(tmp_path),
            )
        message = str(info.value)
        assert f"worker {address}: {package} 9999.0.0, client has {package} {mine}" in message
        assert "numpy" not in message
        with pytest.raises(distproc.ClusterError, match=f"{package} 9999.0.0"), open_client(scheduler):
            pass  # a Client passed in is checked too
    finally:
        worker.terminate()
        worker.wait(30)


def test_a_worker_on_another_python_minor_is_named() -> None:
    # A real worker on another interpreter needs a second Python with the whole stack (an image of its
    # own); the rule and the message are checked here, the refusal of a real worker above.
    from distproc.cluster.versions import package_versions, version_problems

    mine = package_versions(["distproc"])
    major, minor, _ = mine["python"].split(".")
    other = {**mine, "python": f"{major}.{int(minor) + 1}.0"}
    patch = {**mine, "python": f"{major}.{minor}.999"}
    (line,) = version_problems("tcp://w:1", other, mine, {"distproc"})
    assert f"python {major}.{int(minor) + 1}.0, client has python {mine['python']}" in line
    assert "same major.minor" in line
    assert version_problems("tcp://w:1", patch, mine, {"distproc"}) == []


@pytest.mark.cluster
def test_compatible_workers_pass_and_report_versions(scheduler) -> None:
    worker = _start_worker(scheduler.scheduler.address)
    try:
        scheduler.wait_for_workers(1, timeout=60)
        versions = check_worker_versions(scheduler)
        (reported,) = versions.values()
        assert reported["distproc"] == distproc.__version__
    finally:
        worker.terminate()
        worker.wait(30)


# --- TLS --------------------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for 127.0.0.1 (made with the openssl command line)."""
    directory.mkdir()
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "key.pem", "c.csr", "cert.pem"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(command: str) -> None:
        subprocess.run(["openssl", *command.split()], check=True, capture_output=True)

    run(f"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=distproc-ca -keyout {ca_key} -out {ca}")
    run(f"req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout {key} -out {csr}")
    run(f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1 -extfile {ext} -out {cert}")
    return ca, cert, key


@pytest.mark.cluster
def test_tls_scheduler_with_certificates(tmp_path: Path, fileset: dict[str, list[str]]) -> None:
    if not any((Path(p) / "openssl").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("the openssl command is needed to make test certificates")
    from distributed import LocalCluster
    from distributed.security import Security

    ca, cert, key = _certificates(tmp_path / "tls")
    security = Security(
        tls_ca_file=str(ca),
        tls_scheduler_cert=str(cert),
        tls_scheduler_key=str(key),
        tls_worker_cert=str(cert),
        tls_worker_key=str(key),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
        require_encryption=True,
    )
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        protocol="tls",
        host="127.0.0.1",
        security=security,
        dashboard_address=":0",
    ) as cluster:
        options = {"kind": "address", "address": cluster.scheduler_address, "timeout": 20}
        assert options["address"].startswith("tls://")
        tls = {"tls_ca_file": str(ca), "tls_cert": str(cert), "tls_key": str(key)}
        result = distproc.run(
            distproc.load_processor(PROCESSOR),
            fileset,
            cluster={**options, **tls},
            progress=False,
            cache_dir=str(tmp_path),
        )
        assert result.output["events"] == {"dy": 40}
        with pytest.raises(distproc.ConfigError, match="'tls_ca_file' is not set"):
            distproc.run(lambda events: {}, fileset, cluster=options, progress=False, cache_dir=str(tmp_path))


@pytest.mark.cluster
def test_incompatible_worker_joining_later_is_turned_away(scheduler, tmp_path: Path) -> None:
    from importlib.metadata import version

    address = scheduler.scheduler.address
    shim = _shim(tmp_path / "shim", {"distproc": "9999.0.0"})
    workers = [_start_worker(address)]
    try:
        scheduler.wait_for_workers(1, timeout=60)
        with open_client(scheduler) as client:
            with open_client(client):  # nested, as distproc.run(cluster=client) is: leaves the guard on
                pass
            late = _start_worker(address, shim, log=tmp_path / "late.log")
            workers.append(late)
            assert late.wait(timeout=120) is not None  # the worker closed itself, and its nanny
            log = (tmp_path / "late.log").read_text()
            assert f"distproc 9999.0.0, client has distproc {version('distproc')} (needs ==" in log
            workers.append(_start_worker(address))  # a compatible latecomer stays
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
        # the guard leaves with distproc: a scheduler distproc no longer uses takes any worker
        workers.append(_start_worker(address, shim))
        scheduler.wait_for_workers(3, timeout=60)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)


# --- per-run TLS: options, certificate files, job scripts, the local cluster -------------------------


def _assert_rejected(tmp_path: Path, options: dict[str, Any], key: str, *fragments: str) -> None:
    """*options* fail both as a run YAML's cluster block through the CLI (exit status 2, one line naming
    the option and the file) and as Python arguments (a ConfigError whose key is *key*)."""
    from click.testing import CliRunner

    from distproc.cli.main import main

    config = tmp_path / "run.yaml"
    config.write_text(f"processor: proc.py:P\nfileset: {{dy: [dy.root]}}\ncluster: {json.dumps(options)}\n")
    result = CliRunner().invoke(main, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ")
    for fragment in (*fragments, key.split(".")[-1], "run.yaml"):
        assert fragment in line
    kind = options.pop("kind")
    with pytest.raises(distproc.ConfigError, match=re.escape(fragments[0])) as info:
        get_backend(kind, **options)
    assert info.value.key == key


def test_security_maybe_is_a_config_error(tmp_path: Path) -> None:
    options = {"kind": "slurm", "cores": 1, "memory": "1GB", "security": "maybe"}
    _assert_rejected(tmp_path, options, "cluster.security", "security must be true or false, got 'maybe'")


def test_protocol_tpc_is_a_config_error(tmp_path: Path) -> None:
    options = {"kind": "local", "protocol": "tpc"}
    _assert_rejected(
        tmp_path,
        options,
        "cluster.protocol",
        "protocol must be 'tls' or 'tcp', got 'tpc'",
        "Did you mean 'tcp'",
    )
    with pytest.raises(distproc.ConfigError, match="security: true contradicts protocol: tcp"):
        get_backend("slurm", cores=1, memory="1GB", security=True, protocol="tcp")


def test_certificate_directory_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    options = {"kind": "sge", "cores": 1, "memory": "1GB", "shared_temp_directory": str(missing)}
    _assert_rejected(tmp_path, options, "cluster.shared_temp_directory", f"'{missing}' does not exist")


def test_certificate_directory_that_is_not_writable_is_a_config_error(tmp_path: Path) -> None:
    # /sys is a directory nobody may create files in, root included (a chmod'ed directory would not stop
    # root, which the service tests run as).
    options = {
        "kind": "htcondor",
        "cores": 1,
        "memory": "1GB",
        "disk": "1GB",
        "shared_temp_directory": "/sys",
    }
    _assert_rejected(tmp_path, options, "cluster.shared_temp_directory", "'/sys' is not writable")


def test_security_module_examples() -> None:
    from distproc.cluster import security

    result = doctest.testmod(security)
    assert result.attempted >= 4
    assert result.failed == 0


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in [directory, *directory.iterdir()]}


def test_certificate_files_are_private_and_removed_also_after_an_error(tmp_path: Path) -> None:
    from distproc.cluster.security import certificate_files

    with certificate_files(tmp_path) as security:
        (run_dir,) = tmp_path.iterdir()
        assert run_dir.name.startswith("distproc-tls-")
        assert _modes(run_dir) == {run_dir.name: 0o700, "cert.pem": 0o600, "key.pem": 0o600}
        assert security.tls_worker_key == str(run_dir / "key.pem")
        assert "PRIVATE KEY" in Path(security.tls_worker_key).read_text()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="the run failed"), certificate_files(tmp_path):
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_certificate_files_are_removed_when_the_process_is_interrupted(tmp_path: Path, sig: str) -> None:
    import signal

    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from distproc.cluster.security import certificate_files\n"
        "with certificate_files(Path(sys.argv[1])) as s:\n"
        "    print(s.tls_worker_key, flush=True)\n"
        "    time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    key = Path(child.stdout.readline().strip())
    assert key.exists()
    child.send_signal(getattr(signal, sig))
    assert child.wait(60) != 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", BATCH_KINDS)
def test_job_scripts_start_workers_over_tls_with_the_runs_certificate(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTPROC_CACHE_DIR", str(tmp_path / "cache"))
    options = _options(kind)
    del options["log_directory"]
    (tmp_path / "shared").mkdir()
    script = get_backend(kind, **options, shared_temp_directory=str(tmp_path / "shared")).job_script()
    for flag in ("--protocol tls://", " tls://", "--tls-ca-file", "--tls-cert", "--tls-key"):
        assert flag in script, f"{flag!r} missing from the {kind} script:\n{script}"
    assert f"--tls-key {tmp_path / 'shared'}/distproc-tls-" in script
    assert "tcp://" not in script
    assert list((tmp_path / "shared").iterdir()) == []  # the throw-away certificate is gone
    # Job logs go to distproc's cache directory, not the current one.
    logs = tmp_path / "cache" / "logs"
    assert str(logs) in script
    assert logs.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("options", [{"security": False}, {"protocol": "tcp"}])
def test_tls_can_be_turned_off_with_a_warning(options: dict[str, Any], tmp_path: Path) -> None:
    backend = get_backend("slurm", cores=1, memory="1GB", log_directory=str(tmp_path), **options)
    with pytest.warns(distproc.cluster.InsecureClusterWarning, match="anyone who can reach") as record:
        script = backend.job_script()
    # Only the one warning of ours: distributed may add its own (e.g. "Port 8787 is already in use").
    assert [w.category for w in record].count(distproc.cluster.InsecureClusterWarning) == 1
    assert "tls://" not in script
    assert "--tls" not in script
    assert " tcp://" in script


def test_address_backend_warns_about_plain_tcp_to_another_machine() -> None:
    from distributed.utils import get_ip

    ip = get_ip()  # this machine's address on its network: nobody listens on port 1 there
    if ip.startswith("127."):
        pytest.skip("this machine has no network address besides loopback")
    cluster = {"kind": "address", "address": f"tcp://{ip}:1", "timeout": 2}
    with (
        pytest.warns(distproc.cluster.InsecureClusterWarning, match=r"unencrypted.*address: tls://HOST"),
        pytest.raises(distproc.ClusterError, match="no Dask scheduler answered"),
        open_client(cluster),
    ):
        pass


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    """(IP, port) of every TCP socket in the LISTEN state that one of *pids* holds (/proc/net/tcp{,6})."""
    import ipaddress

    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # a descriptor closed meanwhile
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
            found.add((str(ip), int(hex_port, 16)))
    return found


@pytest.mark.cluster
def test_local_cluster_listens_on_loopback_and_only_to_its_certificate() -> None:
    from distributed import Client
    from distributed.security import Security

    with get_backend("local", workers=2).client() as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        workers = client.scheduler_info()["workers"]
        pids = [os.getpid(), *client.run(os.getpid).values()]
        listening = _listening(pids)
        ports = {port for _, port in listening}
        dashboard = int(client.dashboard_link.split(":")[2].split("/")[0])
        wanted = {int(address.rsplit(":", 1)[1]), dashboard, *(int(w.rsplit(":", 1)[1]) for w in workers)}
        assert wanted <= ports  # the scheduler, its dashboard and the workers were all found
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        # Without the run's certificate: refused, whether plain TCP or TLS with another CA's certificate.
        with pytest.raises(OSError, match=r"closed|reset|Timed out"):
            Client(address.replace("tls://", "tcp://"), timeout=5).close()
        with pytest.raises(OSError, match="TLS certificate does not match"):
            Client(address, security=Security.temporary(), timeout=5).close()
        # In this process, the cluster's address (cluster="tls://...", --scheduler) uses its certificate.
        with open_client(address) as again:
            assert again.submit(sum, [1, 2]).result() == 3
