"""What a run does with failed partitions: group identical failures, stop a run whose first partitions all
fail the same way, and raise :class:`~distproc.exceptions.PartitionError` from the Python API.

A typo in ``process()`` fails every partition identically; running all of them only burns the cluster and
prints the same line a thousand times. :class:`RepeatWatch` sees the first partitions to finish and says
when to stop; :func:`group_failures` and :func:`describe_failures` turn a thousand failures into one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distproc._paths import where_in_file
from distproc.exceptions import ChecksumError, FileChangedError, PartitionError
from distproc.report import PartitionFailure

__all__ = (
    "REPEATED_FAILURES",
    "FailureGroup",
    "RepeatWatch",
    "describe_failures",
    "group_failures",
    "raise_failed",
)

#: Failures that concern one input file, not the processor: the file's partitions all fail alike, the
#: others are fine, so they never stop a run early (:mod:`distproc.integrity`).
_ONE_FILE = tuple(f"{cls.__name__}: " for cls in (FileChangedError, ChecksumError))
#: A run stops early when this many of its first partitions to finish all failed with the same exception
#: (type and message) and none succeeded.
REPEATED_FAILURES = 3


@dataclass(frozen=True)
class FailureGroup:
    """Failures with the same exception (type and message): how many, and the first of them."""

    exception: str
    count: int
    first: PartitionFailure

    def describe(self) -> str:
        """``12 partitions failed with AttributeError: ... — first: FILE, entries A-B``."""
        first = self.first
        what = "1 partition" if self.count == 1 else f"{self.count} partitions"
        return (
            f"{what} failed with {self.exception} — first: {where_in_file(first.file, first.treename)}, "
            f"entries {first.entry_start}-{first.entry_stop} (dataset {first.dataset!r})"
        )


def group_failures(failures: list[PartitionFailure]) -> list[FailureGroup]:
    """Group *failures* by exception, the most frequent first.

    Examples
    --------
    >>> from distproc.report import PartitionFailure
    >>> fail = [PartitionFailure("dy", f"dy{i}.root", "Events", 0, 10, "KeyError: 'x'", "") for i in range(3)]
    >>> print(group_failures(fail)[0].describe())
    3 partitions failed with KeyError: 'x' — first: dy0.root [Events], entries 0-10 (dataset 'dy')
    """
    groups: dict[str, list[PartitionFailure]] = {}
    for failure in failures:
        groups.setdefault(failure.exception, []).append(failure)
    ordered = sorted(groups.values(), key=len, reverse=True)
    return [FailureGroup(exception=g[0].exception, count=len(g), first=g[0]) for g in ordered]


def describe_failures(failures: list[PartitionFailure], stopped_early: str = "") -> list[str]:
    """One line per group of identical failures, then the reason the run stopped early (if it did)."""
    lines = [group.describe() for group in group_failures(failures)]
    if stopped_early:
        lines.append(stopped_early)
    return lines


class RepeatWatch:
    """Sees the first *threshold* partitions of a run to finish (in the partition tasks the run sees
    first); :attr:`stop` says when to stop the run.

    The run stops when all of them failed with the same exception: a failure that repeats from the start
    (a typo in ``process()``, a branch every file lacks) would fail every other partition too. A file
    changed since preprocessing or failing its checksum fails only its own partitions: never a reason.
    A run of *threshold* partitions or fewer is never stopped early (there is nothing left to save).

    Examples
    --------
    >>> from distproc.engine.worker import Partial
    >>> from distproc.report import PartitionFailure
    >>> failed = PartitionFailure("dy", "dy.root", "Events", 0, 10, "KeyError: 'x'", "")
    >>> watch = RepeatWatch(partitions=100, threshold=3)
    >>> [watch.see(Partial(failures=[failed])) for _ in range(3)]
    [False, False, True]
    """

    def __init__(self, partitions: int, threshold: int = REPEATED_FAILURES) -> None:
        self.threshold = threshold
        self.partitions = partitions
        self.seen: list[Any] = []
        self.seen_partitions = 0
        self.stop = False

    @property
    def watching(self) -> bool:
        """True while the watch still wants to see finished partitions."""
        return self.partitions > self.threshold and self.seen_partitions < self.threshold and not self.stop

    def see(self, partial: Any) -> bool:
        """Record one finished task's :class:`~distproc.engine.worker.Partial` (one or more partitions);
        True: stop the run."""
        if not self.watching:
            return self.stop
        self.seen.append(partial)
        self.seen_partitions += len(partial.stats) + len(partial.failures)
        if self.seen_partitions >= self.threshold:
            kinds = {f.exception for p in self.seen for f in p.failures}
            self.stop = (
                all(p.failures and not p.stats for p in self.seen)
                and len(kinds) == 1
                and not next(iter(kinds)).startswith(_ONE_FILE)
            )
        return self.stop

    def reason(self) -> str:
        """Why the run stopped (empty when it did not)."""
        if not self.stop:
            return ""
        seen = self.seen_partitions
        return (
            f"stopped early: the first {seen} partitions to finish all failed with the same "
            f"exception, so the other {self.partitions - seen} were cancelled"
        )


def raise_failed(result: Any, *, cause: BaseException | None = None) -> None:
    """Raise :class:`PartitionError` for the first failure of *result* (a partial
    :class:`~distproc.report.RunResult`) with the result attached; do nothing when no partition failed.

    The message groups identical failures (:func:`describe_failures`) and ends with the first failure's
    partition and traceback.
    """
    report = result.report
    if not report.failures:
        return
    first = report.failures[0]
    lines = describe_failures(report.failures, report.stopped_early)
    lines.append("the partial result is this error's .result (allow_failures=True returns it instead)")
    raise PartitionError(
        "\n    ".join(lines),
        dataset=first.dataset,
        file=first.file,
        treename=first.treename,
        entry_start=first.entry_start,
        entry_stop=first.entry_stop,
        traceback=first.traceback,
        result=result,
    ) from cause
