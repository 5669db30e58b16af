"""Remote reads that survive a server outage: every read of a remote file is retried, not only its open.

uproot reads a remote ROOT file through :class:`uproot.source.fsspec.FSSpecSource` (fsspec-xrootd for
``root://``, fsspec's HTTP file system for ``https://``). A transient error there (connection refused or
reset, a timeout, XRootD's "socket error" or "operation expired") fails the read, and after an XRootD
server restarts, the file handle fsspec-xrootd keeps for the file is dead for good ("I/O operation on
closed file"). :class:`RetryingSource` wraps that source: a read that fails with a transient error
(:func:`is_transient`) is repeated after a back-off, on a freshly opened source, up to ``retries``
times. Every byte uproot reads goes through the source, so this covers the file's open, distproc's own
reads and the lazy (virtual) NanoEvents reads inside a processor's ``process()`` alike.

A permanent error (no such file, permission denied, a corrupt basket, which uproot only meets after the
bytes arrived) is never retried.

Once a read's retries are used up, its server counts as down for the rest of the run (in that worker
process): later reads from it are tried once, not retried, until one succeeds. A server gone for good
then fails each remaining partition in one attempt instead of one full round of back-offs (15.5 s with
the defaults) per partition; a server that is back is used at once.

The XRootD client itself is configured here too (:data:`XROOTD_CLIENT_ENV`, :func:`remote_options`):
bounded connection attempts and request timeouts, so that the retrying above decides how long a run
waits for a server, not the client's own defaults of many minutes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uproot
from uproot.source.chunk import Chunk, Source
from uproot.source.fsspec import FSSpecSource
from uproot.source.futures import TrivialFuture

from distproc._paths import is_remote, is_xrootd
from distproc.exceptions import DistprocError, ReadError

__all__ = (
    "BACKOFF",
    "RETRIES",
    "XROOTD_CLIENT_ENV",
    "XROOTD_TIMEOUT",
    "RetryingSource",
    "configure_xrootd",
    "is_permanent_xrootd",
    "is_transient",
    "remote_options",
    "with_retries",
)

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Retries of a transient error when no ``retries`` option is given (the shipped default, distproc.yaml).
RETRIES = 5
#: Seconds before the first retry; each further retry waits twice as long (0.5, 1, 2, 4, 8 s: with the
#: default ``retries`` a server that is back within about 15 s is not noticed).
BACKOFF = 0.5

#: XRootD server error codes that retrying cannot fix: invalid argument, not authorized, not found,
#: unsupported, not a file, is a directory, checksum error (corrupt data), authentication failed.
_XROOTD_PERMANENT = ("[3000]", "[3010]", "[3011]", "[3013]", "[3015]", "[3016]", "[3019]", "[3030]")
#: XRootD client errors that retrying cannot fix.
_XROOTD_CLIENT_PERMANENT = ("Auth failed", "Invalid address")
#: HTTP statuses worth retrying (timeouts, throttling, server errors); any other status is permanent.
_HTTP_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


#: XRootD client settings applied unless the user set the matching ``XRD_<NAME>`` environment variable.
#: The client's own defaults (5 connection attempts 120 s apart, 1800 s per request) make a run over a
#: server that is down hang for many minutes, and after one failed connection it refuses to reconnect to
#: that server for ``StreamErrorWindow`` (1800 s), so a retry could never succeed. These make every
#: attempt fail within seconds and reconnect afresh, leaving the retrying to
#: :class:`RetryingSource`, which names the file when it gives up.
XROOTD_CLIENT_ENV = {
    "ConnectionWindow": 10,
    "ConnectionRetry": 1,
    "RequestTimeout": 120,
    "StreamErrorWindow": 0,
}
#: Seconds an XRootD request (open, read) may take before it fails (passed to fsspec-xrootd).
XROOTD_TIMEOUT = 120


@functools.cache
def configure_xrootd() -> None:
    """Apply :data:`XROOTD_CLIENT_ENV` in this process (once, before the first XRootD connection)."""
    try:
        from XRootD.client import EnvPutInt
    except ImportError:  # no XRootD client: uproot reports that when opening
        return
    for name, value in XROOTD_CLIENT_ENV.items():
        if f"XRD_{name.upper()}" not in os.environ:
            EnvPutInt(name, value)


def remote_options(path: str) -> dict[str, Any]:
    """The fsspec (and uproot) options for URL *path*: for XRootD, bounded request timeouts
    (:data:`XROOTD_TIMEOUT`; fsspec-xrootd's default is none), with its client configured first."""
    if is_xrootd(path):
        configure_xrootd()
        return {"timeout": XROOTD_TIMEOUT}
    return {}


def is_permanent_xrootd(err: BaseException) -> bool:
    """True when *err*'s message carries an XRootD error that retrying cannot fix (no such file, ...)."""
    text = str(err)
    return any(code in text for code in (*_XROOTD_PERMANENT, *_XROOTD_CLIENT_PERMANENT))


def is_transient(err: BaseException) -> bool:
    """Whether retrying the read that raised *err* (after reopening the file) may succeed.

    Transient: connection refused or reset, timeouts, XRootD client errors ("socket error", "operation
    expired", "connection error") and other ``OSError``\\ s from the remote file system, a dead XRootD
    file handle ("I/O operation on closed file"), and HTTP connection failures, truncated transfers and
    statuses 408, 425, 429 and 5xx. Permanent: a missing file or a permission problem (as the builtin
    exception or as an XRootD error code), any other HTTP status, anything that is not an I/O error
    (a corrupt basket fails in decompression, after the bytes arrived), and distproc's own errors (a
    :class:`~distproc.exceptions.ReadError` already says that the retries were used up).

    Examples
    --------
    >>> is_transient(ConnectionRefusedError(111, "Connection refused"))
    True
    >>> is_transient(OSError("File did not vector_read properly: [ERROR] Operation expired"))
    True
    >>> is_transient(OSError("Failed to open file: [ERROR] Server responded with an error: [3011] no file"))
    False
    >>> is_transient(FileNotFoundError("dy.root")), is_transient(ValueError("invalid compression"))
    (False, False)
    """
    if isinstance(err, DistprocError | FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    if isinstance(err, ValueError):
        return "closed file" in str(err)  # fsspec-xrootd's handle of a connection that broke
    if isinstance(err, OSError | TimeoutError):
        return not is_permanent_xrootd(err)
    try:
        import aiohttp
    except ImportError:  # no HTTP client: no HTTP errors either
        return False
    if isinstance(err, aiohttp.ClientResponseError):
        return err.status in _HTTP_TRANSIENT
    return isinstance(err, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    error: BaseException | None = None,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Call *fn*, retrying transient errors (:func:`is_transient`) up to *retries* times with back-off.

    *what* is the file's path or URL: only remote URLs are retried (an error reading a local file is not
    transient). The retries wait *backoff*, then twice as long each time; *before_retry* runs before each
    (:class:`RetryingSource` reopens the file there). *error* is a transient error that an earlier call
    already met: it counts as the first failure, so the first retry comes after the first back-off.

    Raises
    ------
    ReadError
        When the retries are used up: names *what*, the retries, the seconds they took and the last
        error (also its ``__cause__``).
    Exception
        A permanent error, at once and unchanged.

    Examples
    --------
    >>> with_retries(lambda: 42, what="root://eospublic.cern.ch//eos/dy.root")
    42
    """
    if error is None and not is_remote(what):
        return fn()
    start = time.monotonic()
    failures = 0
    down = _servers_down()
    server = urlsplit(what).netloc
    gave_up = down.get(server) if down is not None else None
    budget = 0 if gave_up is not None else retries
    while True:
        if error is not None and failures == budget:
            cause = f"{type(error).__name__}: {error}"
            if gave_up is not None:
                msg = (
                    f"could not be read: {cause}; not retried, as the retries of an earlier read from "
                    f"{server} ran out {start - gave_up:.0f} s before in this run (its reads are tried once "
                    "until one succeeds)"
                )
                raise ReadError(msg, file=what) from error
            if down is not None:
                down[server] = time.monotonic()
            elapsed = time.monotonic() - start
            times = "1 retry" if retries == 1 else f"{retries} retries"
            msg = f"could not be read after {times} in {elapsed:.1f} s: {cause}"
            raise ReadError(msg, file=what) from error
        try:
            if error is not None:
                delay = backoff * 2**failures
                failures += 1
                logger.warning(
                    "reading %s failed (%s: %s); retry %d of %d in %.1f s",
                    what,
                    type(error).__name__,
                    error,
                    failures,
                    retries,
                    delay,
                )
                time.sleep(delay)
                if before_retry is not None:
                    before_retry()
            value = fn()
        except Exception as err:
            if not is_transient(err):
                raise
            error = err
        else:
            if gave_up is not None:
                down.pop(server, None)  # back: retried again from now on
            return value


def _servers_down() -> dict[str, float] | None:
    """The servers whose retries ran out in the run this thread works for (netloc -> monotonic time of
    the last read's failure); None outside a run (a read outside a run is always retried)."""
    from distproc.engine.state import WORKER, current_state

    state = current_state()
    return None if state is WORKER.default else state.cached("servers-down", None, dict)


class _Request:
    """The byte ranges of one :meth:`RetryingSource.chunks` call: read as one request by *inner*, and
    read again together (once, by whichever chunk is waited for first) when a transient error broke it."""

    def __init__(
        self, source: RetryingSource, inner: FSSpecSource, ranges: Sequence[tuple[int, int]]
    ) -> None:
        self._source = source
        self._inner = inner
        self._ranges = list(ranges)
        self._lock = threading.Lock()
        self._first = inner.chunks(self._ranges, queue.Queue())  # their notices are not needed
        self._again: list[Any] | BaseException | None = None

    def future(self, k: int) -> Any:
        """The first try's future of range *k* (to be told when it is done)."""
        return self._first[k].future

    def result(self, k: int) -> Any:
        """The bytes of range *k*: from the first try, else from the retried request."""
        try:
            return self._first[k].raw_data
        except Exception as err:
            if not is_transient(err):
                raise
            with self._lock:
                if self._again is None:
                    try:
                        self._again = self._source.retry(self._read_all, error=err, failed=self._inner)
                    except Exception as given_up:  # noqa: BLE001  (kept: every range of the request fails so)
                        self._again = given_up
            if isinstance(self._again, BaseException):
                raise self._again  # noqa: B904  (its cause is the last error of the retries)
            return self._again[k]

    def _read_all(self, inner: FSSpecSource) -> list[Any]:
        return [chunk.raw_data for chunk in inner.chunks(self._ranges, queue.Queue())]


class _RangeFuture:
    """What :class:`~uproot.source.chunk.Chunk` waits on for range *k* of a :class:`_Request`."""

    def __init__(self, request: _Request, k: int) -> None:
        self._request = request
        self._k = k

    def result(self, timeout: float | None = None) -> Any:
        """The range's bytes, once read (*timeout*, part of a Future's signature, is not used)."""
        return self._request.result(self._k)


class RetryingSource(Source):
    """An uproot Source that retries the reads of :class:`~uproot.source.fsspec.FSSpecSource`.

    Pass it as uproot's ``handler`` with the options ``read_retries`` and ``read_backoff`` (those of
    :func:`with_retries`); every other option goes to ``FSSpecSource`` as usual. A read that fails with a
    transient error is retried on a new ``FSSpecSource`` (the dead XRootD file handles of the file
    dropped first); one that keeps failing raises :class:`~distproc.exceptions.ReadError` naming the
    file, the retries and the last error. The counters (``num_requested_bytes``, ...) count what uproot
    asked for, not the retries.

    Examples
    --------
    >>> import uproot
    >>> from distproc.remote import RetryingSource
    >>> file = uproot.open(
    ...     "root://eospublic.cern.ch//eos/opendata/cms/dy.root", handler=RetryingSource, read_retries=5
    ... )  # doctest: +SKIP
    """

    def __init__(
        self, file_path: str, *, read_retries: int = RETRIES, read_backoff: float = BACKOFF, **options: Any
    ) -> None:
        super().__init__()
        self._file_path = file_path
        self._retries = read_retries
        self._backoff = read_backoff
        self._options = options
        self._lock = threading.Lock()
        self._closed = False
        self._inner = FSSpecSource(file_path, **options)

    @property
    def inner(self) -> FSSpecSource:
        """The source reading now (a new one after each retry)."""
        return self._inner

    def retry(
        self, read: Callable[[FSSpecSource], T], *, error: BaseException | None = None, failed: Any = None
    ) -> T:
        """``read(source)`` with retries, on a new source after each failure. *error*, if given, is the
        transient error a read from the source *failed* already met (counted as the first failure)."""
        used = failed if error is not None else self._inner

        def attempt() -> T:
            nonlocal used
            used = self._inner
            return read(used)

        return with_retries(
            attempt,
            what=self._file_path,
            retries=self._retries,
            backoff=self._backoff,
            error=error,
            before_retry=lambda: self._reopen(used),
        )

    def _reopen(self, failed: FSSpecSource) -> None:
        """Replace *failed* by a new source, unless another read has done it already."""
        with self._lock:
            if self._closed:
                msg = f"file {self._file_path!r} is closed"
                raise ReadError(msg, file=self._file_path)
            if self._inner is not failed:
                return
            with contextlib.suppress(Exception):  # closing a dead connection may fail: it is dropped anyway
                failed.__exit__(None, None, None)
            _drop_cached_handles(self._file_path, self._options)
            self._inner = FSSpecSource(self._file_path, **self._options)

    def _count(self, ranges: Sequence[tuple[int, int]]) -> None:
        if self._closed:
            msg = f"file {self._file_path!r} is closed"
            raise OSError(msg)
        self._num_requests += 1
        self._num_requested_chunks += len(ranges)
        self._num_requested_bytes += sum(stop - start for start, stop in ranges)

    def chunk(self, start: int, stop: int) -> Chunk:
        """One byte range, read now (as ``FSSpecSource`` does), with retries."""
        self._count([(start, stop)])
        data = self.retry(lambda inner: inner.chunk(start, stop).raw_data)
        return Chunk(self, start, stop, TrivialFuture(data))

    def chunks(self, ranges: list[tuple[int, int]], notifications: queue.Queue) -> list[Chunk]:
        """Byte ranges read in the background as ``FSSpecSource`` reads them; a chunk of a request that
        failed is read again, with retries, when it is waited for."""
        self._count(ranges)
        request = self.retry(lambda inner: _Request(self, inner, ranges))
        chunks = []
        for k, (start, stop) in enumerate(ranges):
            chunk = Chunk(self, start, stop, _RangeFuture(request, k))
            request.future(k).add_done_callback(uproot.source.chunk.notifier(chunk, notifications))
            chunks.append(chunk)
        return chunks

    @property
    def num_bytes(self) -> int:
        """The file's size."""
        return self.retry(lambda inner: inner.num_bytes)

    @property
    def closed(self) -> bool:
        """True once the file was closed."""
        return self._closed

    def __enter__(self) -> RetryingSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closed = True
            self._inner.__exit__(*exc_info)


def _drop_cached_handles(path: str, options: dict[str, Any]) -> None:
    """Close the file handle fsspec-xrootd keeps open for *path* (dead once its connection broke), so the
    next read opens the file afresh; *options* are the uproot options of the file."""
    try:
        import fsspec

        storage = {k: v for k, v in options.items() if k not in uproot.open.defaults}
        fs, fspath = fsspec.core.url_to_fs(path, **storage)
        fs.invalidate_cache(fspath)
    except Exception:  # noqa: BLE001  (best effort: the retry reports what really fails)
        return
