"""The publish loop: fetch flag configs, validate them with the SDK's parser, publish new versions.

``Daemon(config).run()`` goes through startup (lock, shared memory, adopt what is already published, first
fetch, fall back to the last good snapshot on disk), the loop (poll, publish on change, heartbeat,
watchdog) and shutdown (leave every shared-memory file in place so workers keep serving). Signals are handled
here and nowhere else: SIGTERM/SIGINT stop, SIGHUP re-reads the source at once.
"""

import contextlib
import logging
import os
import select
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from amplitude_experiment.evaluation import (
    FlagConfigError,
    PlannedCatalog,
    ValidatedFlags,
    content_digest,
    decode_config,
    plan_flags,
)
from amplitude_experiment.snapshot.health import (
    FAILING_PUBLISH,
    FAILING_SOURCE,
    FAILING_STATE_DIR,
    record_error,
    record_failing,
    record_problems,
)
from amplitude_experiment.snapshot.transport import record_stream, record_stream_error, record_transport
from amplitude_experiment.snapshot import ForeignIndexError, SnapshotReader, SnapshotWriter, WriterConflictError
from amplitude_experiment.snapshot.layout import W_ANALYTICS_KEY

from .check import check_flags, summarize
from .config import Config, ExitCode
from .log import Quoted
from .sd_notify import Notifier
from .sources import ApiSource, Backoff, FileSource, FlagSource, SourceError
from .state import AlreadyRunning, InstanceLock, LastGood, lock_paths
from .watch import WATCH_SECONDS, FileWatch

__all__ = ["Daemon"]

logger = logging.getLogger(__name__)

#: Problems of one config logged one per line; the rest are counted in one more line.
MAX_PROBLEM_LINES = 20


class _Interrupted(BaseException):
    """Raised by the stop handler into a fetch in progress, so SIGTERM does not wait out a slow request."""


def build_source(config: Config) -> FlagSource:
    """The source the config names: the flags file when given, else the flag API."""
    if config.flags_file:
        return FileSource(config.flags_file)
    api = ApiSource(config.flags_url, config.deployment_key, config.request_timeout_ms / 1000.0, config.source_name)
    if config.stream:
        from .stream import StreamingSource

        return StreamingSource(api, config.stream_url, config.deployment_key)
    return api


class Daemon:
    """Publishes one deployment key's flag configs into shared memory until stopped.

    Single-threaded: everything, including the systemd watchdog ping, happens on the thread that
    calls :meth:`run`, so a hung loop is a silent watchdog. Collaborators are parameters so tests can
    pass fakes without patching modules.
    """

    def __init__(
        self,
        config: Config,
        source: Optional[FlagSource] = None,
        notifier: Optional[Notifier] = None,
        writer_factory: Callable[..., Any] = SnapshotWriter,
        reader_factory: Callable[..., Any] = SnapshotReader,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._config = config
        self._source = source if source is not None else build_source(config)
        self._notifier = notifier if notifier is not None else Notifier()
        self._writer_factory = writer_factory
        self._reader_factory = reader_factory
        self._wall_clock_ns = wall_clock_ns
        self._monotonic = monotonic
        self._backoff = Backoff(config.backoff_min_ms / 1000.0,
                                max(config.backoff_max_ms, config.poll_interval_ms) / 1000.0)
        self._interval = config.poll_interval_ms / 1000.0
        self._key_hash = config.key_hash
        self._last_good = LastGood(config.state_dir, self._key_hash) if config.state_dir else None
        self._writer: Any = None
        # What is published: version 0 means nothing yet.
        self._version = 0
        self._flag_count = 0
        self._order: List[str] = []
        #: What passed the parser, by flag content: a config where one flag changed validates one flag.
        self._validated = ValidatedFlags()
        self._published_content: Optional[bytes] = None
        self._saved_content: Optional[bytes] = None
        self._last_fetch_ns = 0
        # The last raw body accepted and the last one rejected, to skip re-parsing unchanged input.
        self._accepted_body: Optional[bytes] = None
        self._rejected_body: Optional[bytes] = None
        self._rejected_reason = ""
        self._failures = 0
        #: Problems found in configs from Amplitude's API (published anyway, as Amplitude's SDK would).
        self.config_problems_total = 0
        #: What fails now (FAILING_* bits) and the last error as (kind, text, wall-clock ns), also
        #: stored in the index for ``status`` and the workers (snapshot/health.py).
        self._failing = 0
        self.last_error: Optional[tuple] = None
        self._retry_in = self._interval  # seconds from the end of a poll to the next one
        self._ready = False
        # Signal state, touched by the handlers.
        self._stop = False
        self._stop_signal = 0
        self._reload = False
        self._fetching = False
        self._wakeup_fd: Optional[int] = None
        # The stream thread wakes the loop through these (flagd/stream.py): the signal pipe's write
        # end when the loop selects on it, else the event.
        self._wakeup_write_fd: Optional[int] = None
        self._nudged = threading.Event()
        self._transport_noted: Optional[tuple] = None
        #: flagd/metrics.DaemonMetrics when --metrics-address is given, else None.
        self._metrics: Any = None
        #: flagd/events.EventRelay when an analytics API key is given and its queue opened, else None.
        self._events: Any = None
        # A flags file is stat()ed every WATCH_SECONDS and re-read at once when it changed.
        self._watch = FileWatch(config.flags_file) if config.flags_file else None
        #: flagd/cohorts.CohortPublisher when cohort credentials are given (docs/cohorts.md), else None.
        self._cohorts: Any = None
        self._adopted_cohort_refs: Dict[str, Any] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> ExitCode:
        """Run until SIGTERM/SIGINT; returns the exit code for the CLI."""
        paths = lock_paths("%s.%s.lock" % (self._config.shm_prefix, self._key_hash), self._config.state_dir)
        lock = InstanceLock(paths)
        try:
            lock.acquire()
        except AlreadyRunning as running:
            logger.error("event=already_running key_hash=%s pid=%s lock=%s msg=%s", self._key_hash,
                         running.pid or "unknown", running.path,
                         Quoted("another flagd already publishes this deployment key on this host"))
            return ExitCode.ALREADY_RUNNING
        except OSError as error:
            logger.error("event=startup_failed lock=%s error=%s", paths[0] if paths else "", Quoted(error))
            return ExitCode.STARTUP_FAILURE
        for path, uid in lock.skipped:
            logger.warning("event=lock_not_ours lock=%s owner_uid=%d msg=%s", path, uid, Quoted(
                "a lock file this uid did not create (another local user may have planted it): ignored"))
        if lock.path is None:
            logger.warning("event=no_lock_file msg=%s", Quoted(
                "no place for a lock file of our own; the index's live-pid check alone keeps a second flagd out"))
        try:
            code = self._serve_metrics()
            if code is not ExitCode.OK:
                return code
            with self._capture_signals():
                try:
                    code = self._startup()
                    if code is not ExitCode.OK:
                        return code
                    self._main_loop()
                except _Interrupted:
                    pass
                except Exception:  # a bug: say so in the log's format, leave the shared-memory files to the workers
                    logger.exception("event=crashed version=%d", self._version)
                    self._shutdown()
                    return ExitCode.ERROR
                self._shutdown()
                return ExitCode.OK
        finally:
            lock.release()
            self._source.close()
            if self._metrics is not None:
                self._metrics.close()

    def _serve_metrics(self) -> ExitCode:
        address = self._config.metrics_address
        if not address:
            return ExitCode.OK
        from .metrics import DaemonMetrics, MetricsUnavailable

        try:
            metrics = DaemonMetrics(self._key_hash, self._source.name, self._config.shm_prefix)
        except MetricsUnavailable as error:
            logger.error("event=startup_failed step=metrics error=%s", Quoted(error))
            return ExitCode.USAGE
        try:
            host, port = metrics.serve(address)
        except MetricsUnavailable as error:
            logger.error("event=startup_failed step=metrics error=%s", Quoted(error))
            return ExitCode.STARTUP_FAILURE
        self._metrics = metrics
        logger.info("event=metrics address=%s:%d", host, port)
        return ExitCode.OK

    def _startup(self) -> ExitCode:
        config = self._config
        logger.info("event=starting pid=%d key_hash=%s source=%s shm_prefix=%s poll_interval_ms=%d state_dir=%s",
                    os.getpid(), self._key_hash, Quoted(self._source.name), config.shm_prefix,
                    config.poll_interval_ms, Quoted(config.state_dir or ""))
        group = int(config.group) if config.group and config.group.isdigit() else config.group
        try:
            self._writer = self._writer_factory(config.shm_prefix, config.deployment_key, group,
                                                poll_interval_ms=config.poll_interval_ms)
        except WriterConflictError as error:
            event = "foreign_index" if isinstance(error, ForeignIndexError) else "already_running"
            logger.error("event=%s key_hash=%s error=%s", event, self._key_hash, Quoted(error))
            return ExitCode.ALREADY_RUNNING
        except Exception as error:
            logger.error("event=startup_failed step=shared_memory error=%s", Quoted(error))
            return ExitCode.STARTUP_FAILURE
        self._note_health()  # a previous flagd's failures are not this one's; its last error text stays
        self._start_events(group)
        self._check_state_dir()
        self._adopt_published()
        from .cohorts import build_cohort_publisher

        self._cohorts = build_cohort_publisher(config, self._writer, self._alive, stopping=lambda: self._stop)
        if self._cohorts is None:
            self._withdraw_cohorts()
        elif self._version:
            # The adopted version's cohorts, even if its flags never change again, and none else
            # (a predecessor killed between publishing flags and dropping a cohort left it listed).
            self._cohorts.prepare(self._adopted_cohort_refs)
            self._cohorts.retain(self._adopted_cohort_refs)
        stored = self._last_good.load() if self._last_good is not None else None
        if stored is not None:
            self._saved_content = self._validated_digest(stored.get("flags"))
        if self._source.backs_off and self._notifier.enabled:
            # The first request may take the whole timeout; do not let systemd give up on start-up.
            self._notifier.extend_timeout(config.request_timeout_ms / 1000.0 + 10)
        self._alive()  # the watchdog may already run while the first fetch is in flight
        self._start_stream()
        fresh = self._poll()
        self._note_transport()
        if not fresh and self._version == 0 and stored is not None:
            self._restore(stored)
        self._announce()
        if self._version == 0:
            logger.warning("event=not_ready msg=%s", Quoted(
                "no flag config published yet: the source failed and there is no last good snapshot; retrying"))
        return ExitCode.OK

    def _main_loop(self) -> None:
        """Poll an interval after the previous poll ended (backoff after failures: no catch-up bursts);
        ping the watchdog every iteration."""
        next_poll = self._monotonic() + self._retry_in
        while not self._stop:
            if self._reload:
                self._reload = False
                self._accepted_body = self._rejected_body = None  # re-validate even unchanged input
                logger.info("event=reload source=%s", Quoted(self._source.name))
                next_poll = self._monotonic()
                if self._cohorts is not None:
                    self._cohorts.refresh_soon()
            if self._stream_has_news():
                next_poll = self._monotonic()
            if self._watch is not None and self._watch.changed():
                logger.debug("event=file_changed source=%s", Quoted(self._source.name))
                next_poll = self._monotonic()
            if self._monotonic() >= next_poll:
                self._poll()
                self._note_transport()
                self._announce()
                next_poll = self._monotonic() + self._retry_in
            if self._cohorts is not None:
                self._cohorts.tick()
            self._alive()
            deadline = next_poll if self._watch is None else min(next_poll, self._monotonic() + WATCH_SECONDS)
            self._wait(deadline if self._cohorts is None else min(deadline, self._cohorts.next_due()))

    def _withdraw_cohorts(self) -> None:
        """Without cohort credentials, take back the cohorts a predecessor published: no one would
        refresh them, and workers would serve those memberships for ever."""
        withdraw = getattr(self._writer, "withdraw_cohorts", None)
        if withdraw is None:
            return
        try:
            number = withdraw()
        except Exception as error:
            logger.error("event=cohorts_withdraw_failed error=%s", Quoted(error))
            return
        if number:
            logger.warning("event=cohorts_withdrawn directory=%d msg=%s", number, Quoted(
                "no cohort credentials: the cohorts a previous flagd published are no longer served; workers "
                "use the cohort ids callers give"))

    def _start_events(self, group: Any) -> None:
        """Relay the workers' events when an analytics API key is given (flagd/events.py); otherwise
        take back what a killed predecessor advertised, so workers deliver their own."""
        words = getattr(self._writer, "words", None)
        if words is not None:
            words[W_ANALYTICS_KEY] = 0
        if not self._config.analytics_api_key:
            return
        from amplitude_experiment.snapshot.host import resolve_gid

        from .events import start_relay

        self._events = start_relay(self._config.shm_prefix, self._config.deployment_key, self._writer.words,
                                   self._config.analytics_settings(), resolve_gid(group))
        if self._events is not None and self._metrics is not None:
            self._metrics.watch_events(self._events.counters)

    def _shutdown(self) -> None:
        self._notifier.stopping()
        if getattr(self._source, "start", None) is not None:
            self._source.close()  # the stream thread nudges through the signal pipe: end it before the pipe closes
        if self._stop_signal:
            logger.info("event=stopping signal=%s", signal.Signals(self._stop_signal).name)
        if self._events is not None:
            try:
                self._events.stop()  # stops advertising, reads what is queued, sends what it holds
            except Exception as error:
                logger.warning("event=events_flush_failed error=%s", Quoted(error))
        if self._writer is not None:
            try:
                self._writer.close()  # unmaps only: workers keep serving the current version
            except Exception as error:
                logger.warning("event=close_failed error=%s", Quoted(error))
        logger.info("event=stopped version=%d msg=%s", self._version,
                    Quoted("snapshot left in place; workers keep serving it"))

    # --- one poll -----------------------------------------------------------------------------

    def _poll(self) -> bool:
        """Fetch once and publish if the content changed. True when the fetch gave a valid config."""
        fetched_at = self._wall_clock_ns()
        self._fetching = True
        try:
            body = self._source.fetch()
        except SourceError as error:
            return self._failed("fetch_failed", error)
        finally:
            self._fetching = False
        if body == self._accepted_body:
            return self._succeeded(fetched_at)
        if body == self._rejected_body:
            self._source_rejected(body, self._rejected_reason)
            self._failures += 1
            self._retry_in = self._next_delay()
            self._note_health()
            if self._metrics is not None:
                self._metrics.consecutive_failures.set(self._failures)
            logger.debug("event=config_still_rejected source=%s", Quoted(self._source.name))
            return False
        try:
            raw, catalog = self._parse(body)
        except Exception as error:  # whatever is wrong with the input, the last good version stays
            self._rejected_body = body
            self._rejected_reason = str(error) or type(error).__name__
            self._source_rejected(body, self._rejected_reason)
            return self._failed("config_rejected", error, flag=getattr(error, "flag_key", None))
        digest = content_digest(catalog)
        if digest != self._published_content:
            try:
                self._publish(catalog, self._source.name, fetched_at, digest, raw)
            except Exception as error:
                return self._failed("publish_failed", error)
        self._accepted_body = body
        self._rejected_body = None
        if digest != self._saved_content:
            self._save(raw, self._source.name, fetched_at, digest)
        return self._succeeded(fetched_at)

    def _parse(self, body: bytes) -> Tuple[List[Any], PlannedCatalog]:
        """The config as JSON and planned: checked (a flags file with problems is refused whole),
        validated by the SDK's parser, with storage order, dependencies, cycles and digests
        worked out once for every worker. Flags whose content passed before are not validated
        again."""
        raw = decode_config(body)
        self._check(raw)
        catalog = plan_flags(raw, self._order, self._validated)
        self._validated.retain(catalog)
        return raw, catalog

    def _check(self, raw: Any) -> None:
        """A flags file with problems is refused whole; problems of API configs are logged and counted.

        :raises FlagConfigError: the flags file has problems (each is logged on its own line first).
        """
        strict = bool(self._config.flags_file)
        problems = check_flags(raw, allow_empty=self._config.allow_empty_flags or not strict, parse=False)
        if not problems:
            return
        log = logger.error if strict else logger.warning
        for problem in problems[:MAX_PROBLEM_LINES]:
            log("event=config_problem source=%s flag=%s field=%s problem=%s", Quoted(self._source.name),
                Quoted(problem.flag or ""), Quoted(problem.field), Quoted(problem.message))
        if len(problems) > MAX_PROBLEM_LINES:
            log("event=config_problem source=%s more=%d", Quoted(self._source.name), len(problems) - MAX_PROBLEM_LINES)
        if strict:
            raise FlagConfigError("the flags file was not published, " + summarize(problems), problems[0].flag)
        self.config_problems_total += len(problems)
        self._note_health()
        if self._metrics is not None:
            self._metrics.problems(len(problems))

    def _succeeded(self, fetched_at_ns: int) -> bool:
        self._retry_in = self._interval
        if self._failures:
            logger.info("event=recovered source=%s after_failures=%d", Quoted(self._source.name), self._failures)
        self._failures = 0
        self._failing &= ~(FAILING_SOURCE | FAILING_PUBLISH)
        self._note_health()
        if self._metrics is not None:
            self._metrics.succeeded(fetched_at_ns / 1e9)
        self._last_fetch_ns = fetched_at_ns
        try:
            self._writer.heartbeat(fetched_at_ns)
        except Exception as error:
            logger.warning("event=heartbeat_failed error=%s", Quoted(error))
        return True

    def _failed(self, event: str, error: BaseException, flag: Optional[str] = None) -> bool:
        self._failures += 1
        retry = self._retry_in = self._next_delay()
        logger.error("event=%s source=%s%s failures=%d retry_in_s=%.1f kept_version=%d error=%s",
                     event, Quoted(self._source.name), " flag=%s" % Quoted(flag) if flag else "",
                     self._failures, retry, self._version, Quoted(error))
        self._note_error(event, error, FAILING_PUBLISH if event == "publish_failed" else FAILING_SOURCE)
        return False

    # --- health, for status and the workers ---------------------------------------------------

    def _note_error(self, kind: str, error: object, failing: int) -> None:
        """Remember the error and store it in the index, where ``status`` and every worker read it."""
        text = str(error).replace(self._config.deployment_key, "<redacted>")
        now = self._wall_clock_ns()
        self._failing |= failing
        self.last_error = (kind, text, now)
        words = getattr(self._writer, "words", None)
        if words is not None:
            record_error(words, kind, text, now)
        self._note_health()
        if self._metrics is not None:
            self._metrics.failed(kind, self._failures)

    def _note_health(self) -> None:
        words = getattr(self._writer, "words", None)
        if words is not None:
            record_failing(words, self._failing, self._failures)
            record_problems(words, self.config_problems_total)

    def _check_state_dir(self) -> None:
        """An unwritable --state-dir is found at start, not at the first change of content."""
        if self._last_good is None:
            return
        directory = os.path.dirname(self._last_good.path)
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            probe = os.path.join(directory, ".probe.%d" % os.getpid())
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as error:
            logger.error("event=state_dir_unwritable path=%s error=%s msg=%s", Quoted(directory), Quoted(error),
                         Quoted("the last good snapshot cannot be kept: a restart while the source is down "
                                "will have nothing to publish"))
            self._note_error("state_save_failed", "cannot write %s: %s" % (directory, error.strerror or error),
                             FAILING_STATE_DIR)

    def _next_delay(self) -> float:
        if self._failures and self._source.backs_off:
            return self._backoff.delay(self._failures)
        return self._interval

    # --- publishing ---------------------------------------------------------------------------

    def _publish(self, catalog: PlannedCatalog, source: str, fetched_at_ns: int, digest: bytes,
                 raw: Optional[List[Any]] = None) -> int:
        meta: Dict[str, Any] = {
            "source": source,
            "fetched_at_ns": fetched_at_ns,
            "flag_count": len(catalog),
            "poll_interval_ms": self._config.poll_interval_ms,
        }
        if self._cohorts is not None:
            self._cohorts.prepare(catalog.cohort_refs)  # new cohorts are in shared memory before the flags
        started = self._monotonic()
        version = self._writer.publish(meta, catalog=catalog)
        if self._cohorts is not None:
            self._cohorts.retain(catalog.cohort_refs)
        if self._metrics is not None:
            from .metrics import version_file_path

            self._metrics.published(version, raw if raw is not None else [catalog.config(key) for key in catalog.keys()],
                                    version_file_path(self._config.shm_prefix, self._key_hash, version),
                                    self._wall_clock_ns() / 1e9, self._monotonic() - started)
        previous, self._version = self._version, version
        self._flag_count = len(catalog)
        self._order = list(catalog.keys())
        self._published_content = digest
        logger.info("event=published version=%d previous=%d flags=%d source=%s write_ms=%.1f",
                    version, previous, self._flag_count, Quoted(source), (self._monotonic() - started) * 1000)
        for problem in catalog.problems:
            logger.warning("event=config_problem version=%d problem=%s", version, Quoted(problem))
        return version

    def _save(self, flags: List[Any], source: str, fetched_at_ns: int, digest: bytes) -> None:
        if self._last_good is None:
            return
        try:
            self._last_good.save(flags, source, fetched_at_ns)
        except OSError as error:
            logger.error("event=state_save_failed path=%s error=%s", self._last_good.path, Quoted(error))
            self._note_error("state_save_failed", "cannot save %s: %s" % (self._last_good.path, error.strerror or error),
                             FAILING_STATE_DIR)
            return
        self._saved_content = digest
        if self._failing & FAILING_STATE_DIR:
            self._failing &= ~FAILING_STATE_DIR
            self._note_health()

    def _adopt_published(self) -> None:
        """Continue from what a previous flagd left in shared memory, so a restart publishes nothing
        new unless the content changed, and flag order stays as workers know it."""
        try:
            snapshot = self._reader_factory(self._config.shm_prefix, self._config.deployment_key).load()
        except Exception as error:
            logger.info("event=no_current_snapshot reason=%s", Quoted(error))
            return
        if snapshot is None:
            return
        meta = snapshot.meta
        self._version = snapshot.version
        self._flag_count = len(snapshot)
        self._order = snapshot.keys()
        self._published_content = content_digest(snapshot)
        self._adopted_cohort_refs = dict(getattr(snapshot, "cohort_refs", None) or {})
        self._last_fetch_ns = int(meta.get("fetched_at_ns") or 0)
        if self._metrics is not None:
            from .metrics import version_file_path

            self._metrics.adopted(snapshot.version, snapshot.flags(),
                                  version_file_path(self._config.shm_prefix, self._key_hash, snapshot.version))
        logger.info("event=adopted version=%d flags=%d source=%s", snapshot.version, self._flag_count,
                    Quoted(meta.get("source", "")))

    def _restore(self, stored: Dict[str, Any]) -> None:
        """Publish the last good snapshot from disk: the upstream is down and shared memory is empty."""
        source = str(stored.get("source") or "")
        fetched_at = int(stored.get("fetched_at_ns") or 0)
        try:
            catalog = plan_flags(stored.get("flags"), (), self._validated)
            self._publish(catalog, source, fetched_at, content_digest(catalog))
        except Exception as error:
            logger.error("event=restore_failed path=%s error=%s", self._last_good.path if self._last_good else "",
                         Quoted(error))
            return
        self._last_fetch_ns = fetched_at
        logger.warning("event=restored_last_good version=%d flags=%d fetched_age_s=%.0f msg=%s", self._version,
                       self._flag_count, self._age_s(), Quoted("serving the last good snapshot until the source answers"))

    def _validated_digest(self, flags: Any) -> Optional[bytes]:
        try:
            return content_digest(plan_flags(flags, (), self._validated))
        except Exception:
            return None

    # --- systemd and status -------------------------------------------------------------------

    def _status_text(self) -> str:
        return "v%d flags=%d age=%.0f" % (self._version, self._flag_count, self._age_s())

    def _age_s(self) -> float:
        if not self._last_fetch_ns:
            return -1.0
        return max(0.0, (self._wall_clock_ns() - self._last_fetch_ns) / 1e9)

    def _announce(self) -> None:
        """READY=1 as soon as workers have a snapshot to serve (fresh, adopted or restored)."""
        if self._version and not self._ready:
            self._ready = True
            self._notifier.ready(self._status_text())
            logger.info("event=ready version=%d flags=%d", self._version, self._flag_count)

    def _alive(self) -> None:
        if self._notifier.watchdog_interval is not None:
            self._notifier.watchdog()
        self._notifier.status(self._status_text())

    # --- signals and waiting ------------------------------------------------------------------

    def _wait(self, deadline: float) -> None:
        """Sleep until ``deadline``, a signal, or the next watchdog ping is due, whichever is first."""
        timeout = max(0.0, deadline - self._monotonic())
        if self._notifier.watchdog_interval is not None:
            timeout = min(timeout, self._notifier.watchdog_interval)
        if self._stop or self._reload:
            return
        if self._wakeup_fd is None:
            # No signal handling here (not the main thread): poll the flags, wake on the stream's nudge.
            self._nudged.wait(min(timeout, 0.5))
            self._nudged.clear()
            return
        readable, _, _ = select.select([self._wakeup_fd], [], [], timeout)
        if readable:
            try:
                os.read(self._wakeup_fd, 512)
            except BlockingIOError:
                pass

    @contextlib.contextmanager
    def _capture_signals(self) -> Iterator[None]:
        """Install the handlers for the daemon's lifetime and restore the previous ones afterwards.

        A Python handler only runs between bytecodes; ``set_wakeup_fd`` makes the C-level handler
        write a byte that ends the ``select`` in :meth:`_wait` at once.
        """
        if threading.current_thread() is not threading.main_thread():
            # Signals can only be listened to from the main thread.
            yield
            return
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._wakeup_fd = read_fd
        self._wakeup_write_fd = write_fd
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            self._wakeup_fd = self._wakeup_write_fd = None
            os.close(read_fd)
            os.close(write_fd)

    def _on_stop(self, signum: int, frame: Any) -> None:
        # No logging here: the handler may interrupt a logging call; _shutdown reports the signal.
        self._stop = True
        self._stop_signal = signum
        if self._fetching:
            raise _Interrupted()

    def _on_reload(self, signum: int, frame: Any) -> None:
        self._reload = True

    # --- the flag stream (run --stream, flagd/stream.py) ---------------------------------------

    def _start_stream(self) -> None:
        """Open the stream and wait up to --stream-conn-timeout-ms for its first message; the first
        fetch then takes it, or polls when the stream is slow or failing."""
        start = getattr(self._source, "start", None)
        if start is None:
            return
        if start(self._nudge, self._config.stream_conn_timeout_ms / 1000.0):
            return
        logger.warning("event=stream_not_ready url=%s timeout_ms=%d error=%s msg=%s",
                       Quoted(self._source.stream_url), self._config.stream_conn_timeout_ms,
                       Quoted(self._source.last_error or "no message yet"),
                       Quoted("polling until the stream delivers"))

    def _stream_has_news(self) -> bool:
        has_news = getattr(self._source, "has_news", None)
        if has_news is None or not has_news():
            return False
        self._note_transport()
        return True

    def _source_rejected(self, body: bytes, reason: str) -> None:
        """A stream message that is not a flag list must not stand for the stream delivering."""
        reject = getattr(self._source, "reject", None)
        if reject is not None:
            reject(body, reason)

    def _nudge(self) -> None:
        """Wake the loop from the stream thread: a message arrived or the stream failed."""
        self._nudged.set()
        write_fd = self._wakeup_write_fd
        if write_fd is not None:
            try:
                os.write(write_fd, b"\0")
            except OSError:
                pass  # a full pipe wakes the loop anyway

    def _note_transport(self) -> None:
        """Store in the index how flags arrive now and the stream's health (snapshot/transport.py),
        when it changed; only this thread writes the index."""
        from amplitude_experiment.snapshot.layout import TRANSPORT_FILE, TRANSPORT_POLL

        words = getattr(self._writer, "words", None)
        if words is None:
            return
        source = self._source
        if getattr(source, "start", None) is None:  # poll or file: fixed for the daemon's life
            noted: tuple = (TRANSPORT_FILE if self._config.flags_file else TRANSPORT_POLL,)
            if noted != self._transport_noted:
                record_transport(words, noted[0], self._wall_clock_ns())
        else:
            noted = (source.transport, source.transport_since_ns, source.last_error_at_ns, source.failures,
                     source.connects)
            if noted != self._transport_noted:
                record_transport(words, source.transport, source.transport_since_ns)
                if self._transport_noted is None or noted[2] != self._transport_noted[2]:
                    if source.last_error_at_ns:
                        record_stream_error(words, source.last_error.replace(self._config.deployment_key, "<redacted>"),
                                            source.last_error_at_ns)
            record_stream(words, source.failures, source.last_event_ns, source.connects)
        self._transport_noted = noted
