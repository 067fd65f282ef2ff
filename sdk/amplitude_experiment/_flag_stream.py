"""Amplitude's flag-config stream, ``GET /sdk/stream/v1/flags`` (Server-Sent Events), as the SDK's
streaming source and flagd both read it: one connection at a time, each message a full flag list.

The events are parsed by ``sseclient-py`` (the SSE parser Amplitude's own SDK uses, so what counts
as an event, a keep-alive or a comment is exactly the same) over a ``requests`` response. This
module adds what a long-lived connection needs around it: a keep-alive watchdog (no event for
``keep_alive_s`` ends the connection with an error), a quiet reconnect after ``max_connection_s``
(plus jitter), a size cap on one event, and ``close()`` from any thread, which cuts the socket so
a reader blocked in ``recv`` returns at once.
"""

import os
import random
import socket
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import requests
import sseclient
import urllib3

from ._flag_api import (
    KEEP_ALIVE,
    KEEP_ALIVE_S,
    MAX_CONNECTION_JITTER_S,
    MAX_CONNECTION_S,
    MAX_FLAG_CONFIG_BYTES,
    flag_config_headers,
)
from ._http import _CURRENT, _DeadlineAdapter, _shut, excerpt
from ._logging import redact

__all__ = ["FlagStream", "StreamError"]

CHUNK_BYTES = 64 * 1024
#: How an event ends (a blank line after its last field), as sseclient splits them.
EVENT_ENDS = (b"\n\n", b"\r\r", b"\r\n\r\n")


class StreamError(Exception):
    """The stream connection failed or ended; the message says how (never with the deployment key)."""


class _Cutter:
    """Told the connection a stream request checked out (through _http's watched pools), so
    another thread can shut its socket down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self._socket: Any = None
        self.cut_done = False

    def hold(self, response: Any) -> None:
        """The response's own socket: http.client hands it over from the connection when the server
        will close after the body (``Connection: close``, usual for event streams)."""
        fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
        with self._lock:
            self._socket = sock
            if self.cut_done and sock is not None:
                _shut_socket(sock)

    def watch(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection
            if self.cut_done:
                _shut(connection)
    def cut(self) -> None:
        with self._lock:
            self.cut_done = True
            if self._connection is not None:
                _shut(self._connection)
            if self._socket is not None:
                _shut_socket(self._socket)


def _shut_socket(sock: Any) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class FlagStream:
    """Reads ``GET <url>`` as Server-Sent Events with the flag poll's headers.

    :meth:`run_once` serves one connection; the caller decides when to try again. Not thread safe
    except :meth:`close`, which any thread may call.
    """

    def __init__(self, url: str, deployment_key: str, keep_alive_s: float = KEEP_ALIVE_S,
                 max_connection_s: float = MAX_CONNECTION_S, max_connection_jitter_s: float = MAX_CONNECTION_JITTER_S,
                 max_bytes: int = MAX_FLAG_CONFIG_BYTES,
                 session_factory: Callable[[], requests.Session] = requests.Session,
                 monotonic: Callable[[], float] = time.monotonic):
        self.url = url
        self._secret = deployment_key
        # Exactly the reference's request: the poll's three headers, Host, an uncompressed body, no
        # Accept, no User-Agent (requests' session defaults are dropped in run_once).
        self._headers = dict(flag_config_headers(deployment_key), **{
            "Accept-Encoding": "identity", "User-Agent": urllib3.util.SKIP_HEADER})
        self._keep_alive = keep_alive_s
        self._max_connection = max_connection_s
        self._max_connection_jitter = max_connection_jitter_s
        self._max_bytes = max_bytes
        self._session_factory = session_factory
        self._monotonic = monotonic
        self._cutter: Optional[_Cutter] = None
        self._closed = False
        self._pending = 0
        #: Monotonic time of the last event (keep-alives included); the connection's start before any.
        self.last_event_at = 0.0

    def run_once(self, on_message: Callable[[str], None],
                 on_event: Optional[Callable[[], None]] = None) -> None:
        """Connect and hand each flag list (an event's data, keep-alives left out) to ``on_message``
        until the connection ends. ``on_event`` is called on every event, keep-alives included.

        Returns when the connection reached its maximum age or :meth:`close` was called.

        :raises StreamError: a non-200 answer, a keep-alive timeout, an event over the size cap,
            the server ending the stream, or a network error.
        """
        if self._closed:
            return
        cutter = self._cutter = _Cutter()
        session = self._session_factory()
        session.headers.clear()
        adapter = _DeadlineAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if self._closed:  # a close() since the check above had no connection to cut: send nothing
            session.close()
            return
        started = self._monotonic()
        renew_at = started + self._max_connection + random.uniform(0, self._max_connection_jitter)
        self.last_event_at = started
        response = None
        _CURRENT.deadline = cutter
        try:
            try:
                # Headers must come within the keep-alive time; after that, the read timeout is the watchdog.
                response = session.get(self.url, headers=self._headers, stream=True,
                                       timeout=(self._keep_alive, self._keep_alive))
            finally:
                _CURRENT.deadline = None
            cutter.hold(response)
            if self._closed:
                return
            if response.status_code != 200:
                body = response.raw.read(4096, decode_content=True) or b""
                raise StreamError("HTTP %d: %s" % (response.status_code, excerpt(body, self._secret)))
            events = sseclient.SSEClient(self._chunks(response, renew_at), char_enc="utf-8").events()
            for event in events:
                self.last_event_at = self._monotonic()
                self._pending = 0
                if on_event is not None:
                    on_event()
                if event.data != KEEP_ALIVE:
                    on_message(event.data)
            if self._closed or self._monotonic() >= renew_at:
                return
            raise StreamError("the server ended the stream")
        except StreamError:
            if self._closed:
                return
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            if self._closed:
                return
            if self._monotonic() - self.last_event_at >= self._keep_alive * 0.98:
                raise StreamError("keep-alive timed out: no event for %.1f s" % self._keep_alive) from None
            raise StreamError("stream failed: %s" % redact(str(error).replace(self.url, "<url>"), self._secret)) \
                from None
        finally:
            if response is not None:
                response.close()
            session.close()

    def _chunks(self, response: Any, renew_at: float) -> Iterator[bytes]:
        """The body's bytes as they arrive, with the watchdog, the size cap and the renewal checked
        between reads (a silent socket is ended by the read timeout, which equals the keep-alive).

        The body ends only between events: sseclient would dispatch the part of an event that is
        left when its source ends, so a renewal waits for the event's end, and a server that hangs
        up in the middle of one is a failed stream.
        """
        raw = response.raw
        read1 = getattr(raw, "read1", None)
        if read1 is not None:  # urllib3 2: whatever has arrived, chunked or not
            reads: Iterator[bytes] = iter(lambda: read1(CHUNK_BYTES), b"")
        else:  # urllib3 1.26: chunk by chunk (SSE servers send chunked)
            reads = response.iter_content(chunk_size=None)
        self._pending = 0
        tail = b""  # the last bytes read, to tell whether they end an event
        line_start: List[bytes] = []  # the pieces of a line not ended yet
        for chunk in reads:
            if self._monotonic() - self.last_event_at > self._keep_alive:
                raise StreamError("keep-alive timed out: no complete event for %.1f s" % self._keep_alive)
            self._pending += len(chunk)
            if self._pending > self._max_bytes:
                raise StreamError("an event is larger than the %d bytes allowed" % self._max_bytes)
            tail = (tail + chunk[-4:])[-4:]
            # Whole lines only: sseclient adds up a line's pieces by copying, quadratic in its length.
            end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
            if not end:
                line_start.append(chunk)
                continue
            yield b"".join(line_start + [chunk[:end]]) if line_start else chunk[:end]
            line_start = [chunk[end:]] if end < len(chunk) else []
            if self._monotonic() >= renew_at and tail.endswith(EVENT_ENDS):
                return  # renew quietly: the caller reconnects at once
        if tail and not tail.endswith(EVENT_ENDS) and not self._closed:
            raise StreamError("the server ended the stream in the middle of an event")

    def abandon(self) -> None:
        """In a fork child: close this process's copy of the parent's connection, without shutting it
        down (that would end the parent's too) and without taking a lock a parent thread may hold."""
        self._closed = True
        cutter = self._cutter
        if cutter is None:
            return
        for sock in (cutter._socket, getattr(cutter._connection, "sock", None)):
            if sock is not None:
                try:
                    # detach(): the response's file object keeps close() from closing the fd, and
                    # a later close by the garbage collector must not hit a reused fd number.
                    os.close(sock.detach())
                except (OSError, ValueError):
                    pass

    def close(self) -> None:
        """End the connection now and for good (any thread)."""
        self._closed = True
        cutter = self._cutter
        if cutter is not None:
            cutter.cut()
