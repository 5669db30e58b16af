"""Progress display for long runs: a rich progress bar with events/s, and the dashboard link."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ("track", "track_polled")

#: Seconds between two looks at the tasks finished (:func:`track_polled`).
POLL_SECONDS = 1.0


def track(
    futures: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    *,
    enabled: bool,
    dashboard: str = "",
    on_done: Callable[[Any], bool] | None = None,
) -> None:
    """Wait for every partition task's future, showing partitions and events done and events/s when
    *enabled*; ``sizes[i]`` is ``(partitions, events)`` of ``futures[i]``'s task.

    Each future is released as soon as it finishes, so its result stays on the workers only until the
    reduction consumes it. *on_done* sees each finished future first; when it returns True, stop waiting.
    """
    from distributed import as_completed

    size_of = {f.key: n for f, n in zip(futures, sizes, strict=True)}
    if not futures:
        return
    # the futures' own client's loop: the client need not be the default one (e.g. a gateway's)
    loop = futures[0].client.loop
    if not enabled:
        for future in as_completed(futures, loop=loop):
            stop = on_done is not None and on_done(future)
            future.release()
            if stop:
                return
        return
    with _bar(sizes, dashboard) as advance:
        for future in as_completed(futures, loop=loop):
            stop = on_done is not None and on_done(future)
            future.release()
            if stop:
                break
            advance(*size_of[future.key])


def track_polled(
    finished: Callable[[], Sequence[Any]],
    sizes: Mapping[Any, tuple[int, int]],
    *,
    until: threading.Event,
    dashboard: str = "",
) -> None:
    """Show partitions and events done and events/s from *finished* (the keys of the tasks finished since
    its last call, e.g. :func:`distproc.engine.ledger.follow`), asked every :data:`POLL_SECONDS`, until
    *until* is set (then once more); ``sizes[key]`` is ``(partitions, events)`` of task *key*.

    The client holds no future per task for it. When *finished* fails (the scheduler is gone), the bar
    stops where it is: the run's own wait says what happened.
    """
    with _bar(list(sizes.values()), dashboard) as advance:
        last = False
        while not last:
            last = until.wait(POLL_SECONDS)
            try:
                keys = finished()
            except Exception:  # noqa: BLE001  (the run's wait reports a lost scheduler, not the bar)
                return
            counted = [sizes[k] for k in keys if k in sizes]
            if counted:
                advance(sum(p for p, _ in counted), sum(e for _, e in counted))


@contextlib.contextmanager
def _bar(sizes: Sequence[tuple[int, int]], dashboard: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr for tasks of ``(partitions, events)`` *sizes*; yields
    ``advance(partitions, events)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    if dashboard:
        console.print(f"Dask dashboard: {dashboard}")
    total = sum(events for _, events in sizes)
    start = time.perf_counter()
    done_events = 0
    columns = (
        TextColumn("[bold]processing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("partitions  {task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("run", total=sum(parts for parts, _ in sizes), rate="")

        def advance(parts: int, events: int) -> None:
            nonlocal done_events
            done_events += events
            rate = done_events / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=parts, rate=f"{done_events:,}/{total:,} events, {rate:,.0f} events/s")

        yield advance
