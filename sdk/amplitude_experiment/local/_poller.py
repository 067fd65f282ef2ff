"""The standalone flag source: poll ``GET /sdk/v2/flags`` like Amplitude's SDK, without its faults.

Differences from the reference (docs/compatibility.md): a failed poll is retried with bounded
exponential backoff instead of a zero-delay loop (Q4), missed ticks are not replayed as a burst,
``start()`` logs a failed first fetch instead of raising, a poll ends within its timeout whatever
the server sends, and the poller restarts by itself in a child process after ``fork()``.
"""

import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable, Optional

import requests

from .._flag_api import FLAGS_PATH, MAX_FLAG_CONFIG_BYTES, Backoff
from .._fork import FORKS
from .._http import FlagConfigFetcher, FlagFetchError, base_url, excerpt
from .._logging import report_problems
from ..evaluation import CompiledFlagCache, FlagConfigError, FlagSet, decode_config, plan_flags
from .config import LocalEvaluationConfig
from .status import FlagSourceStatus, empty_status

MIN_RETRY_SECONDS = 0.5
RETRY_JITTER = 0.2

# fork() copies the memory of every thread but runs only the forking one: a lock another thread
# held at that instant stays held in the child for ever. Poller threads do their logging and I/O
# (stream buffers, HTTP) under this lock, and fork() waits for it (at most one poll, which the
# whole-request timeout bounds), so a child never inherits a stream lock the poller held.
_POLL_IO_LOCK = threading.RLock()


def _before_fork() -> None:
    _POLL_IO_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _POLL_IO_LOCK.release()


def _after_fork_in_child() -> None:
    global _POLL_IO_LOCK
    _POLL_IO_LOCK = threading.RLock()  # the forking thread's hold is meaningless here


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


class PollingFlagSource:
    """Fetches flag configs on a timer thread and keeps the last good ones.

    Thread-safe; fork-safe: in a child process the first ``current()`` starts a fresh poller and
    HTTP session.
    """

    def __init__(
        self,
        api_key: str,
        config: LocalEvaluationConfig,
        logger: logging.Logger,
        session_factory: Callable[[], requests.Session] = requests.Session,
        wall_clock: Callable[[], float] = time.time,
        max_bytes: int = MAX_FLAG_CONFIG_BYTES,
    ):
        self._url = base_url(config.server_url, "server_url") + FLAGS_PATH
        self._interval = max(config.flag_config_polling_interval_millis, 1) / 1000.0
        self._timeout = max(config.flag_config_poller_request_timeout_millis, 1) / 1000.0
        self._fetcher = FlagConfigFetcher(self._url, api_key, self._timeout, max_bytes, session_factory)
        self._secret = api_key
        self._backoff = Backoff(min(MIN_RETRY_SECONDS, self._interval), self._interval, RETRY_JITTER)
        self._logger = logger
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._flags: Optional[FlagSet] = None
        #: Compiled flags by content digest, across polls: a poll that changed one flag compiles one.
        self._compiled = CompiledFlagCache()
        self._body_digest: Optional[bytes] = None
        self._last_success: Optional[float] = None
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[float] = None
        self._failures = 0
        self._polls = 0
        self._started = False
        self._stopped = False
        #: Asked on the poller thread before each timed poll; True means another source took over
        #: and this poller ends without polling (auto mode's probe for flagd, see _shared_source).
        self.before_poll: Optional[Callable[[], bool]] = None
        #: Cohort sync (docs/cohorts.md) when ``cohort_sync_config`` is set, else None.
        self.cohorts = None
        if config.cohort_sync_config is not None:
            from ._cohort_sync import CohortSync

            self.cohorts = CohortSync(config.cohort_sync_config, self._timeout, logger, io_lock=self.io_lock)
        #: While True the timer thread skips its polls: a stream delivers the flags (local/_streamer.py).
        self.paused = False
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Threads and connections do not survive fork(); the flags do."""
        self._generation = FORKS.generation
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._fetcher.forget_session()

    # --- FlagSource ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
        self._poll_once()
        self._start_thread()
        if self.cohorts is not None:
            self.cohorts.start()

    def resume(self) -> None:
        """Poll at the interval from now on, starting the timer thread if needed (no poll now)."""
        self.paused = False
        with self._lock:
            if self._stopped:
                return
            self._started = True
        self._start_thread()

    def poll_now(self) -> bool:
        """Poll once on the calling thread; True when it succeeded."""
        return self._poll_once()

    def io_lock(self) -> Any:
        """The re-entrant lock every poll and install runs under (fork-safe: renewed in a child).
        A stream holds it to install a list and set ``paused`` as one step, so no poll begun
        before that step installs its list after it."""
        return _POLL_IO_LOCK

    def install(self, body: bytes, origin: str) -> None:
        """Apply a flag list that arrived another way (a stream message) exactly as a poll result:
        same parser, same storage order, same compiled-flag cache.

        :raises FlagFetchError: the body is not a flag list this SDK accepts (the flags are kept),
            whatever failed (json raises RecursionError for deep nesting, say).
        """
        with _POLL_IO_LOCK:
            try:
                self._install(body, origin)
            except Exception as error:
                self._last_error = str(error)
                self._last_error_at = self._wall_clock()
                if isinstance(error, FlagFetchError):
                    raise
                raise FlagFetchError("flag config rejected: %s" % error) from None
            self._failures = 0
            self._last_error = self._last_error_at = None
            self._last_success = self._wall_clock()

    def mark_current(self) -> None:
        """The flags are known to be current without a fetch (a stream's keep-alive while it
        delivers): ``last_success`` and ``age_seconds`` count from now."""
        if self._flags is not None:
            self._last_success = self._wall_clock()

    def current(self) -> Optional[FlagSet]:
        if self._generation != FORKS.generation:
            with FORKS.restart_lock:  # threads noticing the fork at once restart it once
                if self._generation != FORKS.generation:
                    self._restart_after_fork()
        return self._flags

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._wakeup.set()
        self._fetcher.abort()  # a poll under way (this poller's thread or the stream's) ends now
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout + 1.0)
        self._fetcher.close()
        if self.cohorts is not None:
            self.cohorts.stop()

    def cohort_membership(self) -> Any:
        """The loaded cohorts (a ``CohortMembership``), or None without cohort sync."""
        return self.cohorts

    def status(self) -> FlagSourceStatus:
        flags = self._flags
        status = empty_status("poll", "poll")
        status.update(
            healthy=flags is not None and self._failures == 0,
            url=self._url,
            flags=len(flags) if flags is not None else None,
            flags_compiled=self._compiled.compiles,
            last_success=self._last_success,
            age_seconds=None if self._last_success is None else self._wall_clock() - self._last_success,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            consecutive_failures=self._failures,
            polls=self._polls,
            transport="poll",
        )
        if self.cohorts is not None:
            status.update(self.cohorts.status_fields())
        return status

    # --- polling ------------------------------------------------------------------------------

    def _restart_after_fork(self) -> None:
        # The parent's lock may have been held by another thread at fork time: replace, never acquire.
        self._reset_process_state()
        if self.cohorts is not None:
            self.cohorts.after_fork()
        if self._started and not self._stopped:
            self._logger.debug("[Experiment] restarting the flag poller in forked process")
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(
                target=self._run, name="amplitude_experiment.flag_poller", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        wakeup = self._wakeup
        while not wakeup.wait(self._next_delay()):
            if self._generation != FORKS.generation:
                return  # a thread copied into a fork child never runs, but be certain
            before_poll = self.before_poll
            if before_poll is not None and before_poll():
                return
            if self.paused:
                continue
            self._poll_once()

    def _next_delay(self) -> float:
        if self._failures == 0:
            return self._interval
        return self._backoff.delay(self._failures)

    def _poll_once(self) -> bool:
        with _POLL_IO_LOCK:
            return self._poll_locked()

    def _poll_locked(self) -> bool:
        if self._stopped or self.paused:
            return False
        self._polls += 1
        try:
            self._fetch_and_install()
        except Exception as error:  # keep the last good flags whatever went wrong
            if self._stopped:
                return False  # cut short by stop()
            self._failures += 1
            self._last_error = str(error)
            self._last_error_at = self._wall_clock()
            self._logger.error(
                "[Experiment] flag config poll failed (%d in a row), keeping the %s: GET %s: %s",
                self._failures,
                "last good flags" if self._flags is not None else "empty config",
                self._url,
                error,
            )
            return False
        self._failures = 0
        self._last_error = self._last_error_at = None
        self._last_success = self._wall_clock()
        return True

    def _fetch_and_install(self) -> None:
        self._install(self._fetcher.fetch(), self._url)

    def _install(self, body: bytes, origin: str) -> None:
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest == self._body_digest:
            return
        try:
            raw = decode_config(body)
        except FlagConfigError:
            raise FlagFetchError("answered 200 with a body that is not JSON: %s" % excerpt(body, self._secret)) from None
        previous = self._flags
        try:
            catalog = plan_flags(raw, previous.catalog.keys() if previous is not None else (), self._compiled)
        except FlagConfigError as error:
            raise FlagFetchError("flag config rejected as a whole: %s" % error) from None
        self._compiled.retain(catalog)
        flags = FlagSet(catalog, self._compiled)
        report_problems(self._logger, flags, "flag config from " + origin)
        if self.cohorts is not None:
            self.cohorts.prepare(flags)  # cohorts first, as the reference: new flags see their cohorts
        self._flags = flags
        if self.cohorts is not None:
            self.cohorts.installed(flags)
        self._body_digest = digest
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("[Experiment] loaded %d flag configs from %s", len(flags), origin)
