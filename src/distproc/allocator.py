"""glibc's allocator in the workers: the one place for distproc's malloc work-around.

Awkward workloads allocate columns of a few MB per partition. Two glibc defaults made every one of them
fresh pages from the kernel (about a quarter of a worker's CPU time was system time, benchmarks/README.md):

* distributed's nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` to its workers, so glibc returned free
  memory to the system after nearly every allocation (about 6x the system time). The clusters distproc
  starts drop that setting: :func:`worker_environ` for the ``local`` back-end, :data:`NANNY_ENVIRON` for
  the batch and gateway back-ends (as :func:`batch_worker_prologue` lines in a job script);
* allocations above ``M_MMAP_THRESHOLD`` (dynamically 128 KiB to 32 MiB) get new ``mmap`` pages:
  :func:`tune_malloc` raises it (and the trim threshold) in each worker process, also on clusters
  distproc did not start. ``DISTPROC_MALLOC_TUNING=0`` in the workers' environment turns that off.
"""

from __future__ import annotations

import functools
import os
import sys

__all__ = ("NANNY_ENVIRON", "batch_worker_prologue", "tune_malloc", "worker_environ")

#: The environment variable distributed's nanny sets in its workers (and distproc removes).
TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"
#: Worker environment that removes :data:`TRIM_VARIABLE` from the nanny's pre-spawn environment. An
#: environment variable cannot unset it (the nanny lets the OS value win but sets the default when the
#: variable is absent), so this edits the nanny's configuration, leaving glibc's adaptive default.
NANNY_ENVIRON = {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": f'{{"{TRIM_VARIABLE}": None}}'}

#: glibc ``mallopt`` parameters and the values the workers use (see :func:`tune_malloc`).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 128 << 20


def worker_environ() -> dict[str, object]:
    """distributed's pre-spawn worker environment without ``MALLOC_TRIM_THRESHOLD_``.

    Must be read after importing distributed (which sets the default).

    Examples
    --------
    >>> from distproc.allocator import worker_environ
    >>> "MALLOC_TRIM_THRESHOLD_" in worker_environ()
    False
    """
    import dask
    import distributed  # noqa: F401  (installs the default being edited)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.pop(TRIM_VARIABLE, None)
    return env


def batch_worker_prologue() -> list[str]:
    """Job-script lines giving batch workers the environment the ``local`` back-end gives its workers.

    The first line drops a value the job inherited from the submitting process (batch systems export its
    environment, and any nanny that ran in that process set the variable there); the second exports
    :data:`NANNY_ENVIRON`.

    Examples
    --------
    >>> from distproc.allocator import batch_worker_prologue
    >>> for line in batch_worker_prologue():
    ...     print(line)
    unset MALLOC_TRIM_THRESHOLD_
    export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{"MALLOC_TRIM_THRESHOLD_": None}'
    """
    return [f"unset {TRIM_VARIABLE}", *(f"export {k}='{v}'" for k, v in NANNY_ENVIRON.items())]


@functools.cache
def tune_malloc() -> None:
    """Keep the few-MB arrays of a partition in the heap instead of fresh pages (glibc; once per process).

    Arrays up to 32 MiB come from the heap and up to 128 MiB of free heap is kept (this also overrides
    ``MALLOC_TRIM_THRESHOLD_`` on clusters distproc did not start). ``DISTPROC_MALLOC_TUNING=0`` in the
    workers' environment turns this off; elsewhere than glibc it does nothing.

    Examples
    --------
    >>> from distproc.allocator import tune_malloc
    >>> tune_malloc()
    """
    if os.environ.get("DISTPROC_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
