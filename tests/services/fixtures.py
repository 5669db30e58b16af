"""Session fixtures starting real services, loaded by ``tests/conftest.py`` (``pytest_plugins``).

``slurm_cluster``
    A one-node Slurm cluster on localhost (munged, slurmctld, slurmd; Debian packages installed when
    missing), with ``SLURM_CONF`` exported for the session so dask-jobqueue's ``sbatch`` reaches it.
``xrootd_server``
    An XRootD server on localhost serving copies of the NanoAOD samples ``nano_dy.root`` and
    ``nano_tt_v12.root``.
``gateway_server``
    A dask-gateway server on localhost whose clusters are local processes (skipped when
    ``dask-gateway-server[local]`` is not installed).
``sge_cluster``
    A one-host Grid Engine cluster on localhost (Debian's gridengine packages, installed when
    missing), with its client environment (``SGE_ROOT``, ...) exported for the session.
``torque_commands``
    Slurm's Torque wrappers (``qsub``/``qstat``/``qdel`` of ``slurm-wlm-torque``) first on ``PATH`` for
    the session, submitting to ``slurm_cluster``: the ``pbs`` back-end's batch system.
``worker_image``
    The worker image built from ``deploy/Dockerfile`` by ``deploy/build_image.sh`` with podman, on a
    local Debian base image (debootstrap; no registry needed), offline from wheels ``pip download``-ed
    with this environment's versions as constraints. podman keeps both images, so a later session
    reuses the base and the build's cached layers.

Each starts only when a test that uses it is selected, and is stopped at the end of the session. When a
service cannot be installed or started (not root, no package mirror), its tests are skipped with the
reason — except under CI (``CI`` set), where that is a failure.

On a fresh machine the Debian packages (and the image's debootstrapped base) take minutes to install.
As root, once the tests are collected, what the selected tests' services need is installed in the
background (:func:`pytest_collection_finish`) while the tests before them run; each service fixture
waits for that head start before starting its service, which then finds its packages installed. The head
start only gets ahead: where it fails, each service's own install step runs and reports as before.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .services import (
    REPO,
    SGE,
    GatewayServer,
    ServiceError,
    Slurm,
    XRootD,
    build_image,
    download_wheels,
    install_container_tools,
    install_torque_wrappers,
    make_base_image,
    start_gateway,
    start_sge,
    start_slurm,
    start_xrootd,
    stop_sge,
    stop_slurm,
)

__all__ = (
    "gateway_server",
    "sge_cluster",
    "slurm_cluster",
    "torque_commands",
    "worker_image",
    "xrootd_server",
)


#: Local names of the test images (podman's local storage; nothing is pushed anywhere).
BASE_IMAGE = "localhost/distproc-test-base:debian"
WORKER_IMAGE = "localhost/distproc-test-worker:latest"

#: ``(script, action...)`` of the installs each service fixture needs, for the head start
#: (``torque_commands`` uses ``slurm_cluster``'s).
_INSTALLS: dict[str, list[tuple[str, ...]]] = {
    "slurm_cluster": [("slurm.sh", "install")],
    "sge_cluster": [("sge.sh", "install")],
    "xrootd_server": [("xrootd.sh", "install")],
    "worker_image": [("image.sh", "install"), ("image.sh", "base", BASE_IMAGE)],
}
_head_start: subprocess.Popen[bytes] | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """As root, install the selected tests' services in the background, one after another (apt's lock
    is one at a time), its output in a temporary log."""
    global _head_start
    if os.geteuid() != 0 or session.config.option.collectonly:
        return
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    steps = list(dict.fromkeys(step for name in _INSTALLS if name in used for step in _INSTALLS[name]))
    if not steps:
        return
    here = Path(__file__).resolve().parent
    script = "; ".join(shlex.join(["bash", str(here / step[0]), *step[1:]]) for step in steps)
    fd, _ = tempfile.mkstemp(prefix="distproc-services-install-", suffix=".log")
    try:
        _head_start = subprocess.Popen(
            ["bash", "-c", script], stdout=fd, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        os.close(fd)


def _after_head_start() -> None:
    """Wait for the background install (if any) so that a service's own install finds it done."""
    if _head_start is not None:
        # past the timeout, the service's own install step waits for apt's lock and reports
        with contextlib.suppress(subprocess.TimeoutExpired):
            _head_start.wait(timeout=1800)


def _unavailable(what: str, reason: str) -> None:
    message = f"{what} unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        _unavailable(what, "starting it needs root (the tests install Debian packages and switch users)")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Slurm]:
    """A running one-node Slurm cluster; ``SLURM_CONF`` points at it for the whole session."""
    _need_root("Slurm")
    _after_head_start()
    directory = Path(tempfile.mkdtemp(prefix="distproc-slurm-"))
    try:
        slurm = start_slurm(directory)
    except ServiceError as err:
        stop_slurm(directory)
        _unavailable("Slurm", str(err))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(slurm.conf))
        try:
            yield slurm
        finally:
            left = slurm.jobs()
            if left:
                slurm.command("scancel", *left)
            stop_slurm(directory)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sge_cluster() -> Iterator[SGE]:
    """A running one-host Grid Engine cluster; its client environment is set for the whole session."""
    _need_root("Grid Engine")
    _after_head_start()
    directory = Path(tempfile.mkdtemp(prefix="distproc-sge-"))
    try:
        sge = start_sge(directory)
    except ServiceError as err:
        stop_sge(directory)
        _unavailable("Grid Engine", str(err))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in sge.variables().items():
            mp.setenv(name, value)
        try:
            yield sge
        finally:
            left = sge.jobs()
            if left:
                sge.command("qdel", *left)
            stop_sge(directory)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def torque_commands(slurm_cluster: Slurm) -> Iterator[Path]:
    """The directory of Slurm's Torque wrappers, first on ``PATH`` for the tests of one module.

    Not for the session: the wrappers' ``qsub``/``qstat`` would shadow Grid Engine's in the ``sge`` tests.
    """
    directory = Path(tempfile.mkdtemp(prefix="distproc-torque-"))
    try:
        bin_dir = install_torque_wrappers(directory)
    except ServiceError as err:
        _unavailable("Slurm's Torque wrappers (slurm-wlm-torque)", str(err))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        try:
            yield bin_dir
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def xrootd_server(nano_dy: Path, nano_tt: Path) -> Iterator[XRootD]:
    """A running XRootD server serving ``nano_dy.root`` and ``nano_tt_v12.root``."""
    _need_root("XRootD")
    _after_head_start()
    directory = Path(tempfile.mkdtemp(prefix="distproc-xrootd-"))
    try:
        server = start_xrootd(directory, [nano_dy, nano_tt])
    except ServiceError as err:
        XRootD(directory, 0).stop()
        _unavailable("XRootD", str(err))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A running dask-gateway server (clusters as local processes)."""
    pytest.importorskip("dask_gateway", reason="the gateway tests need dask-gateway")
    pytest.importorskip("dask_gateway_server", reason="the gateway tests need dask-gateway-server[local]")
    pytest.importorskip("sqlalchemy", reason="the gateway tests need dask-gateway-server[local]")
    try:
        server = start_gateway(tmp_path_factory.mktemp("gateway"))
    except ServiceError as err:
        _unavailable("dask-gateway", str(err))
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class WorkerImage:
    """A built worker image, its base image, and the wheel directory it was installed from."""

    name: str
    base: str
    wheels: Path


@pytest.fixture(scope="session")
def worker_image(tmp_path_factory: pytest.TempPathFactory) -> WorkerImage:
    """The worker image built from ``deploy/Dockerfile`` with this environment's package versions."""
    _need_root("podman")
    _after_head_start()
    directory = tmp_path_factory.mktemp("image")
    wheels = directory / "wheels"
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints = directory / "client-versions.txt"
    constraints.write_text("".join(f"{line}\n" for line in freeze.splitlines() if " @ " not in line))
    try:
        install_container_tools()
        build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
        requirements = ["-r", str(REPO / "deploy" / "requirements.txt"), *build_system]
        # Both mostly wait for the network: the wheels download while debootstrap runs.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            download = pool.submit(download_wheels, wheels, requirements, constraints)
            make_base_image(BASE_IMAGE)
            download.result()
    except ServiceError as err:
        _unavailable("podman image build", str(err))
    build = build_image(WORKER_IMAGE, base=BASE_IMAGE, wheels=wheels)
    assert build.returncode == 0, f"deploy/build_image.sh failed:\n{build.stdout[-5000:]}\n{build.stderr}"
    return WorkerImage(WORKER_IMAGE, BASE_IMAGE, wheels)
