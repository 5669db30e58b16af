"""``inline``: no cluster; the partitions run one after another in the calling process.

For debugging: ``breakpoint()`` in ``process()`` stops in your terminal, and an exception's traceback is
the exception itself (coffea's ``IterativeExecutor``). :func:`~distproc.cluster.open_client` yields
``None`` for it and the engine runs the graph's partition tasks itself (:mod:`distproc.engine.inline`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from distproc.cluster.base import ClusterBackend, register


@register
class InlineBackend(ClusterBackend):
    """No Dask cluster at all: the run happens in this process and thread (no options)."""

    name = "inline"

    @contextlib.contextmanager
    def _open(self) -> Iterator[None]:
        yield None
