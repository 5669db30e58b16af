"""The cluster back-end base class and the registry that resolves back-ends by name.

A back-end knows how to start (or reach) a Dask cluster and hand out a :class:`distributed.Client`.
Each concrete kind lives in its own small module (``local``, ``address``, ``jobqueue``, ``gateway``)
and registers itself with :func:`register`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from distproc.exceptions import ClusterError, ConfigError, format_options

_REGISTRY: dict[str, type[ClusterBackend]] = {}


def register(cls: type[ClusterBackend]) -> type[ClusterBackend]:
    """Class decorator adding a back-end to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> tuple[str, ...]:
    """Names of every registered cluster kind."""
    return tuple(sorted(_REGISTRY))


class ClusterBackend:
    """Base class: start or reach a Dask cluster and yield a connected client.

    Subclasses set :attr:`name`, list their accepted options in :attr:`options` (name → default) and
    implement :meth:`_open`, a context manager yielding a :class:`distributed.Client`.
    """

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    #: Other names accepted for an option (``{"partition": "queue"}``).
    aliases: ClassVar[dict[str, str]] = {}
    #: A complete YAML ``cluster:`` block shown when a required option is missing.
    example: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        for alias, target in self.aliases.items():
            if alias in options:
                if options.get(target) is not None:
                    msg = f"cluster options {alias!r} and {target!r} mean the same thing; give only one"
                    raise ConfigError(msg, key=f"cluster.{alias}")
                options[target] = options.pop(alias)
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            msg = (
                f"unknown option {unknown[0]!r} for cluster kind {self.name!r}. "
                f"{format_options(unknown[0], self.options, 'options')}"
            )
            raise ConfigError(msg, key=f"cluster.{unknown[0]}")
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        missing = self._missing_required(merged)
        if missing:
            example = (
                self.example or f"cluster: {{kind: {self.name}, {', '.join(f'{k}: ...' for k in missing)}}}"
            )
            msg = (
                f"cluster kind {self.name!r} needs option {missing[0]!r}{self._missing_hint(missing[0])}; "
                f"for example\n    {example}"
            )
            raise ConfigError(msg, key=f"cluster.{missing[0]}")
        self.config = merged

    def _missing_required(self, merged: dict[str, Any]) -> list[str]:
        """Required options without a value (subclasses may look in other configuration too)."""
        return [k for k in self.required if merged.get(k) is None]

    def _missing_hint(self, option: str) -> str:
        """Extra words after "needs option X" (where else the option may be set)."""
        return ""

    def __repr__(self) -> str:
        set_options = {k: v for k, v in self.config.items() if v != self.options.get(k)}
        args = ", ".join(f"{k}={v!r}" for k, v in set_options.items())
        return f"{type(self).__name__}({args})"

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """Start or reach the cluster and yield a connected :class:`distributed.Client`.

        Everything started here is shut down when the context exits. Only errors while starting or
        reaching the cluster become :class:`ClusterError`; errors of the work done inside pass unchanged.
        """
        with contextlib.ExitStack() as stack:
            try:
                client = stack.enter_context(self._open())
            except (OSError, TimeoutError) as err:
                msg = f"could not start or reach the {self.name!r} cluster {self!r}: {err}"
                raise ClusterError(msg) from err
            yield client

    def _open(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError


def get_backend(kind: str, **options: Any) -> ClusterBackend:
    """Build the back-end registered as *kind* with its options.

    Examples
    --------
    >>> from distproc.cluster import get_backend
    >>> get_backend("local", workers=2)
    LocalBackend(workers=2)
    """
    try:
        cls = _REGISTRY[kind]
    except KeyError:
        msg = f"unknown cluster kind {kind!r}. {format_options(kind, _REGISTRY, 'kinds')}"
        raise ConfigError(msg, key="cluster.kind") from None
    return cls(**options)
