"""Helpers shared by the SDK's HTTP clients and flagd: URL checks, body excerpts, the flag-config GET."""

import socket
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ._flag_api import MAX_FLAG_CONFIG_BYTES, flag_config_headers
from ._logging import redact

EXCERPT_CHARS = 200
CHUNK_BYTES = 64 * 1024


def base_url(url: str, option: str) -> str:
    """``url`` without a trailing slash, after checking it is an http(s) URL with a host.

    :raises ValueError: naming the config option, when the URL cannot be used.
    """
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("%s must be an http:// or https:// URL such as https://api.lab.amplitude.com, got %r" % (option, url))
    return url.rstrip("/")


def excerpt(body: Optional[bytes], secret: str = "", limit: int = EXCERPT_CHARS) -> str:
    """The start of a response body for an error message: UTF-8 (bad bytes replaced), at most ``limit``
    characters, with ``secret`` redacted *before* cutting, so a cut-off echo of it cannot slip through.
    """
    if not body:
        return "(empty body)"
    text = redact(body[: limit * 4 + 64].decode("utf-8", "replace"), secret)
    return text if len(text) <= limit and len(body) <= limit * 4 + 64 else text[:limit] + "…"


class FlagFetchError(Exception):
    """A flag-config GET that produced no body to parse. The message never holds the deployment key."""


_CURRENT = threading.local()  # the deadline of the fetch running on this thread, for the pools below


class _Deadline:
    """Cuts a request's socket when its whole-request time is up, headers and body alike.

    ``requests`` has only per-read timeouts, which a server sending a byte at a time never trips. A
    timer thread shuts the socket down instead, which ends a ``recv`` blocked in the fetching thread
    at once. The pools of :class:`_DeadlineAdapter` report the connection a request checked out.
    """

    def __init__(self, seconds: float):
        self.expired = False
        self._connection: Any = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self.expire)
        self._timer.daemon = True
        _CURRENT.deadline = self
        self._timer.start()

    def watch(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection
            if self.expired:
                _shut(connection)

    def cancel(self) -> None:
        self._timer.cancel()
        if getattr(_CURRENT, "deadline", None) is self:
            _CURRENT.deadline = None

    def expire(self) -> None:
        """End the request now (the timer's doing, or a stop from another thread)."""
        with self._lock:
            self.expired = True
            if self._connection is not None:
                _shut(self._connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
        except OSError:
            pass


def _watched(pool_class: type) -> type:
    """``pool_class`` telling the running fetch's deadline which connection it checked out."""

    class WatchedPool(pool_class):  # type: ignore[misc, valid-type]
        def _get_conn(self, timeout: Optional[float] = None) -> Any:
            connection = super()._get_conn(timeout)
            deadline = getattr(_CURRENT, "deadline", None)
            if deadline is not None:
                deadline.watch(connection)
            return connection

    WatchedPool.__name__ = "Watched" + pool_class.__name__
    return WatchedPool


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connection pools report each checked-out connection to the fetch's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _watched(HTTPConnectionPool), "https": _watched(HTTPSConnectionPool)}


class FlagConfigFetcher:
    """``GET <url>`` of Amplitude's flag-config API with the SDK's headers, within limits.

    The whole request, headers and body, ends within ``timeout_s`` (connect and each read are
    bounded by it too); a body larger than ``max_bytes`` (after decompression) is a failed fetch, read no
    further. One keep-alive session, reused across fetches and dropped after a failure. Not thread
    safe: each poller owns one.
    """

    def __init__(self, url: str, deployment_key: str, timeout_s: float,
                 max_bytes: int = MAX_FLAG_CONFIG_BYTES,
                 session_factory: Callable[[], requests.Session] = requests.Session,
                 monotonic: Callable[[], float] = time.monotonic, headers: Optional[Dict[str, str]] = None):
        self.url = url
        self._secret = deployment_key
        self._headers = headers if headers is not None else flag_config_headers(deployment_key)
        self._timeout = timeout_s
        self._max_bytes = max_bytes
        self._session_factory = session_factory
        self._monotonic = monotonic
        self._session: Optional[requests.Session] = None
        self._deadline: Optional[_Deadline] = None

    def fetch(self) -> bytes:
        """The body of a 200 answer. :raises FlagFetchError: for anything else, saying what happened."""
        status, body = self.get()
        if status != 200:  # the body was read whole: the connection stays usable
            raise FlagFetchError("HTTP %d: %s" % (status, excerpt(body, self._secret)))
        return body

    def get(self, url: Optional[str] = None, timeout_s: Optional[float] = None) -> Tuple[int, bytes]:
        """``(status, body)`` of one GET of ``url`` (default: the fetcher's), read whole within the
        limits (``timeout_s``: a shorter time limit for this request, e.g. what is left of a
        caller's own). :raises FlagFetchError: no answer (transport error, timeout, too large)."""
        started = self._monotonic()
        if self._session is None:
            self._session = session = self._session_factory()
            adapter = _DeadlineAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        seconds = self._timeout if timeout_s is None else max(min(timeout_s, self._timeout), 0.001)
        deadline = self._deadline = _Deadline(seconds)
        try:
            status, body = self._get(self._session, deadline, started, url or self.url, seconds)
        except FlagFetchError:
            self.close()  # a connection left mid-body must not be reused
            raise
        except (requests.RequestException, OSError) as error:
            self.close()
            if deadline.expired:
                raise self._timed_out(started, seconds) from None
            raise FlagFetchError("request failed: %s" % redact(str(error).replace(self.url, "<url>"), self._secret)) \
                from None
        finally:
            deadline.cancel()
            self._deadline = None
        return status, body

    def _get(self, session: requests.Session, deadline: _Deadline, started: float, url: str,
             seconds: float) -> Tuple[int, bytes]:
        """``(status, body)`` of one GET read to its end, within the deadline and the size cap."""
        response = session.get(url, headers=self._headers, timeout=seconds, stream=True)
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise FlagFetchError("answer of %s bytes is larger than the %d bytes allowed" % (declared, self._max_bytes))
            body = bytearray()
            for chunk in response.iter_content(CHUNK_BYTES):
                body += chunk
                if len(body) > self._max_bytes:
                    raise FlagFetchError("answer is larger than the %d bytes allowed" % self._max_bytes)
            if deadline.expired:
                raise self._timed_out(started, seconds)
        finally:
            response.close()
        return response.status_code, bytes(body)

    def _timed_out(self, started: float, seconds: float) -> FlagFetchError:
        return FlagFetchError("timed out: the request took longer than %d ms (after %.0f ms)"
                              % (seconds * 1000, (self._monotonic() - started) * 1000))

    def abort(self) -> None:
        """End a fetch under way on another thread now: it raises FlagFetchError (any thread)."""
        deadline = self._deadline
        if deadline is not None:
            deadline.expire()

    def forget_session(self) -> None:
        """Drop the session without closing it: after ``fork()`` its sockets are the parent's."""
        self._session = None

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
