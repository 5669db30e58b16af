"""Helpers shared by the benchmarks: cached synthetic samples, machine load, a distproc LocalCluster."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Generated samples live here (git-ignored) and are reused by later invocations.
DATA_DIR = Path(__file__).resolve().parent / ".data"


def ensure_sample(process: str, events: int, files: int, *, seed: int = 1, data_dir: Path = DATA_DIR) -> Any:
    """A :class:`distproc.samples.SampleInfo` of *events* events in *files* files, generated once.

    The sample lives in ``data_dir/<process>-<events>x<files>-seed<seed>`` and is reused when its
    ``metadata.json`` matches.
    """
    from distproc.samples import load_samples, make_sample

    out = data_dir / f"{process}-{events}x{files}-seed{seed}"
    with contextlib.suppress(Exception):
        info = load_samples(out)[process]
        if info.events == events and len(info.files) == files and all(Path(f).exists() for f in info.files):
            return info
    start = time.perf_counter()
    print(f"generating {events:,} {process} events in {files} file(s) under {out} ...", flush=True)
    info = make_sample(process, events, out, seed=seed, events_per_file=-(-events // files))
    print(f"  generated in {time.perf_counter() - start:.1f} s", flush=True)
    return info


def load_line() -> str:
    """``load average: 1m 5m 15m`` of this machine, and its core count."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


@contextlib.contextmanager
def distproc_local_client(workers: int, **options: Any) -> Iterator[Any]:
    """A connected client of distproc's own ``local`` cluster back-end (one single-threaded worker per core).

    This is what ``distproc.run(cluster=None)`` starts, including the worker environment fixes
    (``MALLOC_TRIM_THRESHOLD_`` removed) and TLS with the run's certificate (*options* are the back-end's,
    e.g. ``security=False``); the benchmarks start it first so that its start-up is timed apart from the
    run, and pass the client as ``cluster=``.
    """
    from distproc.cluster import get_backend

    with get_backend("local", workers=workers, **options).client() as client:
        client.wait_for_workers(workers)
        yield client


def worker_malloc_env(client: Any) -> dict[str, Any]:
    """``MALLOC_TRIM_THRESHOLD_`` as each worker process sees it (``None`` where unset)."""
    return client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: The real samples the benchmarks use when present, as in the tests (``$DISTPROC_SHARED_DATA``, else
#: ``../shared/data``): (file name, tree, schema), the 1500-branch CMS file last.
SHARED_DATA = Path(
    os.environ.get("DISTPROC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
REAL_SAMPLES = [
    ("nano_tt_v12.root", "Events", "nanoaod"),
    ("PHYSLITE_example.root", "CollectionTree", "physlite"),
    ("nano_dy.root", "Events", "nanoaod"),
]


def real_and_generated_samples() -> list[tuple[str, str, str]]:
    """``(path, tree, schema)``: a generated NanoAOD-like file (1M events), then the real samples present
    in ``../shared/data``; the 1500-branch CMS file, when present, is last."""
    generated = ensure_sample("ttbar", 1_000_000, 2)
    samples = [(str(SHARED_DATA / n), t, s) for n, t, s in REAL_SAMPLES if (SHARED_DATA / n).exists()]
    return [(generated.files[0], "Events", "nanoaod"), *samples]


def cpu_ms(fn: Any) -> float:
    """CPU milliseconds of this process spent in ``fn()``, after a garbage collection."""
    import gc

    gc.collect()
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e3
