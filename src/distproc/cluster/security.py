"""Per-run TLS for the clusters distproc starts (``local`` and the batch kinds).

A Dask scheduler runs whatever a connected client sends, as the user who started it. Every cluster
distproc starts therefore listens on ``tls://`` with a certificate made for that run
(:meth:`distributed.security.Security.temporary`, kept in memory): the scheduler, its workers and the
client all present it and accept no other (mutual TLS, the run's certificate is its own CA). Batch
workers start on other machines, so for them the certificate and key are written to a fresh directory
(mode 0700, files 0600) in a directory the worker nodes can read, and removed when the run ends — also
when it fails, is interrupted (Ctrl-C, ``SIGTERM``, ``SIGHUP``) or the interpreter exits.

``security: false`` or ``protocol: tcp`` turns this off, with an :class:`InsecureClusterWarning`.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distproc.exceptions import ConfigError, format_options

__all__ = (
    "TLS_OPTIONS",
    "InsecureClusterWarning",
    "certificate_files",
    "check_directory",
    "is_loopback",
    "known_security",
    "private_directory",
    "registered",
    "use_tls",
    "warn_insecure",
)

#: The cluster options every kind distproc starts accepts (``security: None`` means on unless
#: ``protocol: tcp``).
TLS_OPTIONS: dict[str, Any] = {"security": None, "protocol": None}
_PROTOCOLS = ("tls", "tcp")


class InsecureClusterWarning(UserWarning):
    """A cluster is reachable without a certificate: anyone who can connect may run code as you."""


def use_tls(kind: str, security: Any, protocol: Any) -> bool:
    """Whether a *kind* cluster uses TLS, from its ``security`` and ``protocol`` options.

    ``security`` is ``True``, ``False`` or ``None`` (on unless ``protocol`` is ``tcp``); ``protocol`` is
    ``None``, ``"tls"`` or ``"tcp"`` (``"tls://"``/``"tcp://"`` too). A wrong value or a contradiction
    raises :class:`~distproc.exceptions.ConfigError` naming the option.

    Examples
    --------
    >>> from distproc.cluster.security import use_tls
    >>> use_tls("slurm", None, None), use_tls("slurm", None, "tcp"), use_tls("local", False, None)
    (True, False, False)
    """
    if security is not None and not isinstance(security, bool):
        msg = f"security must be true or false, got {security!r} (cluster kind {kind!r})"
        raise ConfigError(msg, key="cluster.security")
    if protocol is None:
        return security is not False
    name = protocol.removesuffix("://") if isinstance(protocol, str) else protocol
    if name not in _PROTOCOLS:
        hint = format_options(str(name), _PROTOCOLS, "protocols")
        msg = f"protocol must be 'tls' or 'tcp', got {protocol!r}. {hint}"
        raise ConfigError(msg, key="cluster.protocol")
    if security is not None and security != (name == "tls"):
        msg = (
            f"security: {str(security).lower()} contradicts protocol: {name}; give one of them "
            "(TLS is the default)"
        )
        raise ConfigError(msg, key="cluster.protocol")
    return name == "tls"


def warn_insecure(kind: str) -> None:
    """Warn (once per kind and process, by Python's default warning filter) that TLS is off."""
    msg = (
        f"the {kind!r} cluster runs without TLS (security: false or protocol: tcp): anyone who can reach "
        "its scheduler can run code as you and read your data. Leave security on (the default) on any "
        "shared machine or network."
    )
    warnings.warn(msg, InsecureClusterWarning, stacklevel=3)


def check_directory(path: str | os.PathLike[str], key: str) -> Path:
    """*path* (``~`` and ``$VARS`` expanded) if it is a directory this process can create files in.

    Raises :class:`~distproc.exceptions.ConfigError` naming *key* otherwise (tried by creating and
    removing an empty directory, which also holds for root and for read-only mounts).
    """
    directory = Path(os.path.expandvars(os.path.expanduser(os.fspath(path))))
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        msg = f"{key.rsplit('.', 1)[-1]} {str(directory)!r} {what}; create it or choose another"
        raise ConfigError(msg, key=key)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".distproc-probe-", dir=directory))
    except OSError as err:
        msg = f"{key.rsplit('.', 1)[-1]} {str(directory)!r} is not writable ({err.strerror})"
        raise ConfigError(msg, key=key) from err
    return directory


def private_directory(path: Path) -> Path:
    """*path*, created with its parents when missing (mode 0700 for those created here)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # whatever the umask
        f.write(text)


#: Certificate directories of runs still going in this process (removed at exit if a run could not).
_LIVE: set[Path] = set()


@atexit.register
def _remove_live() -> None:
    for directory in list(_LIVE):
        shutil.rmtree(directory, ignore_errors=True)
        _LIVE.discard(directory)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _exit_on_termination() -> Iterator[None]:
    """Turn ``SIGTERM``/``SIGHUP`` into :class:`SystemExit` while open, so ``finally`` blocks run.

    Only in the main thread and only for signals whose handler is still the default (which ends the
    process without running any clean-up); a handler someone installed is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise_exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def certificate_files(directory: Path) -> Iterator[Any]:
    """Make the run's certificate and yield its :class:`~distributed.security.Security`.

    The workers' parts are files in a new directory ``distproc-tls-*`` (mode 0700) inside *directory*:
    ``cert.pem`` (the run's certificate, also its CA) and ``key.pem``, both mode 0600. The scheduler and
    client keep theirs in memory. The directory is removed on exit, on ``SIGTERM``/``SIGHUP`` and at
    interpreter exit.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from distproc.cluster.security import certificate_files
    >>> with tempfile.TemporaryDirectory() as shared, certificate_files(Path(shared)) as security:
    ...     print(Path(security.tls_worker_key).name, oct(Path(security.tls_worker_key).stat().st_mode))
    key.pem 0o100600
    """
    from distributed.security import Security

    security = Security.temporary()
    with _exit_on_termination():
        try:
            run_dir = Path(tempfile.mkdtemp(prefix="distproc-tls-", dir=directory))
        except OSError as err:
            msg = f"cannot create the run's certificate directory in {str(directory)!r}: {err.strerror}"
            raise ConfigError(msg, key="cluster.shared_temp_directory") from err
        _LIVE.add(run_dir)
        try:
            os.chmod(run_dir, 0o700)
            cert, key = run_dir / "cert.pem", run_dir / "key.pem"
            _write_private(cert, security.tls_worker_cert)
            _write_private(key, security.tls_worker_key)
            security.tls_ca_file = str(cert)
            security.tls_worker_cert = str(cert)
            security.tls_worker_key = str(key)
            yield security
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            _LIVE.discard(run_dir)


#: The Security of each scheduler distproc started in this process and is still running, by address.
_RUN_SECURITY: dict[str, Any] = {}


@contextlib.contextmanager
def registered(address: str, security: Any) -> Iterator[None]:
    """Remember *security* for the scheduler at *address* while open (see :func:`known_security`)."""
    _RUN_SECURITY[address] = security
    try:
        yield
    finally:
        _RUN_SECURITY.pop(address, None)


def known_security(address: str) -> Any:
    """The Security of a cluster this process started at *address* and still runs, else ``None``.

    So that ``cluster="tls://127.0.0.1:..."`` (or ``--scheduler``) naming a cluster opened with
    :func:`~distproc.cluster.open_client` in the same process connects with that run's certificate.
    """
    return _RUN_SECURITY.get(address)


def is_loopback(host: str) -> bool:
    """Whether *host* (a name or an IP address) is this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
