"""Progress display for long runs: a rich progress bar with events/s, and the dashboard link."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ("track",)


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
        for future in as_completed(futures, loop=loop):
            stop = on_done is not None and on_done(future)
            parts, events = size_of[future.key]
            done_events += events
            future.release()
            if stop:
                break
            rate = done_events / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=parts, rate=f"{done_events:,}/{total:,} events, {rate:,.0f} events/s")
