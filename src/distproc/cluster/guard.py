"""A worker plugin that checks the versions of workers joining a cluster while distproc uses it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from distproc.cluster.versions import CHECKED_PACKAGES, exact_pins, package_versions, version_problems

__all__ = ("VersionGuard",)

logger = logging.getLogger(__name__)


class VersionGuard(WorkerPlugin):
    """Turns away workers that join during a run (batch jobs starting late, adaptive scaling) with
    package versions incompatible with the client's: the worker logs why and closes, with its nanny,
    before it runs a task. :func:`distproc.cluster.open_client` registers it for the time it is open.

    Examples
    --------
    >>> from distproc.cluster.guard import VersionGuard
    >>> VersionGuard().name
    'distproc-version-guard'
    """

    name = "distproc-version-guard"

    def __init__(self, names: Iterable[str] = CHECKED_PACKAGES) -> None:
        self.client_versions = package_versions(names)
        self.exact = exact_pins()

    def setup(self, worker: Any) -> None:
        names = [n for n in self.client_versions if n != "python"]
        problems = version_problems(worker.address, package_versions(names), self.client_versions, self.exact)
        if problems:
            logger.error(
                "distproc: this worker's packages are incompatible with the client's; closing it:\n%s",
                "\n".join(problems),
            )
            worker.loop.add_callback(worker.close, nanny=True, reason="distproc-incompatible-versions")
