"""Flag sources that read flagd's shared-memory snapshot (docs/shared-mode.md).

:class:`SharedSnapshotSource` (``flag_source="flagd"``) evaluates from the snapshot only.
:class:`AutoFlagSource` (``"auto"``) uses the snapshot when flagd publishes one for this key and
polls Amplitude like the reference otherwise, switching to the snapshot once one appears.

The hot path, ``current()``, is one 8-byte load from the mapped index and an int compare. A new
version costs a worker the mapping and a check of its flag directory; a flag is compiled when a
request first needs it, and only if its content changed since this process last compiled it
(compiled flags are kept by content digest across versions). No thread is started, nothing is
kept per process but the read-only mappings, which stay valid across ``fork()``.
"""

import logging
import threading
import time
from typing import Any, Callable, Optional

from ..evaluation import CompiledFlagCache, FlagSet
from ..snapshot import FlagTable, IndexState, SnapshotError, SnapshotFollower, SnapshotReader, publisher_alive
from ..snapshot.reader import CohortFollower
from ..snapshot.health import read_health
from ..snapshot.transport import read_transport
from ..snapshot.host import list_published
from ..snapshot.reader import CHECK_EVERY, STALE_INTERVALS
from .._logging import report_problems
from .config import LocalEvaluationConfig
from .status import FlagSourceStatus, empty_status, publisher_trouble

#: Seconds between two probes for flagd while polling ("auto").
CHECK_SECONDS = 1.0
#: How often ``start()`` looks for the snapshot while it waits, in flagd-only mode.
START_POLL_SECONDS = 0.05

__all__ = ["CHECK_EVERY", "STALE_INTERVALS", "AutoFlagSource", "FlagdUnavailableError", "SharedSnapshotSource"]


class FlagdUnavailableError(RuntimeError):
    """``flag_source="flagd"`` and no usable snapshot was published for this key in time."""


class SharedSnapshotSource:
    """Flags from flagd's snapshot for this deployment key, read from POSIX shared memory.

    Following the version is the snapshot package's job (:class:`~..snapshot.SnapshotFollower`,
    whose ``current`` is this source's hot path); this class adds what the SDK needs on top: a
    flag set per version over a compiled-flag cache kept across versions, each problem logged
    once, and the status. Thread- and fork-safe: a source created and started before ``fork()``
    works in every child, since the index mapping is MAP_SHARED and each process notices new
    versions by itself.
    """

    def __init__(
        self,
        api_key: str,
        config: LocalEvaluationConfig,
        logger: logging.Logger,
        reader: Optional[SnapshotReader] = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ):
        reader = reader if reader is not None else SnapshotReader(config.shm_prefix, api_key, owner=config.flagd_owner)
        self._prefix = config.shm_prefix
        self._logger = logger
        self._timeout = max(config.flag_config_poller_request_timeout_millis, 1) / 1000.0
        self._monotonic = monotonic
        self._wall_clock_ns = wall_clock_ns
        self._sleep = sleep
        #: Compiled flags by content digest, kept across versions (pruned to the current one).
        self._compiled = CompiledFlagCache()
        self._follower: SnapshotFollower[FlagSet] = SnapshotFollower(
            reader, self._flag_set, on_problem=self._log_problem, on_heartbeat=self._log_heartbeat,
            default_interval_ms=config.flag_config_polling_interval_millis, monotonic=monotonic,
            wall_clock_ns=wall_clock_ns)
        #: THE hot path: the follower's own method, one 8-byte load and an int compare per call.
        self.current: Callable[[], Optional[FlagSet]] = self._follower.current
        self.index_name = reader.index_name
        #: flagd's cohorts (docs/cohorts.md): read in place, no cohort config needed here.
        self._cohorts = CohortFollower(reader, on_problem=self._log_problem)
        self.cohort_membership = self._cohorts.current

    # --- FlagSource ---------------------------------------------------------------------------

    def start(self) -> None:
        """Wait up to the request timeout for a snapshot.

        :raises FlagdUnavailableError: naming the index and how to start flagd.
        """
        deadline = self._monotonic() + self._timeout
        while not self.try_attach():
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise FlagdUnavailableError(
                    "flag_source='flagd' but no flagd snapshot for this deployment key appeared within "
                    "%.1f s (%s; index %s). Start flagd for this key with the same prefix, e.g. "
                    "`AMPLITUDE_DEPLOYMENT_KEY=... amplitude-flagd run --shm-prefix %s`, or use "
                    "flag_source='auto' to poll Amplitude when flagd is absent.%s"
                    % (self._timeout, self._follower.last_problem or "nothing published", self.index_name,
                       self._prefix, " " + (self.other_keys_hint() or "")))
            self._sleep(min(START_POLL_SECONDS, remaining))

    def try_attach(self) -> bool:
        """Map the index and serve its version if one is published; False if none is usable yet."""
        return self._follower.try_attach()

    @property
    def snapshot(self) -> Optional[FlagTable]:
        """The version served, None before one is."""
        return self._follower.table

    def stop(self) -> None:
        """Nothing runs in the background; the last flags keep being served. Idempotent."""

    def status(self) -> FlagSourceStatus:
        """The typed status; serves the version the index names now first, so an idle process does
        not report the version it happened to evaluate last."""
        follower = self._follower
        try:
            state = follower.state()  # maps the index by name if it is not mapped yet
        except SnapshotError as error:
            follower.note_problem("index refused: %s" % error)
            state = IndexState()
        flags = follower.catch_up()
        table = follower.table
        now = self._wall_clock_ns()
        follower.check_heartbeat(now)
        meta = table.meta if table is not None else {}
        words = follower.reader.words
        health = read_health(words)
        alive = bool(publisher_alive(state)) if state.publisher_pid else False
        heartbeat_age = _age(now, state.heartbeat_ns)
        fresh = heartbeat_age is not None and heartbeat_age * 1000 <= STALE_INTERVALS * follower.interval_ms()
        problem = follower.last_problem
        status = empty_status("flagd", "flagd")
        status.update(
            healthy=bool(flags is not None and alive and fresh and not health.failing and problem is None),
            version=table.version if table is not None else None,
            published_version=state.version or None,
            age_seconds=_age(now, table.created_ns) if table is not None else None,
            last_success=state.last_fetch_ns / 1e9 if state.last_fetch_ns else None,
            publisher_pid=state.publisher_pid or None,
            publisher_alive=alive,
            heartbeat_age_seconds=heartbeat_age,
            last_fetch_age_seconds=_age(now, state.last_fetch_ns),
            poll_interval_seconds=follower.interval_ms() / 1000.0,
            flags=len(flags) if flags is not None else None,
            flags_compiled=self._compiled.compiles,
            upstream=meta.get("source"),
            index=self.index_name,
            last_error=problem if flags is not None or problem is None
            else "; ".join(text for text in (problem, self.other_keys_hint()) if text),
            last_error_at=follower.last_problem_at if problem is not None else None,
            publisher_last_error=health.last_error,
            publisher_last_error_at=health.last_error_at_ns / 1e9 if health.last_error_at_ns else None,
            publisher_consecutive_failures=health.consecutive_failures,
            publisher_failing=list(health.failing),
        )
        transport = read_transport(words)  # how flagd gets the flags: poll, stream or file
        status.update(
            transport=transport.transport,
            transport_since=transport.transport_since_ns / 1e9 if transport.transport_since_ns else None,
            stream_last_error=transport.stream_last_error,
            stream_last_error_at=transport.stream_last_error_at_ns / 1e9 if transport.stream_last_error_at_ns else None,
        )
        view = self._cohorts.current()
        if view is not None:
            from ._cohort_sync import shared_cohort_fields

            status.update(shared_cohort_fields(view.cohorts, now / 1e9))
        return status

    def other_keys_hint(self) -> Optional[str]:
        """When flagd publishes other keys under this prefix but not ours, a sentence saying so
        (key hashes only); None otherwise. Lists /dev/shm: for start-up and status, not the hot path."""
        ours = self.index_name.lstrip("/")
        others = [hashed for prefix, hashed in list_published(self._prefix) if "%s.%s.idx" % (prefix, hashed) != ours]
        if not others or self._follower.reader.attached:
            return None
        mine = ours[len(self._prefix) + 1:-len(".idx")]
        return ("flagd publishes key hash %s under prefix %r, but this client's deployment key hashes to %s: "
                "the worker and flagd were given different deployment keys." % (", ".join(others), self._prefix, mine))

    # --- what the SDK adds to following the snapshot ------------------------------------------

    def _flag_set(self, table: FlagTable) -> FlagSet:
        """The flag set of a newly mapped version: nothing is compiled until a request needs it."""
        # flagd published in storage order with dependencies and cycles worked out: every worker
        # uses exactly that.
        self._compiled.retain(table)
        flags = FlagSet(table, self._compiled, on_problem=self._flag_problem)
        report_problems(self._logger, flags, "flagd snapshot v%d" % table.version)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("[Experiment] mapped flagd snapshot v%d (%s): %d flag configs, %d bytes",
                               table.version, self.index_name, len(table), table.size)
        return flags

    def _flag_problem(self, message: str) -> None:
        """A flag of the served snapshot that this SDK cannot compile: logged once, left out."""
        self._follower.note_problem(message)
        self._logger.error("[Experiment] flagd snapshot: %s", message)

    def _log_problem(self, message: str) -> None:
        self._logger.error("[Experiment] %s", message)

    def _log_heartbeat(self, stale: bool, age_ns: int) -> None:
        if stale:
            interval_s = self._follower.interval_ms() / 1000.0
            self._logger.warning(
                "[Experiment] flagd heartbeat in %s is %.1f s old (more than %d poll intervals of %.1f s): "
                "%s. Serving %s meanwhile.",
                self.index_name, age_ns / 1e9, STALE_INTERVALS, interval_s, self._trouble(),
                _describe(self._follower.table))
        else:
            self._logger.info("[Experiment] flagd heartbeat in %s is fresh again", self.index_name)

    def _trouble(self) -> str:
        """What the index tells about why the heartbeat is old (a syscall and a /proc read: warnings only)."""
        try:
            state = self._follower.state()
        except SnapshotError as error:
            return "the index cannot be read (%s)" % error
        health = read_health(self._follower.reader.words)
        return publisher_trouble(state.publisher_pid, publisher_alive(state), health.consecutive_failures,
                                 list(health.failing), health.last_error,
                                 _age(self._wall_clock_ns(), health.last_error_at_ns))


class AutoFlagSource:
    """``flag_source="auto"``: flagd's snapshot when one is published for this key, else polling.

    While polling, ``current()`` looks for the snapshot at most once a second (a monotonic clock
    read per call, one failed ``shm_open`` per second); once a usable snapshot appears it switches
    for good: the poller is stopped and ``current`` becomes the shared source's own method, so the
    hot path is exactly shared mode's. Thread- and fork-safe like both sources it wraps.
    """

    def __init__(
        self,
        api_key: str,
        config: LocalEvaluationConfig,
        logger: logging.Logger,
        shared: Optional[SharedSnapshotSource] = None,
        poller: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if poller is None:
            from ._poller import PollingFlagSource

            poller = PollingFlagSource(api_key, config, logger)
        self._shared = shared if shared is not None else SharedSnapshotSource(api_key, config, logger)
        self._poller = poller
        self._logger = logger
        self._monotonic = monotonic
        self._next_probe = 0.0
        self._poller_started = False
        self._switch_lock = threading.Lock()
        self.mode = "poll"
        if hasattr(poller, "before_poll"):
            # A process that polls but never evaluates (a preloading gunicorn master) must switch
            # too: its poller thread looks for the snapshot before each poll.
            poller.before_poll = self._probe_from_poller
        # An instance attribute shadowing the method: switching rebinds it to the shared source's.
        self.current: Callable[[], Optional[FlagSet]] = self._polling_current

    def start(self) -> None:
        """Attach to flagd's snapshot if it is there (no thread); otherwise start polling."""
        if self.mode == "flagd" or self._switch_if_published():
            return
        hint = self._shared.other_keys_hint()
        if hint:
            self._logger.warning("[Experiment] no flagd snapshot for this deployment key, polling instead: %s", hint)
        self._poller_started = True
        self._poller.start()
        self._next_probe = self._monotonic() + CHECK_SECONDS

    def _polling_current(self) -> Optional[FlagSet]:
        if self._monotonic() >= self._next_probe:
            self._next_probe = self._monotonic() + CHECK_SECONDS
            if self._switch_if_published():
                return self._shared.current()
        return self._poller.current()

    def _probe_from_poller(self) -> bool:
        """On the poller thread, before a poll: switch if flagd publishes now (True: do not poll)."""
        return self._switch_if_published(stop_poller_inline=True)

    def _switch_if_published(self, stop_poller_inline: bool = False) -> bool:
        with self._switch_lock:  # the evaluating threads and the poller thread may both probe
            if self.mode == "flagd":
                return True
            return self._switch_locked(stop_poller_inline)

    def _switch_locked(self, stop_poller_inline: bool) -> bool:
        shared = self._shared
        if not shared.try_attach():
            return False
        self.mode = "flagd"
        self.current = shared.current
        snapshot = shared.snapshot
        self._logger.info("[Experiment] using flagd snapshot v%d from %s%s",
                          snapshot.version if snapshot is not None else 0, shared.index_name,
                          "; polling stopped" if self._poller_started else "")
        if self._poller_started and stop_poller_inline:
            self._poller.stop()  # on the poller thread itself: nothing to join
        elif self._poller_started:
            # stop() joins the poller thread, which may be inside an HTTP request: not on an evaluate.
            threading.Thread(target=self._poller.stop, name="amplitude_experiment.poller_stop", daemon=True).start()
        return True

    def stop(self) -> None:
        self._poller.stop()
        self._shared.stop()

    def cohort_membership(self) -> Any:
        """The cohorts of whichever source serves now (flagd's, or this process's cohort sync)."""
        if self.mode == "flagd":
            return self._shared.cohort_membership()
        lookup = getattr(self._poller, "cohort_membership", None)
        return lookup() if lookup is not None else None

    def status(self) -> FlagSourceStatus:
        if self.mode == "flagd":
            status = self._shared.status()
        else:
            status = self._poller.status()
            status["index"] = self._shared.index_name
        status["flag_source"] = "auto"
        return status


def _age(now_ns: int, then_ns: int) -> Optional[float]:
    return max(now_ns - then_ns, 0) / 1e9 if then_ns else None


def _describe(snapshot: Optional[FlagTable]) -> str:
    return "snapshot v%d" % snapshot.version if snapshot is not None else "no flags"
