"""deploy/: the worker images install pyproject's pinned dependency set and nothing else, and the example
cluster configurations are valid distproc configurations (checked by building their job scripts)."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dask
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import distproc
from distproc.allocator import batch_worker_prologue
from distproc.cluster import get_backend
from distproc.cluster.jobqueue import JobqueueBackend

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGES = {"Dockerfile": DEPLOY / "Dockerfile", "Apptainer": DEPLOY / "distproc.def"}


def _key(requirement: Requirement) -> tuple[str, frozenset[str], str, str]:
    return (
        canonicalize_name(requirement.name),
        frozenset(requirement.extras),
        str(SpecifierSet(str(requirement.specifier))),
        str(requirement.marker or ""),
    )


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements_txt() -> list[Requirement]:
    lines = (DEPLOY / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_image_requirements_are_pyprojects_dependencies() -> None:
    project = _pyproject()
    expected = [
        Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["gateway"]]
    ]
    got = _requirements_txt()
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
    assert len(got) == len({canonicalize_name(r.name) for r in got}), "a package is listed twice"


def test_requirements_generator_agrees_with_the_file() -> None:
    spec = importlib.util.spec_from_file_location("make_requirements", DEPLOY / "make_requirements.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.requirements() == (DEPLOY / "requirements.txt").read_text(), (
        "deploy/requirements.txt is stale: run python deploy/make_requirements.py"
    )


def _pip_installs(text: str) -> list[list[str]]:
    """Every ``pip install`` command of a Dockerfile or Apptainer definition, as argument lists."""
    joined = re.sub(r"\\\n", " ", text)
    commands = []
    for part in re.split(r"&&|;|\n", joined):
        if "pip" not in part or "install" not in part or part.lstrip().startswith("#"):
            continue
        words = shlex.split(part, comments=True)
        commands.append(words[words.index("install") + 1 :])
    return commands


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_installs_only_the_pinned_set(image: str) -> None:
    text = IMAGES[image].read_text()
    installs = _pip_installs(text)
    assert len(installs) == 2, installs
    requirements, project = installs
    assert requirements[0] == "-r"
    assert requirements[1].endswith("/requirements.txt")
    assert requirements[2:] == ["-c", requirements[1].replace("requirements.txt", "constraints.txt")]
    assert project[0] == "--no-deps", "distproc itself must not resolve dependencies of its own"
    assert "deploy/requirements.txt" in text
    assert "pip check" in text
    (line,) = [ln for ln in text.splitlines() if "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=" in ln]
    (assignment,) = shlex.split(line.strip().removeprefix("ENV ").removeprefix("export "))
    name, value = assignment.split("=", 1)
    assert name == "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"
    assert ast.literal_eval(value) == {"MALLOC_TRIM_THRESHOLD_": None}  # as the batch job scripts set


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_python_satisfies_requires_python_and_matches_the_tests(image: str) -> None:
    text = IMAGES[image].read_text()
    match = re.search(r"ARG PYTHON_VERSION=(\d+\.\d+)", text) or re.search(r"From: python:(\d+\.\d+)", text)
    assert match, f"no Python version found in {IMAGES[image].name}"
    version = match.group(1)
    assert SpecifierSet(_pyproject()["requires-python"]).contains(f"{version}.0")
    # Workers must run the client's Python major.minor; the images default to the one CI tests with.
    assert version == "{}.{}".format(*sys.version_info[:2])


def test_constraints_file_is_valid_and_empty_by_default() -> None:
    lines = (DEPLOY / "constraints.txt").read_text().splitlines()
    assert all(not line.strip() or line.startswith("#") for line in lines)


# --- example configurations -------------------------------------------------------------------------

EXAMPLES = sorted((DEPLOY / "clusters").glob("*.yaml"))


def test_there_is_an_example_per_backend_family() -> None:
    assert {p.stem for p in EXAMPLES} == {"slurm", "pbs", "htcondor", "gateway"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_builds_its_backend(path: Path) -> None:
    config = distproc.load_config(path)
    assert isinstance(config.cluster, dict)
    options = dict(config.cluster)
    options.pop("interface", None)  # the examples' ib0 exists on the cluster, not here
    backend = get_backend(options.pop("kind"), **options)
    assert backend.name == path.stem
    if isinstance(backend, JobqueueBackend):
        script = backend.job_script()
        assert "MALLOC_TRIM_THRESHOLD_" in script
        assert str(options["python"]).split()[0] in script
        assert f"{options['cores']}" in script


def test_site_jobqueue_defaults_are_picked_up() -> None:
    site = yaml.safe_load((DEPLOY / "dask" / "jobqueue.yaml").read_text())["jobqueue"]
    values = {
        f"jobqueue.{kind}.{key}": value for kind, options in site.items() for key, value in options.items()
    }
    values["jobqueue.slurm.interface"] = None  # ib0 exists on the cluster, not here
    with dask.config.set(values):
        script = get_backend("slurm", jobs=10).job_script()
    assert "#SBATCH -p short" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "apptainer exec /project/images/distproc.sif python -m distributed.cli.dask_worker" in script
    lines = script.splitlines()
    assert lines.index(batch_worker_prologue()[-1]) < lines.index("export X509_USER_PROXY=~/.x509up")


def test_makefile_image_target_runs_the_build_script() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "image", "BASE_IMAGE=localhost/base:1", "IMAGE=me/distproc:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    want = ["deploy/build_image.sh", "-t", "me/distproc:1", "--base", "localhost/base:1"]
    assert done.stdout.split() == want
