"""The worker image as a tested artefact: built from ``deploy/Dockerfile`` (``worker_image`` fixture), its
file system used by real dask workers, directly and as an unpacked directory, and the build's and the
version check's errors.

``podman run`` cannot start containers in distproc's test sandbox, so workers run from the image's file
system with chroot and the host's network (``tests/services/image.sh exec``) — what Apptainer does with
an unpacked image on a batch node. The workers run the image's Python (Debian's 3.11), not the tests'.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shlex
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster
from services.services import (
    IMAGE_PYTHON,
    build_image,
    chroot_command,
    download_wheels,
    image_filesystem,
    podman,
    unpack_image,
)
from test_slurm import _run, _slurm, assert_same_histograms, fileset, local_reference

import distproc
from distproc.cluster import open_client
from distproc.exceptions import ClusterError

pytestmark = [
    pytest.mark.image,
    # The image's Python is Debian's 3.11.x, the tests' another 3.11.y: distributed warns about the patch
    # release; distproc's own check (major.minor) is what decides and is asserted below.
    pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning"),
]

__all__ = ("fileset", "local_reference")  # test_slurm's fixtures, used here

CHUNKSIZE = 50  # dy: 1 partition, tt: 4
#: A dask-histogram release other than the pinned one, for the image with one pin changed.
OTHER_DASK_HISTOGRAM = "2025.2.0"


@contextlib.contextmanager
def scheduler() -> Iterator[LocalCluster]:
    """A scheduler on loopback with no workers of its own."""
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster


@contextlib.contextmanager
def chroot_workers(root: Path, address: str, binds: list[Path], n: int) -> Iterator[list[Any]]:
    """*n* ``dask worker`` processes running from the file system *root* against *address*."""
    processes = []
    try:
        for i in range(n):
            worker = [IMAGE_PYTHON, "-m", "distributed.cli.dask_worker", address, "--name", f"image-{i}"]
            worker += ["--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60"]
            processes.append(subprocess.Popen(chroot_command(root, binds, *worker)))
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@contextlib.contextmanager
def image_workers(image: str, binds: list[Path], n: int) -> Iterator[str]:
    """A scheduler and *n* workers running from *image*'s file system; yields the scheduler address."""
    with (
        image_filesystem(image) as root,
        scheduler() as cluster,
        chroot_workers(root, cluster.scheduler_address, binds, n),
        Client(cluster) as client,
    ):
        client.wait_for_workers(n, timeout=120)
        yield cluster.scheduler_address


def _worker_script_dirs(address: str) -> set[str]:
    """Each worker's ``bin`` directory (``sysconfig``'s ``scripts`` path, in its environment)."""
    with Client(address) as client:
        return set(client.run(sysconfig.get_path, "scripts").values())


def test_image_workers_pass_the_version_check_and_equal_local_run(
    worker_image: Any,
    fileset: dict[str, list[str]],
    local_reference: dict[str, Any],
    nano_dy: Path,
    tmp_path: Path,
) -> None:
    with image_workers(worker_image.name, [nano_dy.parent], 2) as address:
        # open_client checks the workers' versions: the image's agree with the tests' environment.
        with open_client(address) as client:
            versions = distproc.cluster.check_worker_versions(client)
        result = _run(address, fileset, tmp_path, chunksize=CHUNKSIZE)
        bins = _worker_script_dirs(address)
    assert bins == {str(Path(IMAGE_PYTHON).parent)}, "the workers did not run the image's Python"
    assert len(versions) == 2
    assert {v["distproc"] for v in versions.values()} == {distproc.__version__}
    assert not result.report.failures
    assert_same_histograms(result.output, local_reference)
    assert result.output["partitions"] == {"dy": 1, "tt": 4}
    assert len(result.output["workers"]) == 2


@pytest.fixture
def unpacked_image(worker_image: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The worker image unpacked into a plain directory, as on a shared file system."""
    directory = unpack_image(worker_image.name, tmp_path_factory.mktemp("unpacked") / "distproc")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slurm
def test_unpacked_image_directory_is_the_batch_workers_python(
    unpacked_image: Path,
    slurm_cluster: Any,
    fileset: dict[str, list[str]],
    local_reference: dict[str, Any],
    nano_dy: Path,
    tmp_path: Path,
) -> None:
    """``python: <launcher> /path/to/unpacked python`` in the cluster options, as a site would write
    ``python: apptainer exec /cvmfs/.../distproc python``; the chroot launcher stands in for Apptainer."""
    certificates = tmp_path / "tls"  # the run's TLS files: on the "shared file system" the image sees
    certificates.mkdir(mode=0o700)
    python = shlex.join(chroot_command(unpacked_image, [nano_dy.parent, certificates], IMAGE_PYTHON))
    options = _slurm(slurm_cluster, jobs=1, python=python, shared_temp_directory=str(certificates))
    result = _run(options, fileset, tmp_path, chunksize=CHUNKSIZE)
    assert not result.report.failures
    assert_same_histograms(result.output, local_reference)
    assert "SLURMCluster" in result.report.cluster
    assert slurm_cluster.wait_no_jobs() == []


@pytest.fixture(scope="module")
def image_with_other_pin(worker_image: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The worker image plus a layer that installs another dask-histogram (pinned ``==`` by distproc)."""
    directory = tmp_path_factory.mktemp("other-pin")
    wheels = directory / "wheels"
    download_wheels(wheels, ["--no-deps", f"dask-histogram=={OTHER_DASK_HISTOGRAM}"], Path("/dev/null"))
    (directory / "Containerfile").write_text(
        f"FROM {worker_image.name}\n"
        "RUN python -m pip install --no-deps --no-index --find-links /wheels "
        f"dask-histogram=={OTHER_DASK_HISTOGRAM}\n"
    )
    name = "localhost/distproc-test-other-pin:latest"
    podman("build", "--isolation", "chroot", "--volume", f"{wheels}:/wheels:ro", "-t", name, str(directory))
    try:
        yield name
    finally:
        podman("rmi", name)


def test_image_with_another_pinned_version_is_refused(
    image_with_other_pin: str, nano_dy: Path, fileset: dict[str, list[str]], tmp_path: Path
) -> None:
    mine = importlib.metadata.version("dask-histogram")
    assert mine != OTHER_DASK_HISTOGRAM
    with (
        image_workers(image_with_other_pin, [nano_dy.parent], 1) as address,
        pytest.raises(ClusterError) as refused,
    ):
        _run(address, fileset, tmp_path, chunksize=CHUNKSIZE)
    message = str(refused.value)
    assert f"dask-histogram {OTHER_DASK_HISTOGRAM}, client has dask-histogram {mine}" in message
    assert "needs ==" in message
    assert "1 incompatible package version(s)" in message  # nothing else in the image differs


def test_build_without_the_base_image_names_the_step(worker_image: Any) -> None:
    missing = "localhost/distproc-no-such-base:0"
    build = build_image("localhost/distproc-test-never-built:0", base=missing, wheels=worker_image.wheels)
    assert build.returncode != 0
    assert "failed at step 1/" in build.stderr
    assert f"FROM {missing}" in build.stderr
    assert f"the base image {missing} is not present locally and could not be pulled" in build.stderr


def test_build_with_a_failing_pip_install_names_the_step(worker_image: Any, tmp_path: Path) -> None:
    """An offline build from a wheel directory without the pinned packages: pip fails in the
    dependency step (no layer cache, so the step really runs)."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    never = "localhost/distproc-test-never-built:0"
    build = build_image(never, base=worker_image.base, wheels=empty, extra=["--layers=false"])
    assert build.returncode != 0
    step = "RUN python -m pip install -r /opt/distproc/requirements.txt -c /opt/distproc/constraints.txt"
    assert f": {step}" in build.stderr.splitlines()[-2]
    assert "pip could not install deploy/requirements.txt" in build.stderr
    assert "No matching distribution found for" in build.stdout
    assert not podman("images", "-q", never)
