"""A recording HTTP stand-in for Amplitude's APIs, bound to 127.0.0.1 on a free port.

Tests script the answers per (method, path) and read back every request the server saw, with the
server's own monotonic arrival time, so they assert on attempts and gaps without sleeping.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once must not wait for a SYN retry

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout test, a process that exits) is not the server's error.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class Answer:
    """One scripted response: status, body (bytes, str or JSON-able), headers and an optional delay.

    ``trickle`` sends the body one byte every that many seconds after the headers (a server that
    outlives a per-read timeout), and with ``trickle_headers`` the status line and headers too;
    ``declare_length=False`` sends no Content-Length and closes the
    connection after the body, so a client learns the size only by reading.
    """

    def __init__(self, status: int = 200, body: Any = b"", headers: Optional[Dict[str, str]] = None, delay: float = 0.0,
                 trickle: float = 0.0, declare_length: bool = True, trickle_headers: bool = False):
        self.status = status
        if isinstance(body, bytes):
            self.body = body
        elif isinstance(body, str):
            self.body = body.encode()
        else:
            self.body = json.dumps(body).encode()
        self.headers = headers or {}
        self.delay = delay
        self.trickle = trickle
        self.trickle_headers = trickle_headers
        self.declare_length = declare_length


class Seen:
    """A request as the stand-in received it."""

    def __init__(self, method: str, path: str, query: str, headers: Dict[str, str], body: bytes, at: float):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.at = at
        #: The sending process, when the stand-in records pids (``record_pids = True``).
        self.pid: Optional[int] = None

    def json(self) -> Any:
        return json.loads(self.body)


class EventStream:
    """A scripted Server-Sent Events answer (the flag stream): 200, then the connection stays open
    and sends what the test pushes (:meth:`StandIn.push`, :meth:`StandIn.keep_alive`) until
    :meth:`StandIn.disconnect`, the stand-in's end, or ``max_seconds``.

    ``delay`` stalls before the status line; ``initial`` (a flag list) is sent at once after the
    headers; ``keep_alive_every`` sends a keep-alive event (data of one space) whenever that many
    seconds passed without an event (None: silence between pushes).
    """

    def __init__(self, initial: Any = None, delay: float = 0.0, keep_alive_every: Optional[float] = None,
                 max_seconds: float = 60.0):
        self.initial = initial
        self.delay = delay
        self.keep_alive_every = keep_alive_every
        self.max_seconds = max_seconds


class _OpenStream:
    """One open stream connection's outbox."""

    _CLOSE = object()

    def __init__(self) -> None:
        self._items: List[Any] = []
        self._ready = threading.Condition()

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify_all()

    def close(self) -> None:
        self.put(self._CLOSE)

    def take(self, timeout: float) -> Any:
        """The next item, None after ``timeout`` seconds without one, _CLOSE to end."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.pop(0) if self._items else None


def sse_event(data: Any) -> bytes:
    """The bytes of one event whose data is ``data`` (a flag list, or the text itself)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return ("data: %s\n\n" % text).encode()


#: A keep-alive as Amplitude sends it: "data:" and two spaces, whose data is one space.
KEEP_ALIVE_EVENT = b"data:  \n\n"


Script = Union[Answer, EventStream, Callable[[Seen], Answer]]


class StandIn:
    """``with StandIn() as server:`` serves scripted answers at ``server.url`` until the block ends.

    ``answer(method, path, *answers)`` queues answers for a path (query string ignored); the last
    one repeats. A path with no script answers 404.
    """

    def __init__(self) -> None:
        #: Look up which local process sent each request (psutil, while its connection is open).
        self.record_pids = False
        self.requests: List[Seen] = []
        self._scripts: Dict[Tuple[str, str], List[Script]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._streams: List[_OpenStream] = []
        #: Stream connections served so far (EventStream answers that sent their headers).
        self.streams_opened = 0
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stand-in", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return "http://%s:%d" % (host, port)

    def __enter__(self) -> "StandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.disconnect()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, method: str, path: str, *answers: Script) -> None:
        with self._lock:
            self._scripts[(method, path)] = list(answers)

    def seen(self, path: Optional[str] = None) -> List[Seen]:
        with self._lock:
            return [request for request in self.requests if path is None or request.path == path]

    def wait_for(self, count: int, path: Optional[str] = None, timeout: float = 10.0) -> List[Seen]:
        """Block until ``count`` requests (to ``path``) arrived, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [r for r in self.requests if path is None or r.path == path]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("stand-in saw %d requests to %s, expected %d" % (len(matching), path, count))
                self._changed.wait(remaining)

    # --- the flag stream ----------------------------------------------------------------------

    def push(self, data: Any) -> int:
        """Send one event (a flag list, or raw text as the data) on every open stream; how many got it."""
        return self._send(sse_event(data))

    def send_raw(self, data: bytes) -> int:
        """Send bytes as they are on every open stream (a part of an event, say); how many got them."""
        return self._send(data)

    def keep_alive(self) -> int:
        """Send a keep-alive on every open stream; how many got it."""
        return self._send(KEEP_ALIVE_EVENT)

    def disconnect(self) -> int:
        """End every open stream (the server hangs up); how many were open."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()
        return len(streams)

    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def wait_streams(self, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` stream connections are open, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._streams) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("%d streams open, expected %d" % (len(self._streams), count))
                self._changed.wait(remaining)

    def _send(self, event: bytes) -> int:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.put(event)
        return len(streams)

    def _stream_opened(self, stream: _OpenStream) -> None:
        with self._changed:
            self._streams.append(stream)
            self.streams_opened += 1
            self._changed.notify_all()

    def _stream_closed(self, stream: _OpenStream) -> None:
        with self._changed:
            if stream in self._streams:
                self._streams.remove(stream)
            self._changed.notify_all()

    def _next_answer(self, seen: Seen) -> Any:
        with self._changed:
            self.requests.append(seen)
            self._changed.notify_all()
            script = self._scripts.get((seen.method, seen.path))
            if not script:
                return Answer(404, b"no script for this path")
            step = script.pop(0) if len(script) > 1 else script[0]
        return step(seen) if callable(step) else step

    def _handler_class(self) -> type:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parts.query, dict(self.headers.items()), body, time.monotonic())
                if stand_in.record_pids:
                    seen.pid = _peer_pid(self.client_address[1], self.server.server_address[1])
                answer = stand_in._next_answer(seen)
                if isinstance(answer, EventStream):
                    self._serve_stream(answer)
                    return
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    if answer.trickle_headers:
                        head = ("HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (answer.status, len(answer.body))).encode()
                        for index in range(len(head)):  # bounded by the header's length
                            time.sleep(answer.trickle)
                            self.wfile.write(head[index:index + 1])
                        self.wfile.write(answer.body)
                        return
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    if answer.declare_length:
                        self.send_header("Content-Length", str(len(answer.body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if answer.trickle:
                        self.wfile.flush()
                        for index in range(len(answer.body)):  # bounded by the body's length
                            time.sleep(answer.trickle)
                            self.wfile.write(answer.body[index:index + 1])
                            self.wfile.flush()
                    else:
                        self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _serve_stream(self, answer: EventStream) -> None:
                if answer.delay:
                    time.sleep(answer.delay)  # a stall before the status line
                stream = _OpenStream()
                if answer.initial is not None:
                    stream.put(sse_event(answer.initial))
                stand_in._stream_opened(stream)
                ends_at = time.monotonic() + answer.max_seconds
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.close_connection = True
                    self.end_headers()
                    self.wfile.flush()
                    while time.monotonic() < ends_at:  # bounded in time
                        wait = ends_at - time.monotonic()
                        if answer.keep_alive_every is not None:
                            wait = min(wait, answer.keep_alive_every)
                        item = stream.take(max(wait, 0.0))
                        if item is _OpenStream._CLOSE:
                            break
                        if item is None:
                            if answer.keep_alive_every is None:
                                continue
                            item = KEEP_ALIVE_EVENT
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up
                finally:
                    stand_in._stream_closed(stream)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _peer_pid(peer_port: int, server_port: int) -> Optional[int]:
    """The local process whose TCP connection from ``peer_port`` reaches this server's port."""
    import psutil

    for connection in psutil.net_connections(kind="tcp4"):
        if (connection.laddr and connection.laddr.port == peer_port and connection.raddr
                and connection.raddr.port == server_port):
            return connection.pid
    return None


class CohortScript:
    """Amplitude's cohort endpoint for one cohort (``/sdk/v1/cohort/<id>``), as a stand-in script:
    200 with the cohort; 204 when the request's ``lastModified`` is the cohort's; 413 when the
    cohort is larger than the request's ``maxCohortSize``. :meth:`update` changes the cohort."""

    def __init__(self, cohort_id: str, members: List[str], group_type: str = "User", last_modified: int = 1000):
        self.cohort_id = cohort_id
        self.group_type = group_type
        self.update(members, last_modified)

    def update(self, members: List[str], last_modified: int) -> None:
        self.members = list(members)
        self.last_modified = last_modified
        self.body = json.dumps({"cohortId": self.cohort_id, "groupType": self.group_type,
                                "lastModified": self.last_modified, "size": len(self.members),
                                "memberIds": self.members}).encode()

    def __call__(self, seen: "Seen") -> Answer:
        from urllib.parse import parse_qs

        query = parse_qs(seen.query)
        if int(query.get("maxCohortSize", ["2147483647"])[0]) < len(self.members):
            return Answer(413, b"")
        if query.get("lastModified", [None])[0] == str(self.last_modified):
            return Answer(204, b"")
        return Answer(200, self.body)


def serve_cohort(stand_in: "StandIn", cohort_id: str, members: List[str], group_type: str = "User",
                 last_modified: int = 1000) -> CohortScript:
    """Serve a cohort at ``/sdk/v1/cohort/<cohort_id>`` of ``stand_in``; returns its script."""
    script = CohortScript(cohort_id, members, group_type, last_modified)
    stand_in.answer("GET", "/sdk/v1/cohort/" + cohort_id, script)
    return script
