"""``run --stream``: one Server-Sent Events connection per host to Amplitude's flag stream, with the
flag API's polls as the fallback (docs/streaming.md).

:class:`StreamingSource` is a flag source like the others: the daemon's loop calls ``fetch()``,
which hands over the stream's latest flag list while the stream delivers and polls the API while
it does not. A thread reads the stream; it never touches shared memory, it only keeps the latest
message and wakes the loop (``nudge``), so publishing stays single-threaded and a version is
published only when the content changed. Imported only with ``--stream`` (it loads ``requests``).
"""

import logging
import threading
import time
from typing import Callable, Optional

from amplitude_experiment._flag_api import (
    KEEP_ALIVE_S,
    MAX_STREAM_RETRY_S,
    STREAM_RETRY_JITTER_S,
    STREAM_RETRY_S,
    stream_retry_delay,
)
from amplitude_experiment._flag_stream import FlagStream, StreamError
from amplitude_experiment.snapshot.layout import TRANSPORT_POLL, TRANSPORT_STREAM

from .log import Quoted
from .sources import ApiSource

__all__ = ["StreamingSource"]

logger = logging.getLogger(__name__)

#: How long close() waits for the stream thread (its socket is cut, so it ends at once).
STOP_JOIN_S = 1.0


class StreamingSource:
    """The flag stream at ``stream_url``, falling back to ``poll_source`` while it does not deliver.

    ``fetch()``, ``has_news()`` and the health attributes are for the daemon's loop; the stream
    thread only sets them. Retries after a failed connection back off from ``retry_s``.
    """

    backs_off = True

    def __init__(self, poll_source: ApiSource, stream_url: str, deployment_key: str,
                 keep_alive_s: float = KEEP_ALIVE_S, retry_s: float = STREAM_RETRY_S,
                 retry_jitter_s: float = STREAM_RETRY_JITTER_S, max_retry_s: float = MAX_STREAM_RETRY_S,
                 wall_clock_ns: Callable[[], int] = time.time_ns):
        self.name = poll_source.name
        self.stream_url = stream_url
        self._poll_source = poll_source
        self._stream = FlagStream(stream_url, deployment_key, keep_alive_s=keep_alive_s)
        self._retry = (retry_s, retry_jitter_s, max_retry_s)
        self._wall_clock_ns = wall_clock_ns
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._first_outcome = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._nudge: Callable[[], None] = lambda: None
        self._latest: Optional[bytes] = None
        self._news = False
        #: TRANSPORT_STREAM while a connection delivers, TRANSPORT_POLL otherwise; and since when (ns).
        self.transport = TRANSPORT_POLL
        self.transport_since_ns = wall_clock_ns()
        #: The stream's last error and when (ns); failed attempts in a row; connections opened.
        self.last_error: Optional[str] = None
        self.last_error_at_ns = 0
        self.failures = 0
        self.connects = 0
        self.last_event_ns = 0

    def start(self, nudge: Callable[[], None], wait_s: float) -> bool:
        """Open the stream on its thread; wait up to ``wait_s`` for its first message or failure.
        ``nudge`` wakes the daemon's loop (any thread). True when the stream delivers."""
        self._nudge = nudge
        self._thread = threading.Thread(target=self._run, name="flagd.stream", daemon=True)
        self._thread.start()
        self._first_outcome.wait(wait_s)
        return self.transport == TRANSPORT_STREAM

    def fetch(self) -> bytes:
        """The stream's latest flag list while it delivers, else a poll of the API.

        :raises SourceError: the poll failed.
        """
        with self._lock:
            self._news = False
            latest = self._latest if self.transport == TRANSPORT_STREAM else None
        if latest is not None:
            self._poll_source.note_config(latest)  # an empty poll after it must still be confirmed
            return latest
        return self._poll_source.fetch()

    def has_news(self) -> bool:
        """Whether the loop should fetch now: a new message, or the stream just failed (poll at once)."""
        return self._news

    def close(self) -> None:
        self._stopped.set()
        self._stream.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=STOP_JOIN_S)
        self._poll_source.close()

    # --- the stream thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.connects += 1
            try:
                self._stream.run_once(self._on_message, self._on_event)
                continue  # renewed after its maximum age, or closed
            except StreamError as error:
                if self._stopped.is_set():
                    return
                self._failed(str(error))
            if self._stopped.wait(stream_retry_delay(self.failures, *self._retry)):
                return

    def _on_event(self) -> None:
        self.last_event_ns = self._wall_clock_ns()

    def _on_message(self, data: str) -> None:
        with self._lock:
            self._latest = data.encode("utf-8")
            self._news = True
            self.failures = 0
            if self.transport != TRANSPORT_STREAM:
                self.transport = TRANSPORT_STREAM
                self.transport_since_ns = self._wall_clock_ns()
                logger.info("event=stream_connected url=%s msg=%s", Quoted(self.stream_url),
                            Quoted("flag configs arrive by stream; polling stopped"))
        self._first_outcome.set()
        self._nudge()

    def reject(self, body: bytes, reason: str = "") -> None:
        """The daemon refused ``body`` (for ``reason``): when it is the stream's latest message, the
        stream does not deliver flags now, so the API is polled (at once) until the next message,
        and the rejection is the stream's last error (status says why the transport is "poll")."""
        with self._lock:
            if self.transport != TRANSPORT_STREAM or body is not self._latest:
                return
            self._latest = None
            self.transport = TRANSPORT_POLL
            self.transport_since_ns = self._wall_clock_ns()
            self.last_error = "message rejected: %s" % (reason or "not a flag list flagd accepts")
            self.last_error_at_ns = self.transport_since_ns
            self._news = True
        logger.warning("event=stream_message_rejected url=%s msg=%s", Quoted(self.stream_url),
                       Quoted("polling until the stream sends a flag list that is accepted"))

    def _failed(self, message: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = message
            self.last_error_at_ns = self._wall_clock_ns()
            was_streaming = self.transport == TRANSPORT_STREAM
            if was_streaming:
                self.transport = TRANSPORT_POLL
                self.transport_since_ns = self.last_error_at_ns
            self._news = True  # poll at once
        logger.warning("event=stream_failed url=%s failures=%d error=%s msg=%s", Quoted(self.stream_url),
                       self.failures, Quoted(message), Quoted("polling until the stream is back"))
        self._first_outcome.set()
        self._nudge()
