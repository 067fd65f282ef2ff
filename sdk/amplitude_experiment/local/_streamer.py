"""The streaming flag source (``stream_updates=True``): flag lists pushed over Server-Sent Events,
polling as the fallback (docs/streaming.md).

Each message is a full flag list, applied by the poller's own code (:meth:`PollingFlagSource.install`),
so storage order and compiled flags are exactly a poll's. Differences from the reference: a stream
that connects slowly never leaves the client without updates (polling runs until the stream's first
message, quirk Q5), failed stream attempts back off (15 s, 30 s, ... up to 2 min, jittered), and
``stop()`` ends every thread at once. Fork-safe like the poller: a child that evaluates opens its
own stream and polls until that stream delivers.
"""

import logging
import threading
import time
from typing import Any, Callable, Optional

import requests

from .._flag_api import (
    KEEP_ALIVE_S,
    MAX_STREAM_RETRY_S,
    STREAM_PATH,
    STREAM_RETRY_JITTER_S,
    STREAM_RETRY_S,
    stream_retry_delay,
)
from .._flag_stream import FlagStream, StreamError
from .._fork import FORKS
from .._http import FlagFetchError, base_url
from ..evaluation import FlagSet
from ._poller import PollingFlagSource
from .config import LocalEvaluationConfig
from .status import FlagSourceStatus

__all__ = ["StreamingFlagSource"]

#: How long stop() waits for the stream thread (its socket is cut, so it ends at once).
STOP_JOIN_S = 1.0


class StreamingFlagSource:
    """Flags from Amplitude's flag stream, with the poller as the fallback. Thread- and fork-safe.

    ``keep_alive_s``, ``retry_s``, ``retry_jitter_s`` and ``max_retry_s`` are the watchdog and the
    stream's retry schedule (seconds); tests shorten them.
    """

    def __init__(
        self,
        api_key: str,
        config: LocalEvaluationConfig,
        logger: logging.Logger,
        poller: Optional[PollingFlagSource] = None,
        keep_alive_s: float = KEEP_ALIVE_S,
        retry_s: float = STREAM_RETRY_S,
        retry_jitter_s: float = STREAM_RETRY_JITTER_S,
        max_retry_s: float = MAX_STREAM_RETRY_S,
        session_factory: Callable[[], requests.Session] = requests.Session,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._poller = poller if poller is not None else PollingFlagSource(api_key, config, logger)
        self._url = base_url(config.stream_server_url, "stream_server_url") + STREAM_PATH
        self._api_key = api_key
        self._conn_timeout = max(config.stream_flag_conn_timeout, 0) / 1000.0
        self._probe_every = max(config.flag_config_polling_interval_millis, 1) / 1000.0
        self._next_probe = 0.0
        self._keep_alive = keep_alive_s
        self._retry = (retry_s, retry_jitter_s, max_retry_s)
        self._session_factory = session_factory
        self._logger = logger
        self._wall_clock = wall_clock
        self._started = False
        self._stopped = False
        #: "stream" while a connection delivers, "poll" while polling stands in, None before start.
        self.transport: Optional[str] = None
        self._transport_since: Optional[float] = None
        self._stream_error: Optional[str] = None
        self._stream_error_at: Optional[float] = None
        self._stream_failures = 0
        self._connects = 0
        self._messages = 0
        self._polling_started = False
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Threads, locks and connections do not survive fork(); the flags do (in the poller)."""
        self._generation = FORKS.generation
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._first_outcome = threading.Event()
        self._starting = True
        self._thread: Optional[threading.Thread] = None
        self._stream = FlagStream(self._url, self._api_key, keep_alive_s=self._keep_alive,
                                  session_factory=self._session_factory)

    # --- FlagSource ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the stream and wait up to ``stream_flag_conn_timeout`` for its first message; without
        one (slow, failed), poll once now and keep polling until the stream delivers."""
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
        self._start_thread()
        self._first_outcome.wait(self._conn_timeout)
        if getattr(self._poller, "cohorts", None) is not None:
            self._poller.cohorts.start()  # cohort refreshes run whatever delivers the flags (docs/cohorts.md)
        with self._lock:
            self._starting = False
            live = self.transport == "stream"
        if not live:
            self._logger.warning("[Experiment] flag stream %s did not deliver flags (%s): polling until it does",
                                 self._url, self._stream_error or "no message within %d ms, still connecting"
                                 % (self._conn_timeout * 1000))
            self._fall_back()

    def cohort_membership(self) -> Any:
        """The cohorts the poller's cohort sync keeps loaded (None without ``cohort_sync_config``)."""
        return self._poller.cohort_membership()

    def current(self) -> Optional[FlagSet]:
        if self._generation != FORKS.generation:
            with FORKS.restart_lock:  # threads noticing the fork at once restart it once
                if self._generation != FORKS.generation:
                    self._restart_after_fork()
        return self._poller.current()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._wakeup.set()
        self._stream.close()
        self._poller.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=STOP_JOIN_S)

    def status(self) -> FlagSourceStatus:
        status = self._poller.status()
        status.update(
            healthy=bool(status["flags"] is not None and (self.transport == "stream" or status["healthy"])),
            transport=self.transport,
            transport_since=self._transport_since,
            stream_url=self._url,
            stream_last_error=self._stream_error,
            stream_last_error_at=self._stream_error_at,
            stream_consecutive_failures=self._stream_failures,
            stream_connects=self._connects,
            stream_messages=self._messages,
        )
        return status

    @property
    def before_poll(self) -> Optional[Callable[[], bool]]:
        """The poller's hook (auto mode's probe for flagd; see PollingFlagSource.before_poll), which the
        stream thread also runs while the stream delivers and the poller is paused (see _on_event)."""
        return self._poller.before_poll

    @before_poll.setter
    def before_poll(self, hook: Optional[Callable[[], bool]]) -> None:
        self._poller.before_poll = hook

    # --- the stream thread --------------------------------------------------------------------

    def _restart_after_fork(self) -> None:
        self._stream.abandon()  # the parent's connection: this copy is closed, the parent's left alone
        self._reset_process_state()  # never touch the parent's lock
        self._poller.current()  # the poller renews its own per-process state first
        if self._started and not self._stopped:
            self._logger.debug("[Experiment] reopening the flag stream in forked process")
            self._starting = False
            self._set_transport("poll")
            self._polling_started = True
            self._poller.resume()  # until this process's own stream delivers
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name="amplitude_experiment.flag_stream", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        generation = self._generation
        stream = self._stream
        while not self._stopped and generation == FORKS.generation:
            self._connects += 1
            try:
                stream.run_once(self._on_message, self._on_event)
                if not self._stopped:
                    self._logger.debug("[Experiment] renewing the flag stream connection")
                continue  # renewed after its maximum age, or stopped
            except StreamError as error:
                if self._stopped or generation != FORKS.generation:
                    return
                self._stream_failed(str(error))
            if self._wakeup.wait(stream_retry_delay(self._stream_failures, *self._retry)):
                return

    def _on_event(self) -> None:
        """Any event, keep-alives included, on a stream that delivers says the flags are current.
        At most once a poll interval it also runs the poller's probe (auto mode: flagd's snapshot
        appeared?), which the paused poller does not run for a process that never evaluates."""
        if self.transport != "stream":
            return
        self._poller.mark_current()
        probe = self._poller.before_poll
        now = time.monotonic()
        if probe is not None and now >= self._next_probe:
            self._next_probe = now + self._probe_every
            probe()  # True when flagd took over: this source was stopped, the connection is cut

    def _on_message(self, data: str) -> None:
        """Apply a pushed flag list. Only a list this SDK accepts counts as the stream delivering
        (polling stops); a rejected one keeps the last flags and polls until a good one comes."""
        self._messages += 1
        with self._poller.io_lock():  # the list and the pause as one step, between polls
            try:
                self._poller.install(data.encode("utf-8"), self._url)
            except FlagFetchError as error:
                self._logger.error("[Experiment] flag stream message rejected, keeping the last flags: %s", error)
                self._message_rejected("message rejected: %s" % error)
                return
            with self._lock:
                if self._stopped:
                    return
                self._stream_failures = 0
                back = self.transport != "stream"  # not a renewed connection, nor the next message
                self._set_transport("stream")
                self._poller.paused = True  # the stream delivers: polling stops
        self._first_outcome.set()
        if back:
            self._logger.info("[Experiment] flag stream %s connected; polling stopped", self._url)

    def _message_rejected(self, message: str) -> None:
        self._stream_error = message
        self._stream_error_at = self._wall_clock()
        with self._lock:
            starting = self._starting
            streaming = self.transport == "stream"
            if starting:
                self._set_transport("poll")  # start() falls back: see _stream_failed
        if starting:
            self._first_outcome.set()  # start() falls back itself, on the caller's thread
        elif streaming:
            self._fall_back(after_failure=True)

    def _stream_failed(self, message: str) -> None:
        self._stream_failures += 1
        self._stream_error = message
        self._stream_error_at = self._wall_clock()
        self._logger.warning("[Experiment] flag stream %s failed (%d in a row): %s; polling until it is back",
                             self._url, self._stream_failures, message)
        with self._lock:
            starting = self._starting
            if starting:
                self._set_transport("poll")  # the stream may have delivered first: it does not now
        if starting:
            self._first_outcome.set()  # start() falls back itself, on the caller's thread
        else:
            self._fall_back(after_failure=True)

    def _fall_back(self, after_failure: bool = False) -> None:
        """Poll now and at the interval until the stream delivers again. From ``start()`` nothing
        happens when the stream delivered meanwhile; after a failure (the stream thread) always."""
        with self._poller.io_lock():  # never between a stream message's install and its pause
            with self._lock:
                if self._stopped or (self.transport == "stream" and not after_failure):
                    return
                self._set_transport("poll")
                self._poller.paused = False
                first = not self._polling_started
                self._polling_started = True
            if first:
                self._poller.start()  # the first poll, on this thread, then the timer
            else:
                self._poller.poll_now()

    def _set_transport(self, transport: str) -> None:
        if transport != self.transport:
            self.transport = transport
            self._transport_since = self._wall_clock()
