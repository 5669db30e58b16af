"""``address``: connect to a running scheduler (``tcp://`` or ``tls://`` with certificates).

Over ``tcp://`` to another machine, the processor, the data and the results travel unencrypted and the
scheduler accepts anyone: a warning says so and how to use ``tls://``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from distproc.cluster.base import ClusterBackend, register
from distproc.cluster.security import InsecureClusterWarning, is_loopback, known_security
from distproc.exceptions import ClusterError, ConfigError, format_options


@register
class AddressBackend(ClusterBackend):
    """An existing scheduler at ``address``; ``timeout`` bounds the wait for an answer (seconds)."""

    name = "address"
    options = {"address": None, "timeout": 10, "tls_ca_file": None, "tls_cert": None, "tls_key": None}
    required = ("address",)
    #: Schemes a Dask scheduler address may have.
    schemes = ("tcp", "tls", "ucx", "ws", "wss", "inproc")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        address, timeout = str(self.config["address"]), self.config["timeout"]
        scheme = address.split("://", 1)[0] if "://" in address else ""
        if scheme not in self.schemes:
            msg = (
                f"scheduler address {address!r} has no valid scheme ({scheme or 'none'!r}). "
                f"{format_options(scheme, self.schemes, 'schemes')}"
            )
            raise ConfigError(msg, key="cluster.address")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            msg = f"cluster option 'timeout' must be a number of seconds above 0, got {timeout!r}"
            raise ConfigError(msg, key="cluster.timeout")

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        from distributed import Client

        address = self.config["address"]
        security = known_security(address)  # a cluster distproc runs in this process: its certificate
        if security is None and (self.config["tls_ca_file"] or str(address).startswith("tls://")):
            from distributed.security import Security

            security = Security(
                tls_ca_file=self.config["tls_ca_file"],
                tls_client_cert=self.config["tls_cert"],
                tls_client_key=self.config["tls_key"],
                require_encryption=True,
            )
            missing = [
                option
                for option, value in (
                    ("tls_ca_file", security.tls_ca_file),
                    ("tls_cert", security.tls_client_cert),
                )
                if value is None
            ]
            if missing:
                msg = (
                    f"a TLS scheduler ({address!r}) needs the CA file and this client's certificate and "
                    f"key; {missing[0]!r} is not set (here or in distributed.comm.tls.* of the dask "
                    "configuration). For example\n    cluster: {kind: address, address: tls://host:8786, "
                    "tls_ca_file: ca.pem, tls_cert: client.pem, tls_key: client.key}"
                )
                raise ConfigError(msg, key=f"cluster.{missing[0]}")
        _warn_if_plain_remote(address)
        timeout = float(self.config["timeout"])
        try:
            client = Client(address, timeout=timeout, security=security)
        except (OSError, TimeoutError) as err:
            msg = (
                f"no Dask scheduler answered at {address!r} within {timeout:g} s ({err}). Check the "
                "address and that the scheduler is running, or wait longer, e.g.\n    "
                f"cluster: {{kind: address, address: {address}, timeout: {max(30, 3 * timeout):g}}}"
            )
            raise ClusterError(msg) from err
        with client:
            yield client


def _warn_if_plain_remote(address: str) -> None:
    """Warn when *address* is a ``tcp://`` scheduler on another machine."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme != "tcp" or is_loopback(parse_host_port(location)[0]):
        return
    msg = (
        f"connecting to {address} over plain TCP: your processor, data and results travel unencrypted, "
        "and anyone who can reach that scheduler can run code on its workers. Start the scheduler with "
        "TLS (dask scheduler --protocol tls --tls-ca-file ... --tls-cert ... --tls-key ...) and connect "
        "with cluster: {kind: address, address: tls://HOST:PORT, tls_ca_file: ..., tls_cert: ..., "
        "tls_key: ...}"
    )
    warnings.warn(msg, InsecureClusterWarning, stacklevel=4)
