"""The standalone flag source: poll ``GET /sdk/v2/flags`` like Amplitude's SDK, without its faults.

Differences from the reference (docs/compatibility.md): a failed poll is retried with bounded
exponential backoff instead of a zero-delay loop (Q4), missed ticks are not replayed as a burst,
``start()`` logs a failed first fetch instead of raising, and the poller restarts by itself in a
child process after ``fork()``.
"""

import hashlib
import logging
import random
import threading
import time
from typing import Callable, Optional

import requests

from .._fork import FORKS
from .._http import base_url, excerpt
from ..evaluation import CompiledFlagCache, FlagConfigError, FlagSet, decode_config, plan_flags
from ..version import LIBRARY
from ._sources import report_problems
from .config import LocalEvaluationConfig
from .status import FlagSourceStatus, empty_status

FLAGS_PATH = "/sdk/v2/flags?v=0"
MIN_RETRY_SECONDS = 0.5


class FlagFetchError(Exception):
    """A poll that produced no usable flag config."""


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
    ):
        self._url = base_url(config.server_url, "server_url") + FLAGS_PATH
        self._headers = {
            "Authorization": "Api-Key " + api_key,
            "Content-Type": "application/json;charset=utf-8",
            "X-Amp-Exp-Library": LIBRARY,
        }
        self._interval = max(config.flag_config_polling_interval_millis, 1) / 1000.0
        self._timeout = max(config.flag_config_poller_request_timeout_millis, 1) / 1000.0
        self._logger = logger
        self._session_factory = session_factory
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
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Threads and connections do not survive fork(); the flags do."""
        self._generation = FORKS.generation
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._session: Optional[requests.Session] = None

    # --- FlagSource ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
        self._poll_once()
        self._start_thread()

    def current(self) -> Optional[FlagSet]:
        if self._generation != FORKS.generation:
            self._restart_after_fork()
        return self._flags

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread, session = self._thread, self._session
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout + 1.0)
        if session is not None:
            session.close()

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
        )
        return status

    # --- polling ------------------------------------------------------------------------------

    def _restart_after_fork(self) -> None:
        # The parent's lock may have been held by another thread at fork time: replace, never acquire.
        self._reset_process_state()
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
            self._poll_once()

    def _next_delay(self) -> float:
        if self._failures == 0:
            return self._interval
        backoff = min(self._interval, MIN_RETRY_SECONDS * (2 ** min(self._failures - 1, 16)))
        return backoff * random.uniform(0.8, 1.0)

    def _poll_once(self) -> bool:
        self._polls += 1
        try:
            self._fetch_and_install()
        except Exception as error:  # keep the last good flags whatever went wrong
            self._failures += 1
            self._last_error = str(error)
            self._last_error_at = self._wall_clock()
            self._logger.error(
                "[Experiment] flag config poll failed (%d in a row), keeping the %s: %s",
                self._failures,
                "last good flags" if self._flags is not None else "empty config",
                error,
            )
            return False
        self._failures = 0
        self._last_error = self._last_error_at = None
        self._last_success = self._wall_clock()
        return True

    def _fetch_and_install(self) -> None:
        session = self._session
        if session is None:
            session = self._session = self._session_factory()
        try:
            response = session.get(self._url, headers=self._headers, timeout=self._timeout)
        except requests.RequestException as error:
            raise FlagFetchError("GET %s failed: %s" % (self._url, error)) from None
        if response.status_code != 200:
            raise FlagFetchError("GET %s answered %d: %s" % (self._url, response.status_code, excerpt(response)))
        body = response.content
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest == self._body_digest:
            return
        try:
            raw = decode_config(body)
        except FlagConfigError:
            raise FlagFetchError("GET %s answered 200 with a body that is not JSON: %s" % (self._url, excerpt(response))) from None
        previous = self._flags
        try:
            catalog = plan_flags(raw, previous.catalog.keys() if previous is not None else (), self._compiled)
        except FlagConfigError as error:
            raise FlagFetchError("flag config rejected as a whole: %s" % error) from None
        self._compiled.retain(catalog)
        flags = FlagSet(catalog, self._compiled)
        report_problems(self._logger, flags, "flag config from " + self._url)
        self._flags = flags
        self._body_digest = digest
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("[Experiment] loaded %d flag configs from %s", len(flags), self._url)
