"""Worker start-up validation: do the workers run the package versions this client runs?

A processor is pickled on the client and unpickled on the workers, and partial outputs travel back; a
worker with another coffea, awkward or dask fails in confusing ways deep inside a task, or silently
builds different objects. :func:`check_worker_versions` compares each worker's versions with the
client's right after connecting and raises a :class:`~distproc.exceptions.ClusterError` naming the
worker, the package and both versions.

Versions are read from installed package metadata (what ``pip`` installed), never by importing.
Packages distproc pins exactly (``==`` in its dependency list) and distproc itself must match exactly;
the others, and Python, must agree on ``major.minor``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from distproc.exceptions import ClusterError

__all__ = ("CHECKED_PACKAGES", "check_worker_versions", "exact_pins", "package_versions", "version_problems")

#: Distributions compared between client and workers (those whose code or objects run on both sides).
CHECKED_PACKAGES: tuple[str, ...] = (
    "distproc",
    "dask",
    "distributed",
    "dask-awkward",
    "dask-histogram",
    "coffea",
    "awkward",
    "uproot",
    "numpy",
    "hist",
    "boost-histogram",
    "cloudpickle",
    "correctionlib",
)


def package_versions(names: Iterable[str] = CHECKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in *names* (``None`` if absent), plus ``python``.

    Runs on the client and, through :meth:`distributed.Client.run`, on every worker.

    Examples
    --------
    >>> from distproc.cluster.versions import package_versions
    >>> package_versions(["distproc"])["distproc"]
    '0.1.0'
    """
    return dict(_installed_versions(tuple(names)))


@functools.lru_cache(maxsize=8)
def _installed_versions(names: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    """Read once per process: each lookup scans every distribution on ``sys.path`` (about 100 ms on a
    worker's event loop), and a process keeps the code it imported whatever is installed later."""
    out: dict[str, str | None] = {"python": "{}.{}.{}".format(*sys.version_info[:3])}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return tuple(out.items())


def exact_pins() -> set[str]:
    """Distributions distproc pins with ``==`` (plus distproc itself): these must match exactly."""
    exact = {"distproc"}
    try:
        requires = importlib.metadata.requires("distproc") or []
    except importlib.metadata.PackageNotFoundError:
        return exact
    for line in requires:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==", line)
        if match and "extra ==" not in line:
            exact.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return exact


def _release(version: str, parts: int) -> tuple[str, ...]:
    return tuple(re.split(r"[.+]", version)[:parts])


def _compatible(name: str, client: str, worker: str, exact: set[str]) -> bool:
    if name in exact:
        return client == worker
    return _release(client, 2) == _release(worker, 2)


def _mismatches(
    client_versions: Mapping[str, str | None], worker_versions: Mapping[str, str | None], exact: set[str]
) -> list[tuple[str, str | None, str]]:
    found = []
    for name, mine in client_versions.items():
        if mine is None:
            continue  # not installed here: nothing to compare with
        theirs = worker_versions.get(name)
        if theirs is None or not _compatible(name, mine, theirs, exact):
            found.append((name, theirs, mine))
    return found


def version_problems(
    worker: str, versions: Any, mine: Mapping[str, str | None], exact: set[str]
) -> list[str]:
    """One line per incompatible package of *worker* (*versions* may be the exception it raised)."""
    if isinstance(versions, BaseException):
        return [f"  - worker {worker}: could not report versions: {versions!r}"]
    lines = []
    for name, worker_version, client_version in _mismatches(mine, versions, exact):
        rule = "==" if name in exact else "same major.minor as"
        shown = "not installed" if worker_version is None else worker_version
        lines.append(
            f"  - worker {worker}: {name} {shown}, client has {name} {client_version} "
            f"(needs {rule} {client_version})"
        )
    return lines


def check_worker_versions(client: Any, names: Iterable[str] = CHECKED_PACKAGES) -> dict[str, dict[str, Any]]:
    """Raise :class:`ClusterError` if a connected worker runs incompatible package versions.

    Every worker connected now is asked for :func:`package_versions` and compared with this process.
    Returns the worker versions (``{worker address: {package: version}}``) when all are compatible.
    Workers that join later are checked by :class:`distproc.cluster.guard.VersionGuard`.

    Examples
    --------
    >>> from distributed import Client
    >>> from distproc.cluster.versions import check_worker_versions
    >>> with Client(n_workers=1) as client:  # doctest: +SKIP
    ...     check_worker_versions(client)
    """
    names = tuple(names)
    mine = package_versions(names)
    theirs = client.run(package_versions, names, on_error="return")
    exact = exact_pins()
    problems = [line for w, v in sorted(theirs.items()) for line in version_problems(w, v, mine, exact)]
    if problems:
        msg = (
            f"{len(problems)} incompatible package version(s) on the cluster's workers:\n"
            + "\n".join(problems)
            + "\nWorkers must run the client's pinned environment: build the worker image from deploy/ "
            "(pip install the same distproc), or point the cluster's `python` option at an environment "
            "with these versions."
        )
        raise ClusterError(msg)
    return theirs
