"""Helpers shared by the SDK's HTTP clients and flagd: URL checks, body excerpts, the flag-config GET."""

import socket
import threading
import time
from typing import Callable, Optional
from urllib.parse import urlsplit

import requests

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


class _Deadline:
    """Cuts a request's socket when its whole-request time is up (a trickling body stops there).

    A timer thread shuts the socket down, which ends a ``recv`` blocked in another thread at once;
    ``requests`` has only per-read timeouts, which a server sending a byte a second never trips.
    """

    def __init__(self, seconds: float):
        self.expired = False
        self._response: Optional[requests.Response] = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, response: requests.Response) -> None:
        with self._lock:
            self._response = response
            if self.expired:
                _shut(response)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._response is not None:
                _shut(self._response)


def _shut(response: requests.Response) -> None:
    raw = response.raw
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:  # where urllib3 keeps it elsewhere: the socket under http.client's reader
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
        except OSError:
            pass


class FlagConfigFetcher:
    """``GET <url>`` of Amplitude's flag-config API with the SDK's headers, within limits.

    The whole request, body included, ends within ``timeout_s`` (connect and each read are bounded
    by it too); a body larger than ``max_bytes`` (after decompression) is a failed fetch, read no
    further. One keep-alive session, reused across fetches and dropped after a failure. Not thread
    safe: each poller owns one.
    """

    def __init__(self, url: str, deployment_key: str, timeout_s: float,
                 max_bytes: int = MAX_FLAG_CONFIG_BYTES,
                 session_factory: Callable[[], requests.Session] = requests.Session,
                 monotonic: Callable[[], float] = time.monotonic):
        self.url = url
        self._secret = deployment_key
        self._headers = flag_config_headers(deployment_key)
        self._timeout = timeout_s
        self._max_bytes = max_bytes
        self._session_factory = session_factory
        self._monotonic = monotonic
        self._session: Optional[requests.Session] = None

    def fetch(self) -> bytes:
        """The body of a 200 answer. :raises FlagFetchError: for anything else, saying what happened."""
        started = self._monotonic()
        if self._session is None:
            self._session = self._session_factory()
        deadline = _Deadline(self._timeout)
        try:
            return self._get(self._session, deadline)
        except FlagFetchError:
            self.close()  # a connection left mid-body must not be reused
            raise
        except (requests.RequestException, OSError) as error:
            self.close()
            if deadline.expired:
                raise self._timed_out(started) from None
            raise FlagFetchError("request failed: %s" % redact(str(error).replace(self.url, "<url>"), self._secret)) \
                from None
        finally:
            deadline.cancel()

    def _get(self, session: requests.Session, deadline: _Deadline) -> bytes:
        started = self._monotonic()
        response = session.get(self.url, headers=self._headers, timeout=self._timeout, stream=True)
        try:
            deadline.watch(response)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise FlagFetchError("answer of %s bytes is larger than the %d bytes allowed" % (declared, self._max_bytes))
            body = bytearray()
            for chunk in response.iter_content(CHUNK_BYTES):
                body += chunk
                if len(body) > self._max_bytes:
                    raise FlagFetchError("answer is larger than the %d bytes allowed" % self._max_bytes)
            if deadline.expired:
                raise self._timed_out(started)
        finally:
            response.close()
        if response.status_code != 200:
            raise FlagFetchError("HTTP %d: %s" % (response.status_code, excerpt(bytes(body), self._secret)))
        return bytes(body)

    def _timed_out(self, started: float) -> FlagFetchError:
        return FlagFetchError("timed out: the request took longer than %d ms (after %.0f ms)"
                              % (self._timeout * 1000, (self._monotonic() - started) * 1000))

    def forget_session(self) -> None:
        """Drop the session without closing it: after ``fork()`` its sockets are the parent's."""
        self._session = None

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
