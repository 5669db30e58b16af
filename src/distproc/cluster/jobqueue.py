"""Batch systems through dask-jobqueue: ``slurm``, ``pbs``, ``sge``, ``lsf`` and ``htcondor``.

:class:`JobqueueBackend` holds everything; each batch system is a thin subclass naming its dask-jobqueue
cluster class, like dask-jobqueue's own ``SLURMJob``/``SLURMCluster`` pair. distproc never writes a batch
script: dask-jobqueue does, and options left unset (``None``) fall back to dask's ``jobqueue.<kind>``
configuration exactly as dask-jobqueue does (``~/.config/dask/jobqueue.yaml``, ``DASK_JOBQUEUE__...``).

A new batch system is a few lines::

    @register
    class MoabBackend(JobqueueBackend):
        name = "moab"
        cluster_class = "MoabCluster"
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from distproc.allocator import batch_worker_prologue
from distproc.cluster.base import ClusterBackend, register
from distproc.cluster.security import (
    TLS_OPTIONS,
    certificate_files,
    check_directory,
    is_loopback,
    private_directory,
    registered,
    use_tls,
    warn_insecure,
)
from distproc.exceptions import ClusterError, ConfigError

__all__ = (
    "HTCondorBackend",
    "JobqueueBackend",
    "LSFBackend",
    "PBSBackend",
    "SGEBackend",
    "SlurmBackend",
)

#: Options every dask-jobqueue kind accepts (``None``: dask-jobqueue's configuration decides).
_COMMON: dict[str, Any] = {
    "cores": None,  # cores per job (required here or in jobqueue.<kind>.cores)
    "memory": None,  # memory per job, e.g. "4GB" (required here or in jobqueue.<kind>.memory)
    "processes": None,  # worker processes per job (dask-jobqueue's default: about sqrt(cores))
    "walltime": None,
    "queue": None,
    "account": None,
    "job_extra_directives": None,  # extra header lines (HTCondor: a mapping of submit-file keys)
    "job_directives_skip": None,
    "job_script_prologue": None,  # shell lines run before the worker starts (module load, source venv)
    "interface": None,  # network interface of the scheduler and workers (e.g. ib0, lo)
    "local_directory": None,
    "log_directory": None,  # job logs (default: jobqueue.<kind>.log-directory, else <cache dir>/logs)
    "python": None,  # the workers' Python (default: this Python)
    "death_timeout": None,
    "worker_extra_args": None,
    "scheduler_options": None,
    # distproc's own
    "jobs": None,  # fixed number of jobs (default 1 unless adaptive)
    "minimum_jobs": None,  # adaptive scaling between these bounds
    "maximum_jobs": None,
    "start_timeout": 600,  # seconds to wait for the first worker to join (null: wait forever)
    # TLS with the run's own certificate (see distproc.cluster.security), whose files for the workers
    # go in shared_temp_directory (default: jobqueue.<kind>.shared-temp-directory, else <cache dir>/tls)
    **TLS_OPTIONS,
    "shared_temp_directory": None,
}
#: Options that are distproc's, not dask-jobqueue keyword arguments.
_OWN = ("jobs", "minimum_jobs", "maximum_jobs", "start_timeout", *TLS_OPTIONS, "shared_temp_directory")
#: Where the scheduler's dashboard listens unless ``scheduler_options`` say otherwise: this machine only
#: (reach it through an SSH tunnel); dask-jobqueue's default is every interface.
_DASHBOARD = "127.0.0.1:8787"


class JobqueueBackend(ClusterBackend):
    """A dask-jobqueue cluster: workers are batch jobs of ``cores`` cores and ``memory`` memory.

    ``jobs`` jobs are submitted (default 1), or, with ``minimum_jobs``/``maximum_jobs``, the cluster
    scales adaptively between them. The first worker must join within ``start_timeout`` seconds. All
    jobs are cancelled when the run ends.

    Subclasses set :attr:`name` and :attr:`cluster_class` (a class of :mod:`dask_jobqueue`), and may
    rename options (:attr:`renamed`), drop those the batch system lacks (:attr:`unsupported`, option →
    hint) or add their own (:attr:`extra_options`).
    """

    cluster_class: ClassVar[str]
    renamed: ClassVar[dict[str, str]] = {}
    unsupported: ClassVar[dict[str, str]] = {}
    extra_options: ClassVar[dict[str, Any]] = {}
    required = ("cores", "memory")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        common = {k: v for k, v in _COMMON.items() if k not in cls.unsupported}
        cls.options = {**common, **cls.extra_options}
        if "example" not in cls.__dict__:
            cls.example = f"cluster: {{kind: {cls.name}, cores: 1, memory: 2GB}}"

    def __init__(self, **options: Any) -> None:
        for option, hint in self.unsupported.items():
            if options.get(option) is not None:
                msg = f"cluster kind {self.name!r} has no option {option!r}: {hint}"
                raise ConfigError(msg, key=f"cluster.{option}")
        super().__init__(**options)
        adaptive = self.config["minimum_jobs"] is not None or self.config["maximum_jobs"] is not None
        if adaptive and self.config["jobs"] is not None:
            msg = (
                "give either jobs (a fixed number) or minimum_jobs/maximum_jobs (adaptive), not both; "
                f"for example\n    cluster: {{kind: {self.name}, cores: 1, memory: 2GB, maximum_jobs: 20}}"
            )
            raise ConfigError(msg, key="cluster.jobs")
        self.tls = use_tls(self.name, self.config["security"], self.config["protocol"])
        shared = self._configured("shared_temp_directory") if self.tls else None
        self._shared = check_directory(shared, "cluster.shared_temp_directory") if shared else None

    @property
    def config_name(self) -> str:
        """The dask-jobqueue configuration section (``jobqueue.<config_name>``)."""
        return self.name

    def _configured(self, option: str) -> Any:
        """The option's value, else dask's ``jobqueue.<kind>.<option>`` (``None`` when neither is set)."""
        import dask
        import dask_jobqueue  # noqa: F401  (registers the jobqueue.* defaults)

        value = self.config[option]
        if value is None:
            value = dask.config.get(f"jobqueue.{self.config_name}.{option.replace('_', '-')}", None)
        return value

    def _missing_required(self, merged: dict[str, Any]) -> list[str]:
        import dask
        import dask_jobqueue  # noqa: F401  (registers the jobqueue.* defaults)

        return [
            k
            for k in self.required
            if merged.get(k) is None and dask.config.get(f"jobqueue.{self.config_name}.{k}", None) is None
        ]

    def _missing_hint(self, option: str) -> str:
        return f" (or jobqueue.{self.config_name}.{option} in the dask configuration)"

    def job_log_directory(self) -> str:
        """Where the batch system writes the jobs' output: ``log_directory``, else dask's
        ``jobqueue.<kind>.log-directory``, else ``logs`` in distproc's cache directory (created, mode
        0700) — never the current directory."""
        from distproc.partitioning import default_cache_dir

        return str(self._configured("log_directory") or private_directory(default_cache_dir() / "logs"))

    def certificate_directory(self) -> Path:
        """Where the run's certificate directory is made: ``shared_temp_directory``, else dask's
        ``jobqueue.<kind>.shared-temp-directory``, else ``tls`` in distproc's cache directory (created,
        mode 0700). It must be on a file system the worker nodes see."""
        from distproc.partitioning import default_cache_dir

        return self._shared or private_directory(default_cache_dir() / "tls")

    def _scheduler_options(self) -> dict[str, Any]:
        return {"dashboard_address": _DASHBOARD, **(self._configured("scheduler_options") or {})}

    def cluster_kwargs(self, security: Any = None) -> dict[str, Any]:
        """Keyword arguments for the dask-jobqueue cluster class (unset options left out).

        With *security* (a :class:`distributed.security.Security` whose worker parts are files) the
        scheduler and workers use ``tls://`` with it.
        """
        kwargs = {
            self.renamed.get(k, k): v
            for k, v in self.config.items()
            if k not in _OWN and v is not None and k != "job_script_prologue"
        }
        prologue = self._configured("job_script_prologue") or []
        if isinstance(prologue, str):
            prologue = [prologue]
        kwargs["job_script_prologue"] = [*batch_worker_prologue(), *prologue]
        kwargs["log_directory"] = self.job_log_directory()
        kwargs["scheduler_options"] = self._scheduler_options()
        if security is not None:
            kwargs.update(security=security, protocol="tls://")
        elif self.config["protocol"] is not None:
            kwargs["protocol"] = "tcp://"
        return kwargs

    @contextlib.contextmanager
    def make_cluster(self) -> Iterator[Any]:
        """The dask-jobqueue cluster, not yet scaled (its scheduler runs in this process), with the run's
        certificate; on exit the cluster is closed (its jobs cancelled) and the certificate files removed.

        Examples
        --------
        >>> from distproc.cluster import get_backend
        >>> backend = get_backend("slurm", cores=1, memory="2GB", walltime="01:00:00")
        >>> with backend.make_cluster() as cluster:  # doctest: +SKIP
        ...     print(cluster.job_script())
        """
        import dask_jobqueue

        cls = getattr(dask_jobqueue, self.cluster_class)
        with contextlib.ExitStack() as stack:
            security = None
            if self.tls:
                security = stack.enter_context(certificate_files(self.certificate_directory()))
            else:
                warn_insecure(self.name)
            try:
                cluster = cls(**self.cluster_kwargs(security))
            except (TypeError, ValueError) as err:
                msg = f"dask-jobqueue rejected the {self.name!r} cluster options {self!r}: {err}"
                raise ConfigError(msg, key="cluster") from err
            with cluster, registered(cluster.scheduler_address, security):
                yield cluster

    def job_script(self) -> str:
        """The batch script one worker job would be submitted with (starts no job; with TLS, the
        certificate files it names are a throw-away pair, removed on return)."""
        with self.make_cluster() as cluster:
            return str(cluster.job_script())

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import dask
        from distributed import Client

        # A dashboard on this machine only: its link names localhost, not the scheduler's interface.
        host = str(self._scheduler_options()["dashboard_address"]).rpartition(":")[0]
        link = dask.config.get("distributed.dashboard.link")
        local_link = {"distributed.dashboard.link": link.replace("{host}", "localhost")}
        with dask.config.set(local_link if is_loopback(host) else {}), self.make_cluster() as cluster:
            if self.config["minimum_jobs"] is not None or self.config["maximum_jobs"] is not None:
                cluster.adapt(
                    minimum_jobs=self.config["minimum_jobs"] or 0,
                    maximum_jobs=self.config["maximum_jobs"] or self.config["minimum_jobs"],
                )
            else:
                cluster.scale(jobs=int(self.config["jobs"] or 1))
            with Client(cluster) as client:
                self._wait_for_first_worker(client, cluster)
                yield client

    def _wait_for_first_worker(self, client: Any, cluster: Any) -> None:
        timeout = self.config["start_timeout"]
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as err:
            where = self.job_log_directory()
            msg = (
                f"no {self.name} worker joined within {timeout} s. The jobs may still be queued (check "
                f"with the batch system's queue command) or failed at start-up (see the job logs in "
                f"{where}). The submitted script was:\n{cluster.job_script()}\n"
                "Raise cluster.start_timeout to wait longer (null waits forever)."
            )
            raise ClusterError(msg) from err


@register
class SlurmBackend(JobqueueBackend):
    """Slurm (``sbatch``) through :class:`dask_jobqueue.SLURMCluster`; ``partition`` means ``queue``."""

    name = "slurm"
    cluster_class = "SLURMCluster"
    aliases = {"partition": "queue"}


@register
class PBSBackend(JobqueueBackend):
    """PBS / Torque / PBS Pro (``qsub``) through :class:`dask_jobqueue.PBSCluster`."""

    name = "pbs"
    cluster_class = "PBSCluster"
    extra_options = {"resource_spec": None}


@register
class SGEBackend(JobqueueBackend):
    """(Son of) Grid Engine through :class:`dask_jobqueue.SGECluster`; ``account`` is SGE's project."""

    name = "sge"
    cluster_class = "SGECluster"
    renamed = {"account": "project"}
    extra_options = {"resource_spec": None}


@register
class LSFBackend(JobqueueBackend):
    """IBM LSF (``bsub``) through :class:`dask_jobqueue.LSFCluster`; ``account`` is LSF's project."""

    name = "lsf"
    cluster_class = "LSFCluster"
    renamed = {"account": "project"}


@register
class HTCondorBackend(JobqueueBackend):
    """HTCondor (``condor_submit``) through :class:`dask_jobqueue.HTCondorCluster`; needs ``disk``."""

    name = "htcondor"
    cluster_class = "HTCondorCluster"
    required = ("cores", "memory", "disk")
    extra_options = {"disk": None}
    example = "cluster: {kind: htcondor, cores: 1, memory: 2GB, disk: 4GB}"
    unsupported = {
        "queue": "HTCondor has no queues; select machines with job_extra_directives: {requirements: ...}",
        "account": "use job_extra_directives: {accounting_group: ...}",
        "walltime": "use job_extra_directives: {+MaxRuntime: 3600} (seconds)",
    }
