"""Start and stop the test services (thin wrappers over ``slurm.sh`` and ``xrootd.sh`` beside this file).

Usable outside pytest too::

    python tests/services/services.py slurm start /tmp/slurm   # prints the SLURM_CONF to export
    python tests/services/services.py slurm stop /tmp/slurm
    python tests/services/services.py xrootd start /tmp/xrd 1094 file.root
    python tests/services/services.py xrootd stop /tmp/xrd
    python tests/services/services.py sge start /tmp/sge        # prints the environment to export
    python tests/services/services.py sge stop /tmp/sge

``start_gateway`` runs a dask-gateway server (``dask-gateway-server[local]``) whose clusters are local
processes, for the ``gateway`` back-end's tests.

The worker-image helpers (``install_container_tools`` … ``chroot_command``, over ``image.sh``) build
``deploy/Dockerfile`` with podman on a local Debian base and run programs from the image's file system
with chroot, where ``podman run`` cannot run containers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


class ServiceError(RuntimeError):
    """A service could not be installed or started; the message holds the script's output."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> None:
    cmd = ["bash", str(HERE / name), *args]
    try:
        done = subprocess.run(
            cmd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ServiceError(f"{' '.join(cmd)} did not finish within {timeout} s") from err
    if done.returncode != 0:
        raise ServiceError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


class _BatchSystem:
    """Waiting for a batch system's queue to empty; subclasses say how to list the jobs."""

    def jobs(self) -> list[str]:
        """Ids of the jobs in the queue (any state)."""
        raise NotImplementedError

    def wait_no_jobs(self, timeout: float = 30) -> list[str]:
        """Wait until the queue is empty (cancelled jobs linger briefly); return what is left."""
        deadline = time.monotonic() + timeout
        while (left := self.jobs()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


@dataclass
class Slurm(_BatchSystem):
    """A one-node Slurm cluster on localhost; client commands need :meth:`env`."""

    directory: Path

    @property
    def conf(self) -> Path:
        """The ``slurm.conf`` to export as ``SLURM_CONF``."""
        return self.directory / "slurm.conf"

    def env(self) -> dict[str, str]:
        """Environment for ``sbatch``/``squeue``/``scancel`` against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def command(self, *args: str) -> str:
        """Run a Slurm client command against this cluster and return its standard output."""
        done = subprocess.run(args, env=self.env(), capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs in ``squeue`` (any state)."""
        return self.command("squeue", "-h", "-o", "%i").split()

    def running_jobs(self) -> list[str]:
        """Ids of the running jobs."""
        return self.command("squeue", "-h", "-t", "RUNNING", "-o", "%i").split()


def start_slurm(directory: Path, *, cpus: int = 8, memory_mb: int = 8000) -> Slurm:
    """Install (if missing) and start munged, slurmctld and slurmd for a cluster kept in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {
        "SLURMCTLD_PORT": str(free_port()),
        "SLURMD_PORT": str(free_port()),
        "SLURM_NODE_CPUS": str(cpus),
        "SLURM_NODE_MEMORY_MB": str(memory_mb),
    }
    _script("slurm.sh", "start", str(directory), env=env)
    return Slurm(directory)


def stop_slurm(directory: Path) -> None:
    """Stop the daemons started for *directory* (by their pid files)."""
    _script("slurm.sh", "stop", str(directory), timeout=60)


@dataclass
class SGE(_BatchSystem):
    """A one-host Grid Engine cluster on localhost (queue ``all.q``); client commands need :meth:`env`."""

    directory: Path

    def variables(self) -> dict[str, str]:
        """``SGE_ROOT``, ``SGE_CELL`` and the ports, as ``sge.sh`` wrote them."""
        lines = (self.directory / "env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def env(self) -> dict[str, str]:
        """Environment for ``qsub``/``qstat``/``qdel`` against this cluster."""
        return {**os.environ, **self.variables()}

    def command(self, *args: str) -> str:
        """Run a Grid Engine client command and return its standard output."""
        done = subprocess.run(args, env=self.env(), capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    def jobs(self) -> list[str]:
        """Ids of every user's jobs in ``qstat``."""
        return [line.split()[0] for line in self.command("qstat", "-u", "*").splitlines()[2:]]


def start_sge(directory: Path, *, slots: int = 8) -> SGE:
    """Install (if missing) and start sge_qmaster and sge_execd; the client environment goes to
    *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    _script("sge.sh", "start", str(directory), env={"SGE_SLOTS": str(slots)}, timeout=600)
    return SGE(directory)


def stop_sge(directory: Path) -> None:
    """Stop the Grid Engine daemons."""
    _script("sge.sh", "stop", str(directory), timeout=60)


def install_torque_wrappers(directory: Path) -> Path:
    """Slurm's Torque wrappers (``qsub``, ``qstat``, ``qdel``) in ``directory/bin``; returns that."""
    _script("torque.sh", "install", str(directory), timeout=600)
    return directory / "bin"


@dataclass
class XRootD:
    """An XRootD server on localhost serving ``directory/data`` read-only and ``directory/scratch``
    writable."""

    directory: Path
    port: int

    @property
    def data(self) -> Path:
        """The served directory."""
        return self.directory / "data"

    def url(self, name: str) -> str:
        """The ``root://`` URL of the served file *name*."""
        return f"root://localhost:{self.port}/{self.data / name}"

    def scratch_url(self, name: str) -> str:
        """The ``root://`` URL of *name* in the writable directory."""
        return f"root://localhost:{self.port}/{self.directory / 'scratch' / name}"

    def stop(self) -> None:
        """Stop the server (the files stay)."""
        _script("xrootd.sh", "stop", str(self.directory), timeout=60)

    def start(self) -> None:
        """(Re)start the server on the same port and directory."""
        _script("xrootd.sh", "start", str(self.directory), str(self.port))


def start_xrootd(directory: Path, files: list[Path], port: int | None = None) -> XRootD:
    """Install (if missing) and start an XRootD server serving copies of *files*."""
    server = XRootD(directory, port or free_port())
    _script("xrootd.sh", "start", str(directory), str(server.port), *map(str, files))
    return server


_GATEWAY_CONFIG = """
import sys
from dask_gateway_server.options import Integer, Mapping, Options

c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.UnsafeLocalBackend.clusters_directory = "{directory}/clusters"
c.ClusterConfig.scheduler_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.worker_memory = "1 G"
c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2),
    Mapping("environment", {{}}),
    handler=lambda options: {{"worker_cores": options.worker_cores, "environment": options.environment}},
)
"""


@dataclass
class GatewayServer:
    """A dask-gateway server on localhost; its clusters run as local processes (testing only)."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """The gateway's public address (``cluster: {kind: gateway, address: ...}``)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the server (it shuts down its clusters)."""
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_gateway(directory: Path) -> GatewayServer:
    """Start ``python -m dask_gateway_server`` serving on a free port; wait until it is healthy."""
    import urllib.request

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "dask_gateway_config.py"
    config.write_text(_GATEWAY_CONFIG.format(api_port=free_port(), port=port, directory=directory))
    log = (directory / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "dask_gateway_server", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    server = GatewayServer(directory, port, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.address}/api/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise ServiceError(
        f"dask-gateway-server did not start:\n{(directory / 'gateway.log').read_text()[-3000:]}"
    )


#: The Python of an image built from deploy/Dockerfile (its virtual environment).
IMAGE_PYTHON = "/opt/distproc/venv/bin/python"


def install_container_tools() -> None:
    """Install podman and debootstrap (Debian packages) unless present."""
    _script("image.sh", "install", timeout=600)


def make_base_image(name: str) -> None:
    """Make the local base image *name* (debootstrap of this Debian release with python3) unless podman
    has it already."""
    _script("image.sh", "base", name, timeout=1200)


def download_wheels(directory: Path, requirements: Sequence[str], constraints: Path) -> None:
    """``pip download`` *requirements* (pip arguments) with *constraints* into *directory*, with this
    Python's pip: the wheels for an offline image build (``build_image.sh --wheels``)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(directory), "-c", str(constraints)]
    done = subprocess.run([*cmd, *requirements], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise ServiceError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def build_image(
    tag: str, *, base: str, wheels: Path | None = None, extra: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``deploy/build_image.sh`` with podman (chroot isolation) and return the finished process."""
    cmd = ["bash", str(REPO / "deploy" / "build_image.sh"), "-t", tag, "--base", base]
    if wheels is not None:
        cmd += ["--wheels", str(wheels)]
    env = {**os.environ, "CONTAINER_ENGINE": "podman", "BUILDAH_ISOLATION": "chroot"}
    return subprocess.run(
        [*cmd, "--", *extra], env=env, capture_output=True, text=True, timeout=1800, check=False
    )


def podman(*args: str, timeout: float = 300) -> str:
    """Run ``podman ARGS`` and return its standard output (``ServiceError`` when it fails)."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ServiceError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.strip()


@contextlib.contextmanager
def image_filesystem(image: str) -> Iterator[Path]:
    """The file system of a (never started) container of *image*, mounted: what ``podman run`` would
    give the container, writable, removed afterwards."""
    container = podman("create", image)
    try:
        yield Path(podman("mount", container))
    finally:
        podman("umount", container)
        podman("rm", container)


def unpack_image(image: str, directory: Path) -> Path:
    """Unpack *image* into *directory* as the README shows (``podman export`` of a created container)."""
    directory.mkdir(parents=True, exist_ok=True)
    container = podman("create", image)
    try:
        with subprocess.Popen(["podman", "export", container], stdout=subprocess.PIPE) as export:
            subprocess.run(["tar", "-x", "-C", str(directory)], stdin=export.stdout, check=True, timeout=600)
        if export.returncode != 0:
            raise ServiceError(f"podman export {container} failed ({export.returncode})")
    finally:
        podman("rm", container)
    return directory


def chroot_command(root: Path, binds: Sequence[Path], *command: str) -> list[str]:
    """The command running *command* inside *root* (chroot, host network) with *binds* at their paths:
    the stand-in for ``apptainer exec --bind ... ROOT command``."""
    return ["bash", str(HERE / "image.sh"), "exec", str(root), ":".join(map(str, binds)), "--", *command]


def main(argv: list[str]) -> int:
    """Command-line entry: ``services.py slurm|xrootd|sge start|stop DIR [PORT FILE...]``."""
    if len(argv) < 3 or argv[0] not in ("slurm", "xrootd", "sge") or argv[1] not in ("start", "stop"):
        sys.stderr.write(__doc__ or "")
        return 2
    service, action, directory = argv[0], argv[1], Path(argv[2])
    if service == "sge" and action == "start":
        sys.stdout.write("".join(f"export {k}={v}\n" for k, v in start_sge(directory).variables().items()))
    elif service == "sge":
        stop_sge(directory)
    elif service == "slurm" and action == "start":
        sys.stdout.write(f"export SLURM_CONF={start_slurm(directory).conf}\n")
    elif service == "slurm":
        stop_slurm(directory)
    elif action == "start":
        port = int(argv[3]) if len(argv) > 3 else None
        server = start_xrootd(directory, [Path(f) for f in argv[4:]], port)
        sys.stdout.write(f"serving {server.data} at root://localhost:{server.port}/\n")
    else:
        XRootD(directory, 0).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
