"""The run report: what was processed, how fast, and what failed (``report.json``, ``result.report``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from distproc._paths import where_in_file

if TYPE_CHECKING:
    from distproc.exceptions import DistprocError

__all__ = ("DatasetReport", "PartitionFailure", "PartitionStat", "RunReport", "RunResult")


@dataclass(frozen=True)
class PartitionStat:
    """Measurements of one processed partition (collected on the worker)."""

    index: int
    dataset: str
    events: int
    bytes_read: int
    seconds: float
    worker: str


@dataclass(frozen=True)
class PartitionFailure:
    """A partition whose reading or processing raised; its events are missing from the output."""

    dataset: str
    file: str
    treename: str
    entry_start: int
    entry_stop: int
    exception: str
    traceback: str
    worker: str = ""
    #: The exception itself where it is a distproc error, which comes back from a worker with its type and
    #: attributes (a :class:`~distproc.exceptions.DaskModeError`'s ``output``); not in ``report.json``.
    error: DistprocError | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """One line naming the partition and the exception."""
        where = where_in_file(self.file, self.treename)
        return f"{self.dataset}: {where} entries {self.entry_start}-{self.entry_stop}: {self.exception}"


@dataclass(frozen=True)
class DatasetReport:
    """Per-dataset totals."""

    events: int
    partitions: int
    partitions_failed: int
    bytes_read: int
    processing_seconds: float


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


@dataclass
class RunReport:
    """Everything ``report.json`` holds. ``partial`` is true when any partition or file is missing, or an
    output could not be added (``output_conflicts``: the output key and the partitions involved)."""

    datasets: dict[str, DatasetReport]
    events: int
    wall_seconds: float
    preprocess_seconds: float
    partitions: int
    partition_seconds: dict[str, float]
    failures: list[PartitionFailure] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    cluster: str = ""
    dashboard: str = ""
    output_conflicts: list[str] = field(default_factory=list)
    #: Partitions whose output came from the run's checkpoint (done by an earlier, interrupted run).
    resumed_partitions: int = 0
    #: Workers that left the cluster while the run was going (``None``: the scheduler could not count).
    workers_lost: int | None = None
    #: Partitions executed more than once (a worker died holding or computing them): partition →
    #: executions (``None``: the scheduler could not count).
    reexecuted_partitions: dict[str, int] | None = None
    #: Why the run stopped before its last partition (its first partitions all failed the same way).
    stopped_early: str = ""
    #: Branches coffea's schema left out of ``events``: file → reason → branch names.
    skipped_branches: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """True when some input was not processed (failed partitions, skipped files, a run stopped early)
        or some output could not be added (it is missing from the output)."""
        return bool(self.failures or self.skipped_files or self.stopped_early or self.output_conflicts)

    @property
    def events_per_second(self) -> float:
        """Events processed per second of wall time."""
        return self.events / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @classmethod
    def build(
        cls,
        *,
        stats: Iterable[PartitionStat],
        failures: Iterable[PartitionFailure],
        planned: Mapping[str, int],
        planned_partitions: int,
        **kwargs: Any,
    ) -> RunReport:
        """Assemble the report from the per-partition stats and failures gathered by the reduction."""
        stats = list(stats)
        failures = list(failures)
        datasets = {}
        for name in planned:
            mine = [s for s in stats if s.dataset == name]
            datasets[name] = DatasetReport(
                events=sum(s.events for s in mine),
                partitions=len(mine),
                partitions_failed=sum(f.dataset == name for f in failures),
                bytes_read=sum(s.bytes_read for s in mine),
                processing_seconds=sum(s.seconds for s in mine),
            )
        return cls(
            datasets=datasets,
            events=sum(d.events for d in datasets.values()),
            partitions=planned_partitions,
            partition_seconds=_summary([s.seconds for s in stats]),
            failures=failures,
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (with derived ``partial`` and ``events_per_second``)."""
        data = asdict(self)
        for failure in data["failures"]:
            del failure["error"]  # an exception object; its text is ``exception``
        data["partial"] = self.partial
        data["events_per_second"] = self.events_per_second
        for name, ds in self.datasets.items():
            wall = self.wall_seconds
            data["datasets"][name]["events_per_second"] = ds.events / wall if wall > 0 else 0.0
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data.pop("partial", None)
        data.pop("events_per_second", None)
        data["datasets"] = {
            k: DatasetReport(**{f: v[f] for f in DatasetReport.__dataclass_fields__})
            for k, v in data["datasets"].items()
        }
        data["failures"] = [PartitionFailure(**f) for f in data.get("failures", [])]
        return cls(**data)


@dataclass
class RunResult:
    """What :func:`distproc.run` returns: the reduced ``output`` and the run ``report``.

    Examples
    --------
    >>> from distproc.report import RunReport, RunResult
    >>> report = RunReport.build(
    ...     stats=[], failures=[], planned={}, planned_partitions=0, wall_seconds=1.0, preprocess_seconds=0.1
    ... )
    >>> result = RunResult(output={}, report=report)
    >>> result.partial
    False
    """

    output: Any
    report: RunReport

    @property
    def partial(self) -> bool:
        """True when some partitions failed or files were skipped (their events are missing)."""
        return self.report.partial
