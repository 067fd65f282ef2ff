"""Flag sources that read flagd's shared-memory snapshot (docs/shared-mode.md).

:class:`SharedSnapshotSource` (``flag_source="flagd"``) evaluates from the snapshot only.
:class:`AutoFlagSource` (``"auto"``) uses the snapshot when flagd publishes one for this key and
polls Amplitude like the reference otherwise, switching to the snapshot once one appears.

The hot path, ``current()``, is one 8-byte load from the mapped index and an int compare; the
snapshot is decoded and compiled only when the version changes. No thread is started, nothing is
kept per process but the read-only mappings, which stay valid across ``fork()``.
"""

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ..evaluation import FlagConfigError, FlagSet, compile_flags
from ..snapshot.segment import (
    RETIRED,
    W_HEARTBEAT,
    W_POLL,
    W_VERSION,
    IndexState,
    Snapshot,
    SnapshotError,
    SnapshotReader,
    publisher_alive,
)
from .._logging import report_problems
from .config import LocalEvaluationConfig

#: Evaluations between two looks at the clock for the once-a-second checks (heartbeat, re-attach).
CHECK_EVERY = 64
#: Seconds between two of those checks, and between two probes for flagd while polling.
CHECK_SECONDS = 1.0
#: A heartbeat older than this many poll intervals is logged, once.
STALE_INTERVALS = 3
#: How often ``start()`` looks for the snapshot while it waits, in flagd-only mode.
START_POLL_SECONDS = 0.05


class FlagdUnavailableError(RuntimeError):
    """``flag_source="flagd"`` and no usable snapshot was published for this key in time."""


class SharedSnapshotSource:
    """Flags from flagd's snapshot for this deployment key, read from POSIX shared memory.

    Thread-safe without locks (the state is one tuple swapped as a reference; two threads that
    see a new version at once both decode it, harmlessly). Fork-safe: a source created and started
    before ``fork()`` works in every child, since the index mapping is MAP_SHARED and each process
    notices new versions by itself.
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
        self._reader = reader if reader is not None else SnapshotReader(
            config.shm_prefix, api_key, owner=config.flagd_owner)
        self._prefix = config.shm_prefix
        self._logger = logger
        self._timeout = max(config.flag_config_poller_request_timeout_millis, 1) / 1000.0
        self._own_interval_ms = max(config.flag_config_polling_interval_millis, 1)
        self._monotonic = monotonic
        self._wall_clock_ns = wall_clock_ns
        self._sleep = sleep
        # The hot path reads only these two attributes. _words is the reader's index view (a tuple
        # of zeros before the index is mapped); _state is (index version acknowledged, flags).
        self._words: Any = self._reader.words
        self._state: Tuple[int, Optional[FlagSet]] = (0, None)
        self._snapshot: Optional[Snapshot] = None
        self._countdown = CHECK_EVERY
        self._next_check = 0.0
        self._stale_warned = False
        self._failed_version = -1
        self._last_problem: Optional[str] = None
        self.segment = self._reader.index_name

    # --- FlagSource ---------------------------------------------------------------------------

    def start(self) -> None:
        """Wait up to the request timeout for a snapshot.

        :raises FlagdUnavailableError: naming the segment and how to start flagd.
        """
        deadline = self._monotonic() + self._timeout
        while not self.try_attach():
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise FlagdUnavailableError(
                    "flag_source='flagd' but no flagd snapshot for this deployment key appeared within "
                    "%.1f s (%s; index segment %s). Start flagd for this key with the same prefix, e.g. "
                    "`AMPLITUDE_DEPLOYMENT_KEY=... amplitude-flagd run --shm-prefix %s`, or use "
                    "flag_source='auto' to poll Amplitude when flagd is absent."
                    % (self._timeout, self._last_problem or "nothing published", self.segment, self._prefix))
            self._sleep(min(START_POLL_SECONDS, remaining))

    def current(self) -> Optional[FlagSet]:
        state = self._state
        # THE hot path: one aligned 8-byte load from the read-only index mapping, no syscall.
        if self._words[W_VERSION] != state[0]:
            return self._refresh()
        self._countdown -= 1  # unlocked on purpose: a lost decrement only delays the next check
        if self._countdown < 0:
            self._periodic()
        return state[1]

    def stop(self) -> None:
        """Nothing runs in the background; the last flags keep being served. Idempotent."""

    def status(self) -> Dict[str, Any]:
        try:
            state = self._reader.state()  # maps the index by name if it is not mapped yet
        except SnapshotError as error:
            self._last_problem = "index refused: %s" % error
            state = IndexState()
        self._words = self._reader.words
        snapshot = self._snapshot
        flags = self._state[1]
        now = self._wall_clock_ns()
        self._check_heartbeat(now)
        document = snapshot.document if snapshot is not None else {}
        return {
            "source": "flagd",
            "version": snapshot.version if snapshot is not None else None,
            "published_version": state.version or None,
            "age_seconds": _age(now, snapshot.created_ns) if snapshot is not None else None,
            "publisher_pid": state.publisher_pid or None,
            "publisher_alive": bool(publisher_alive(state)) if state.publisher_pid else False,
            "heartbeat_age_seconds": _age(now, state.heartbeat_ns),
            "last_fetch_age_seconds": _age(now, state.last_fetch_ns),
            "poll_interval_seconds": self._interval_ms() / 1000.0,
            "flags": len(flags) if flags is not None else None,
            "upstream": document.get("source"),
            "segment": self.segment,
            "last_error": self._last_problem,
        }

    # --- attaching and refreshing (off the hot path) -----------------------------------------

    def try_attach(self) -> bool:
        """Map the index and install its snapshot if one is published; False if none is usable yet.

        Refused or corrupt segments are logged once per version, never raised.
        """
        try:
            attached = self._reader.attach()
        except SnapshotError as error:
            self._problem(0, "index refused: %s" % error)
            return False
        self._words = self._reader.words
        if not attached:
            self._last_problem = "index segment does not exist"
            return False
        self._refresh()
        if self._state[1] is None and self._last_problem is None:
            self._last_problem = "the index exists but no version is published yet"
        return self._state[1] is not None

    def _refresh(self) -> Optional[FlagSet]:
        words = self._words
        seen = words[W_VERSION]
        if seen == RETIRED:
            # flagd's segments were removed on purpose: find a new index by name, keep serving meanwhile.
            self._reattach()
            if self._words[W_VERSION] in (0, RETIRED):
                return self._state[1]
            return self._refresh()
        flags = self._state[1]
        try:
            snapshot = self._reader.load()
        except SnapshotError as error:
            self._problem(seen, "snapshot v%d refused, keeping %s: %s" % (seen, _describe(self._snapshot), error))
            self._state = (seen, flags)  # fail static: do not retry until the index moves again
            return flags
        if snapshot is None:
            self._state = (seen, flags)
            return flags
        if self._snapshot is None or snapshot.version != self._snapshot.version:
            compiled = self._compile(snapshot)
            if compiled is None:
                self._state = (seen, flags)
                return flags
            flags = compiled
            self._snapshot = snapshot
        # A snapshot older than ``seen`` (the newest kept vanishing while we opened it) is still
        # acknowledged as ``seen``; the once-a-second check in _periodic catches up on it.
        self._state = (seen, flags)
        return flags

    def _compile(self, snapshot: Snapshot) -> Optional[FlagSet]:
        try:
            raw = snapshot.document["flags"]
            # flagd publishes in storage order already: every worker uses exactly that order.
            flags = compile_flags(raw, ())
        except (FlagConfigError, KeyError, TypeError) as error:
            self._problem(snapshot.version, "snapshot v%d rejected by this SDK's flag parser, keeping %s: %s"
                          % (snapshot.version, _describe(self._snapshot), error))
            return None
        report_problems(self._logger, flags, "flagd snapshot v%d" % snapshot.version)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("[Experiment] loaded %d flag configs from flagd snapshot v%d (%s)",
                               len(flags), snapshot.version, self.segment)
        self._last_problem = None
        return flags

    def _reattach(self) -> None:
        # A new index may reuse version numbers: forget which version we hold, keep its flags.
        self._snapshot = None
        try:
            self._reader.attach()
        except SnapshotError as error:
            self._problem(RETIRED, "index refused: %s" % error)
        self._words = self._reader.words
        # Acknowledge whatever the (new or absent) index says so the hot path stays quiet; a new
        # version is loaded by _periodic's comparison with the snapshot we hold.
        self._state = (self._words[W_VERSION], self._state[1])
        self._force_check()

    def _force_check(self) -> None:
        self._countdown = 0
        self._next_check = 0.0

    def _periodic(self) -> None:
        """At most once a second: re-map a missing index, catch up on a skipped version, check the heartbeat."""
        self._countdown = CHECK_EVERY
        now = self._monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_SECONDS
        if not self._reader.attached or self._words[W_VERSION] == RETIRED:
            if self._reader.attached:
                self._reattach()
            else:
                self.try_attach()
        words = self._words
        version = words[W_VERSION]
        held = self._snapshot.version if self._snapshot is not None else 0
        if version and version != RETIRED and version != held and version != self._failed_version:
            self._refresh()
        if self._reader.attached:
            self._check_heartbeat(self._wall_clock_ns())

    def _interval_ms(self) -> int:
        interval = self._words[W_POLL]
        if not interval and self._snapshot is not None:
            interval = self._snapshot.document.get("poll_interval_ms") or 0
        return int(interval) if interval else self._own_interval_ms

    def _check_heartbeat(self, now_ns: int) -> None:
        heartbeat = self._words[W_HEARTBEAT]
        if not heartbeat:
            return
        limit_ns = STALE_INTERVALS * self._interval_ms() * 1_000_000
        age_ns = now_ns - heartbeat
        if age_ns > limit_ns:
            if not self._stale_warned:
                self._stale_warned = True
                self._logger.warning(
                    "[Experiment] flagd heartbeat in %s is %.1f s old (more than %d poll intervals of %.1f s): "
                    "is flagd running? Serving %s meanwhile.",
                    self.segment, age_ns / 1e9, STALE_INTERVALS, self._interval_ms() / 1000.0,
                    _describe(self._snapshot))
        elif self._stale_warned:
            self._stale_warned = False
            self._logger.info("[Experiment] flagd heartbeat in %s is fresh again", self.segment)

    def _problem(self, version: int, message: str) -> None:
        """Log a refused or unusable snapshot once per version."""
        self._last_problem = message
        if version != self._failed_version:
            self._failed_version = version
            self._logger.error("[Experiment] %s", message)


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
        self.mode = "poll"
        # An instance attribute shadowing the method: switching rebinds it to the shared source's.
        self.current: Callable[[], Optional[FlagSet]] = self._polling_current

    def start(self) -> None:
        """Attach to flagd's snapshot if it is there (no thread); otherwise start polling."""
        if self.mode == "flagd" or self._switch_if_published():
            return
        self._poller_started = True
        self._poller.start()
        self._next_probe = self._monotonic() + CHECK_SECONDS

    def _polling_current(self) -> Optional[FlagSet]:
        if self._monotonic() >= self._next_probe:
            self._next_probe = self._monotonic() + CHECK_SECONDS
            if self._switch_if_published():
                return self._shared.current()
        return self._poller.current()

    def _switch_if_published(self) -> bool:
        shared = self._shared
        if not shared.try_attach():
            return False
        self.mode = "flagd"
        self.current = shared.current
        snapshot = shared._snapshot
        self._logger.info("[Experiment] using flagd snapshot v%d from %s%s",
                          snapshot.version if snapshot is not None else 0, shared.segment,
                          "; polling stopped" if self._poller_started else "")
        if self._poller_started:
            # stop() joins the poller thread, which may be inside an HTTP request: not on an evaluate.
            threading.Thread(target=self._poller.stop, name="amplitude_experiment.poller_stop", daemon=True).start()
        return True

    def stop(self) -> None:
        self._poller.stop()
        self._shared.stop()

    def status(self) -> Dict[str, Any]:
        if self.mode == "flagd":
            status = self._shared.status()
        else:
            status = dict(self._poller.status())
            status["segment"] = self._shared.segment
        status["flag_source"] = "auto"
        return status


def _age(now_ns: int, then_ns: int) -> Optional[float]:
    return max(now_ns - then_ns, 0) / 1e9 if then_ns else None


def _describe(snapshot: Optional[Snapshot]) -> str:
    return "snapshot v%d" % snapshot.version if snapshot is not None else "no flags"
