"""Cohort sync of a polling client (``LocalEvaluationConfig(cohort_sync_config=...)``), as
Amplitude's SDK does it, with bounded waits (docs/cohorts.md).

- Before a new flag config is installed, the cohorts it references that are not loaded yet are
  downloaded (in parallel, all within the request timeout); failures are logged and the flags
  are installed anyway, evaluating with the cohorts that are loaded.
- After it is installed, cohorts no flag references are dropped.
- Every ``cohort_polling_interval_millis`` (at least 60 s) every referenced cohort is downloaded
  again with its ``lastModified`` (204: unchanged). Failed downloads are retried on a jittered,
  doubling backoff (never a tight loop), up to the interval.

Thread-safe; fork-safe (the refresh thread restarts in a child that evaluates).
"""

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, TypedDict

from .._cohort_api import Cohort, CohortDownloadError, CohortFetcher
from .._flag_api import Backoff
from .._fork import FORKS
from ..evaluation.cohorts import all_cohort_ids
from ..snapshot.layout import COHORT_STALE_INTERVALS as STALE_INTERVALS, cohort_entry_stale

__all__ = ["CohortState", "CohortStatus", "CohortStore", "CohortSync"]

#: Parallel downloads (Amplitude's SDK uses 32 threads; a few connections are plenty).
DOWNLOAD_THREADS = 8


class CohortState(TypedDict):
    """One referenced cohort as ``flag_source_status["cohorts"]`` shows it (times: epoch seconds)."""

    group_type: Optional[str]
    size: Optional[int]
    last_modified: Optional[int]
    loaded: bool
    stale: bool
    last_success: Optional[float]
    last_error: Optional[str]
    last_error_at: Optional[float]


class CohortStatus(TypedDict):
    """The cohort part of a status: every referenced cohort, and which are missing or stale."""

    cohorts: Dict[str, CohortState]
    missing: List[str]
    stale: List[str]
    downloads: int
    requests: int


class CohortStore:
    """Downloaded cohorts in this process, by cohort id (a :class:`~..evaluation.cohorts.CohortMembership`)."""

    def __init__(self) -> None:
        self._cohorts: Dict[str, Cohort] = {}

    def get(self, cohort_id: str) -> Optional[Cohort]:
        return self._cohorts.get(cohort_id)

    def put(self, cohort: Cohort) -> None:
        self._cohorts[cohort.cohort_id] = cohort  # a single dict store: readers see the old or the new cohort

    def retain(self, cohort_ids: Set[str]) -> None:
        for cohort_id in [c for c in self._cohorts if c not in cohort_ids]:
            self._cohorts.pop(cohort_id, None)

    def ids(self) -> Set[str]:
        return set(self._cohorts)

    def cohorts_containing(self, group_type: str, member: str, cohort_ids: Iterable[str]) -> List[str]:
        found = []
        cohorts = self._cohorts
        for cohort_id in cohort_ids:
            cohort = cohorts.get(cohort_id)
            if cohort is not None and cohort.group_type == group_type and member in cohort.member_ids:
                found.append(cohort_id)
        return found


class CohortSync:
    """Keeps the cohorts the current flags reference loaded in a :class:`CohortStore`."""

    def __init__(self, sync_config: Any, timeout_s: float, logger: logging.Logger,
                 fetcher: Optional[CohortFetcher] = None, wall_clock: Callable[[], float] = time.time,
                 io_lock: Callable[[], Any] = contextlib.nullcontext):
        """:param io_lock: returns the lock refreshes run under: the poller's I/O lock, which
            ``fork()`` takes (asked each time, since a child gets a new one)."""
        from .._http import base_url

        self._io_lock = io_lock
        self.interval = max(int(sync_config.cohort_polling_interval_millis), 1) / 1000.0
        self._timeout = timeout_s
        self._logger = logger
        self._wall_clock = wall_clock
        self.fetcher = fetcher if fetcher is not None else CohortFetcher(
            base_url(sync_config.cohort_server_url, "cohort_server_url"), sync_config.api_key, sync_config.secret_key,
            sync_config.max_cohort_size, timeout_s)
        self.store = CohortStore()
        self.cohorts_containing = self.store.cohorts_containing
        self._backoff = Backoff(min(1.0, self.interval), self.interval, 0.2)
        self._referenced: Set[str] = set()
        self._last_success: Dict[str, float] = {}
        self._errors: Dict[str, tuple] = {}
        self._failures = 0
        self._downloads = 0
        self._lock = threading.Lock()  # one download round at a time
        self._started = False
        self._stopped = False
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._generation = FORKS.generation
        self._wakeup = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        #: The download of each cohort submitted and not known to be over: one at a time per cohort.
        self._in_flight: Dict[str, Future] = {}
        self._lock = threading.Lock()
        self.fetcher.forget_sessions()

    # --- what the poller calls --------------------------------------------------------------

    def prepare(self, flags: Any) -> None:
        """Before ``flags`` are installed: download the cohorts they reference that are not loaded."""
        wanted = all_cohort_ids(flags.cohort_refs)
        self._referenced = self._referenced | wanted  # a new set: status() may be iterating the old one
        missing = wanted - self.store.ids()
        if missing:
            self._download(sorted(missing), full=False)

    def installed(self, flags: Any) -> None:
        """After ``flags`` are installed: drop the cohorts no flag references any more."""
        wanted = all_cohort_ids(flags.cohort_refs)
        self._referenced = wanted
        self.store.retain(wanted)
        for table in (self._last_success, self._errors):
            for cohort_id in [c for c in table if c not in wanted]:
                table.pop(cohort_id, None)

    def start(self) -> None:
        """Start refreshing on the interval (the first refresh one interval from now)."""
        self._started = True
        self._start_thread()

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout + 1.0)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)  # queued downloads would hold up the exit

    def after_fork(self) -> None:
        """In a fork child: the parent's threads and connections are gone; start afresh."""
        self._reset_process_state()
        if self._started and not self._stopped:
            self._start_thread()

    def refresh(self, full: bool = True) -> None:
        """Download every referenced cohort now (``full``) or only the missing and failed ones."""
        ids = set(self._referenced)
        if not full:
            ids = (ids - self.store.ids()) | (ids & set(self._errors))
        if ids:
            self._download(sorted(ids), full=full)

    # --- status -------------------------------------------------------------------------------

    def status(self) -> CohortStatus:
        now = self._wall_clock()
        cohorts: Dict[str, CohortState] = {}
        for cohort_id in sorted(self._referenced):
            cohort = self.store.get(cohort_id)
            success = self._last_success.get(cohort_id)
            error = self._errors.get(cohort_id)
            stale = cohort is not None and (success is None or now - success > STALE_INTERVALS * self.interval)
            cohorts[cohort_id] = CohortState(
                group_type=cohort.group_type if cohort else None, size=cohort.size if cohort else None,
                last_modified=cohort.last_modified if cohort else None, loaded=cohort is not None, stale=stale,
                last_success=success, last_error=error[0] if error else None,
                last_error_at=error[1] if error else None)
        return CohortStatus(cohorts=cohorts, missing=[c for c, s in cohorts.items() if not s["loaded"]],
                            stale=[c for c, s in cohorts.items() if s["stale"]], downloads=self._downloads,
                            requests=self.fetcher.requests)

    def status_fields(self) -> Dict[str, Any]:
        """The cohort keys of ``flag_source_status``."""
        status = self.status()
        return {"cohorts": status["cohorts"], "cohorts_missing": status["missing"], "cohorts_stale": status["stale"]}

    # --- downloading --------------------------------------------------------------------------

    def _download(self, cohort_ids: List[str], full: bool) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="amplitude_experiment.cohort")
            futures = {}
            for cohort_id in cohort_ids:
                future = self._in_flight.get(cohort_id)
                if future is None or future.done():  # a cohort still downloading is waited for, not asked again
                    future = self._in_flight[cohort_id] = self._executor.submit(self._download_one, cohort_id)
                futures[cohort_id] = future
            # Each download ends within the timeout (plus one retry pause); so does the round.
            deadline = time.monotonic() + self._timeout + 1.0
            failed = []
            for cohort_id, future in futures.items():
                try:
                    future.result(timeout=max(deadline - time.monotonic(), 0.0))
                except CohortDownloadError as error:
                    failed.append(cohort_id)
                    repeated = self._errors.get(cohort_id, ("",))[0] == str(error)
                    self._errors[cohort_id] = (str(error), self._wall_clock())
                    # Logged when it starts or changes; a retry that fails the same way is DEBUG.
                    level = logging.DEBUG if repeated else logging.ERROR if error.kind == "too_large" \
                        else logging.WARNING
                    self._logger.log(level, "[Experiment] cohort %s could not be downloaded%s: %s", cohort_id,
                                     "; flags evaluate as if no one were in it" if self.store.get(cohort_id) is None
                                     else "; keeping the copy loaded before", error)
                except FutureTimeout:
                    failed.append(cohort_id)
                    text = "not downloaded within the round's %.1f s (the cohort server is slow or busy)" \
                        % (self._timeout + 1.0)
                    self._errors[cohort_id] = (text, self._wall_clock())
                    self._logger.warning("[Experiment] cohort %s %s", cohort_id, text)
                except Exception as error:  # a bug: report, never raise
                    failed.append(cohort_id)
                    self._errors[cohort_id] = ("%s: %s" % (type(error).__name__, error), self._wall_clock())
                    self._logger.warning("[Experiment] cohort %s could not be downloaded: %r", cohort_id, error)
            # Downloads the round did not start never start later (the next round asks again):
            # retry rounds must not pile up downloads while the cohort server does not answer.
            for cohort_id, future in futures.items():
                if future.cancel() or future.done():
                    self._in_flight.pop(cohort_id, None)
            self._failures = self._failures + 1 if failed else 0

    def _download_one(self, cohort_id: str) -> None:
        held = self.store.get(cohort_id)
        cohort = self.fetcher.download(cohort_id, held.last_modified if held is not None else None)
        self._downloads += 1
        if cohort_id not in self._referenced:
            return  # dropped by a new flag config while it downloaded (a round that ran out of time)
        if cohort is not None:
            self.store.put(cohort)
            if self._logger.isEnabledFor(logging.DEBUG):
                self._logger.debug("[Experiment] cohort %s loaded: %d members (%s)", cohort_id, cohort.size,
                                   cohort.group_type)
        self._last_success[cohort_id] = self._wall_clock()
        self._errors.pop(cohort_id, None)

    # --- the refresh thread -------------------------------------------------------------------

    def _start_thread(self) -> None:
        if self._thread is not None or self._stopped:
            return
        self._thread = threading.Thread(target=self._run, name="amplitude_experiment.cohort_poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        generation = self._generation
        next_full = time.monotonic() + self.interval
        while True:
            delay = next_full - time.monotonic()
            if self._failures or self._errors:
                delay = min(delay, self._backoff.delay(max(self._failures, 1)))
            if self._wakeup.wait(max(delay, 0.0)) or self._stopped or generation != FORKS.generation:
                if self._stopped or generation != FORKS.generation:
                    return
                self._wakeup.clear()  # woken by refresh_soon(): a full round now
                next_full = time.monotonic()
            full = time.monotonic() >= next_full
            try:
                # Under the poller's I/O lock, which fork() takes: a child never inherits a lock
                # that a download or its log line held (at most one round, bounded by the timeout).
                with self._io_lock():
                    self.refresh(full=full)
            except Exception:  # never let the thread die
                self._logger.exception("[Experiment] cohort refresh failed")
            if full:
                next_full = time.monotonic() + self.interval

    def refresh_soon(self) -> None:
        """Wake the refresh thread for a full round now (tests, operators)."""
        self._wakeup.set()


def shared_cohort_fields(entries: List[Dict[str, Any]], now: float) -> Dict[str, Any]:
    """The cohort keys of ``flag_source_status`` in shared mode, from flagd's cohort directory."""
    cohorts: Dict[str, CohortState] = {}
    for entry in entries:
        fetched = entry.get("fetched_at_ns") or 0
        error_at = entry.get("error_at_ns") or 0
        cohorts[str(entry.get("id"))] = CohortState(
            group_type=entry.get("group_type"), size=entry.get("size"), last_modified=entry.get("last_modified"),
            loaded=bool(entry.get("members")), stale=cohort_entry_stale(entry, int(now * 1e9)),
            last_success=fetched / 1e9 if fetched else None, last_error=entry.get("error") or None,
            last_error_at=error_at / 1e9 if error_at else None)
    return {"cohorts": cohorts, "cohorts_missing": [c for c, s in cohorts.items() if not s["loaded"]],
            "cohorts_stale": [c for c, s in cohorts.items() if s["stale"]]}
