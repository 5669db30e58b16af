"""Cluster back-ends: where the workers come from.

``local`` (default), ``address`` (a running scheduler), the dask-jobqueue batch systems ``slurm``,
``pbs``, ``sge``, ``lsf`` and ``htcondor``, ``gateway`` (dask-gateway), and ``inline`` (no cluster: the
partitions run one after another in the calling process, for debugging). :func:`open_client` turns
whatever the user passed as ``cluster=`` into a connected client whose workers run compatible package
versions (see :mod:`distproc.cluster.versions`). The clusters distproc starts use TLS with a certificate
made for each run (see :mod:`distproc.cluster.security`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from distproc.cluster import address, gateway, inline, jobqueue, local  # noqa: F401  (registers the back-ends)
from distproc.cluster.base import ClusterBackend, backend_names, get_backend, register
from distproc.cluster.security import InsecureClusterWarning
from distproc.cluster.versions import check_worker_versions
from distproc.exceptions import ConfigError

__all__ = (
    "ClusterBackend",
    "InsecureClusterWarning",
    "backend_names",
    "check_worker_versions",
    "get_backend",
    "open_client",
    "register",
)


def _backend_for(cluster: Any, workers: int | None) -> ClusterBackend | None:
    if cluster is None:
        return get_backend("local", workers=workers)
    if isinstance(cluster, ClusterBackend):
        return cluster
    if isinstance(cluster, str):
        if "://" in cluster:
            return get_backend("address", address=cluster)
        return get_backend(
            cluster, **({"workers": workers} if workers is not None and cluster == "local" else {})
        )
    if isinstance(cluster, Mapping):
        options = dict(cluster)
        kind = options.pop("kind", "local")
        if workers is not None and kind == "local":
            options.setdefault("workers", workers)
        return get_backend(kind, **options)
    return None


@contextlib.contextmanager
def open_client(cluster: Any = None, *, workers: int | None = None) -> Iterator[Any]:
    """Yield a :class:`distributed.Client` for *cluster*.

    *cluster* is ``None`` (a LocalCluster of *workers* processes, default one per core), a scheduler
    address (``tcp://…``, ``tls://…``), a kind name (``"local"``, ``"slurm"``, …), a mapping
    ``{"kind": ..., **options}``, a :class:`ClusterBackend`, or an existing :class:`distributed.Client`
    (used as is and left open). For ``"inline"`` it yields ``None``: there is no cluster.

    Before yielding, the connected workers' package versions are compared with this process's
    (:func:`~distproc.cluster.versions.check_worker_versions`); an incompatible worker raises
    :class:`~distproc.exceptions.ClusterError` naming the worker, the package and both versions.

    Examples
    --------
    >>> from distproc.cluster import open_client
    >>> with open_client(workers=1) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    from distributed import Client

    if isinstance(cluster, Client):
        with _checked(cluster):
            yield cluster
        return
    backend = _backend_for(cluster, workers)
    if backend is None:
        msg = (
            f"cluster= must be None, a scheduler address, a kind name, a mapping with 'kind', a "
            f"ClusterBackend or a distributed.Client; got {type(cluster).__name__}"
        )
        raise ConfigError(msg, key="cluster")
    with backend.client() as client:
        if client is None:  # ``inline``: no cluster, the engine runs the partitions in this process
            yield None
            return
        with _checked(client):
            yield client


@contextlib.contextmanager
def _checked(client: Any) -> Iterator[None]:
    """Check the connected workers' versions now, and those that join while open (VersionGuard)."""
    from distproc.cluster.guard import VersionGuard

    check_worker_versions(client)
    outer = client not in _GUARDED  # a run on a client of an open open_client: the outer one guards
    if outer:
        guard = VersionGuard()
        client.register_plugin(guard)
        _GUARDED.add(client)
    try:
        yield
    finally:
        if outer:
            _GUARDED.discard(client)
            with contextlib.suppress(Exception):  # the cluster may be gone already
                client.unregister_worker_plugin(guard.name)


#: Clients with a VersionGuard registered by an open :func:`_checked` (nested ones leave it alone).
_GUARDED: weakref.WeakSet[Any] = weakref.WeakSet()
