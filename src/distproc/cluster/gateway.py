"""``gateway``: workers from a dask-gateway server (analysis facilities such as coffea-casa or EAF).

Unset options fall back to dask's ``gateway.*`` configuration, which analysis facilities preset (so
``cluster: {kind: gateway}`` is often enough there). Needs the ``gateway`` extra:
``pip install 'distproc[gateway]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from distproc._compat import forget_gateway_loop
from distproc.allocator import NANNY_ENVIRON
from distproc.cluster.base import ClusterBackend, register
from distproc.exceptions import ClusterError, ConfigError, format_options

__all__ = ("GatewayBackend",)


def _import_gateway() -> Any:
    try:
        import dask_gateway
    except ImportError as err:
        msg = (
            "cluster kind 'gateway' needs the dask-gateway client, which is not installed: "
            "pip install 'distproc[gateway]'"
        )
        raise ClusterError(msg) from err
    return dask_gateway


@register
class GatewayBackend(ClusterBackend):
    """A new (or, with ``cluster_name``, an existing) cluster of a dask-gateway server.

    ``workers`` workers are requested (default 1), or with ``minimum``/``maximum`` the cluster scales
    adaptively. ``cluster_options`` sets the gateway's cluster options (image, worker_cores, ...).
    The cluster is shut down when the run ends unless it was an existing one (``cluster_name``).
    """

    name = "gateway"
    options = {
        "address": None,
        "proxy_address": None,
        "public_address": None,
        "auth": None,
        "cluster_name": None,
        "cluster_options": None,
        "workers": None,
        "minimum": None,
        "maximum": None,
        "start_timeout": 600,
    }
    example = "cluster: {kind: gateway, address: https://gateway.example.org, workers: 10}"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.config["workers"] is not None and (
            self.config["minimum"] is not None or self.config["maximum"] is not None
        ):
            msg = (
                "give either workers (a fixed number) or minimum/maximum (adaptive), not both; for "
                "example\n    cluster: {kind: gateway, minimum: 1, maximum: 50}"
            )
            raise ConfigError(msg, key="cluster.workers")
        extra = self.config["cluster_options"]
        if extra is not None and not isinstance(extra, Mapping):
            msg = f"cluster.cluster_options must be a mapping, got {extra!r}"
            raise ConfigError(msg, key="cluster.cluster_options")

    def _new_cluster(self, gateway: Any) -> Any:
        opts = gateway.cluster_options()
        for key, value in dict(self.config["cluster_options"] or {}).items():
            if key not in opts:
                msg = (
                    f"the gateway offers no cluster option {key!r}. "
                    f"{format_options(key, list(opts), 'cluster options')}"
                )
                raise ConfigError(msg, key=f"cluster.cluster_options.{key}")
            opts[key] = value
        if "environment" in opts:
            opts["environment"] = {**NANNY_ENVIRON, **dict(opts["environment"] or {})}
        return gateway.new_cluster(opts)

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        dask_gateway = _import_gateway()
        cfg = self.config
        try:
            gateway = dask_gateway.Gateway(
                address=cfg["address"],
                proxy_address=cfg["proxy_address"],
                public_address=cfg["public_address"],
                auth=cfg["auth"],
            )
        except ValueError as err:  # no address given or configured, or an unknown auth kind
            msg = f"cannot set up the dask-gateway client: {err}; for example\n    {self.example}"
            raise ConfigError(msg, key="cluster.address") from err
        try:
            existing = cfg["cluster_name"] is not None
            cluster = gateway.connect(cfg["cluster_name"]) if existing else self._new_cluster(gateway)
            try:
                if cfg["minimum"] is not None or cfg["maximum"] is not None:
                    cluster.adapt(minimum=cfg["minimum"] or 0, maximum=cfg["maximum"] or cfg["minimum"])
                elif cfg["workers"] is not None or not existing:
                    cluster.scale(int(cfg["workers"] or 1))
                with cluster.get_client() as client:
                    try:
                        client.wait_for_workers(1, timeout=cfg["start_timeout"])
                    except TimeoutError as err:
                        msg = (
                            f"no worker of gateway cluster {cluster.name} joined within "
                            f"{cfg['start_timeout']} s; raise cluster.start_timeout (null waits forever)"
                        )
                        raise ClusterError(msg) from err
                    yield client
            finally:
                if existing:
                    cluster.close()
                else:
                    cluster.shutdown()
                forget_gateway_loop(cluster.gateway)  # closed by close()/shutdown() above
        finally:
            gateway.close()
            forget_gateway_loop(gateway)
