"""flagd's cohorts: download each cohort the flags reference once for the host, publish its members.

The daemon calls :meth:`CohortPublisher.prepare` with a new config's cohort references before it
publishes the flags (a new cohort is in shared memory before any flag that needs it), then
:meth:`retain` after (cohorts no flag references leave the directory), and :meth:`tick` on every
loop iteration: every ``--cohort-poll-interval-ms`` each referenced cohort is asked for again with
its ``lastModified`` (204: nothing to write), failed ones sooner, on a backoff.

A changed cohort costs one new member file and a new cohort directory (layout.py, "cohorts");
unchanged cohorts and the flag versions are not written again. Credentials never reach a log
line, a file name or a shared-memory file (member ids are stored as keyed hashes only).
"""

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

from amplitude_experiment._cohort_api import CohortDownloadError, CohortFetcher
from amplitude_experiment._flag_api import Backoff
from amplitude_experiment.snapshot.layout import (
    W_COHORT_COUNT,
    W_COHORT_ERROR_AT,
    W_COHORT_FAILURES,
    W_COHORT_INTERVAL,
    W_COHORT_MISSING,
    W_COHORT_REFRESHED,
)

from .log import Quoted

__all__ = ["CohortPublisher"]

logger = logging.getLogger(__name__)


class CohortPublisher:
    """Keeps the cohorts the published flags reference in the key's cohort directory.

    Single-threaded, like the daemon: downloads run one after another on the daemon's thread,
    each within ``--request-timeout-ms``; ``alive`` is called between them (the watchdog).
    """

    def __init__(self, writer: Any, fetcher: CohortFetcher, interval_ms: int, source: str,
                 wall_clock_ns: Callable[[], int] = time.time_ns, monotonic: Callable[[], float] = time.monotonic,
                 alive: Callable[[], None] = lambda: None):
        self._writer = writer
        self._fetcher = fetcher
        self._interval = interval_ms / 1000.0
        self._interval_ms = interval_ms
        self._source = source
        self._wall_clock_ns = wall_clock_ns
        self._monotonic = monotonic
        self._alive = alive
        self._backoff = Backoff(min(1.0, self._interval), self._interval, 0.2)
        #: What the directory lists, by cohort id (the maps layout.py describes).
        self._entries: Dict[str, Dict[str, Any]] = {}
        self._failures = 0
        self._next_full = monotonic() + self._interval
        self._next_retry: Optional[float] = None
        #: Download requests sent, downloads that wrote a member file, directories published.
        self.requests = 0
        self.member_files = 0
        self.directories = 0
        self._adopt()

    def _adopt(self) -> None:
        """Continue from the directory a previous flagd published: its cohorts are refreshed with
        their lastModified (204) instead of downloaded again."""
        directory = self._writer.cohort_directory()
        if directory is None:
            return
        for entry in directory.cohorts:
            if isinstance(entry.get("id"), str):
                self._entries[entry["id"]] = dict(entry)
        logger.info("event=cohorts_adopted directory=%d cohorts=%d", directory.number, len(self._entries))
        if any(not entry.get("members") for entry in self._entries.values()):
            self._next_retry = self._monotonic()

    # --- what the daemon calls ----------------------------------------------------------------

    def prepare(self, references: Mapping[str, Any]) -> None:
        """Before flags referencing ``references`` (group type -> ids) are published: download
        the cohorts not listed yet and publish them."""
        wanted = _ids(references)
        new = sorted(wanted - set(self._entries))
        if new:
            self._download(new)

    def retain(self, references: Mapping[str, Any]) -> None:
        """After the flags are published: drop the cohorts they do not reference."""
        wanted = _ids(references)
        dropped = [cohort_id for cohort_id in self._entries if cohort_id not in wanted]
        if dropped:
            for cohort_id in dropped:
                del self._entries[cohort_id]
            logger.info("event=cohorts_dropped cohorts=%s", Quoted(",".join(sorted(dropped))))
            self._publish()

    def tick(self) -> None:
        """Refresh when due: every cohort each interval, failed ones on the backoff."""
        now = self._monotonic()
        if now >= self._next_full:
            self._next_full = now + self._interval
            self._download(sorted(self._entries))
        elif self._next_retry is not None and now >= self._next_retry:
            self._download(sorted(c for c, e in self._entries.items() if e.get("error") or not e.get("members")))

    def next_due(self) -> float:
        """Monotonic time of the next refresh or retry."""
        return min(self._next_full, self._next_retry if self._next_retry is not None else self._next_full)

    def refresh_soon(self) -> None:
        """SIGHUP: every cohort on the next tick."""
        self._next_full = self._monotonic()

    def cohorts(self) -> List[Dict[str, Any]]:
        return [dict(entry) for entry in self._entries.values()]

    # --- downloading and publishing -----------------------------------------------------------

    def _download(self, cohort_ids: List[str]) -> None:
        if not cohort_ids:
            return
        changed = False
        failed = 0
        unreachable: Optional[str] = None
        for cohort_id in cohort_ids:
            entry = self._entries.get(cohort_id) or {"id": cohort_id, "group_type": None, "size": None,
                                                       "last_modified": None, "members": 0, "fetched_at_ns": 0,
                                                       "error": None, "error_at_ns": 0}
            if cohort_id not in self._entries:
                self._entries[cohort_id] = entry
                changed = True
            if unreachable is not None:
                # The server gave no answer to the last download: do not wait a timeout per cohort
                # (the flags are waiting); the next round, on the backoff, tries again.
                failed += 1
                if not entry.get("error"):
                    entry["error"] = "not tried this round: %s" % unreachable
                    entry["error_at_ns"] = self._wall_clock_ns()
                    changed = True
                continue
            before = self._fetcher.requests
            started = self._monotonic()
            try:
                cohort = self._fetcher.download(cohort_id, entry["last_modified"] if entry.get("members") else None)
                members = None
                if cohort is not None:
                    members = self._writer.write_members(cohort.member_ids)
                    self.member_files += 1
            except CohortDownloadError as error:
                failed += 1
                text = str(error)
                if error.kind == "transport":
                    unreachable = "the cohort server did not answer (%s)" % text
                # Logged when it starts or changes; a retry that fails the same way is DEBUG.
                log = logger.debug if entry.get("error") == text else \
                    logger.error if error.kind == "too_large" else logger.warning
                log("event=cohort_failed cohort=%s kind=%s kept=%s error=%s", Quoted(cohort_id), error.kind,
                    "yes" if entry.get("members") else "no", Quoted(text))
                if entry.get("error") != text:
                    entry["error"] = text
                    entry["error_at_ns"] = self._wall_clock_ns()
                    changed = True
            except Exception as error:  # shared memory full, or a bug: the cohort stays as it was
                failed += 1
                logger.error("event=cohort_publish_failed cohort=%s error=%s", Quoted(cohort_id), Quoted(error))
                entry["error"] = str(error)
                entry["error_at_ns"] = self._wall_clock_ns()
                changed = True
            else:
                entry["fetched_at_ns"] = self._wall_clock_ns()
                if entry.get("error"):
                    entry["error"] = None
                    changed = True
                if cohort is not None:
                    entry.update(group_type=cohort.group_type, size=cohort.size, last_modified=cohort.last_modified,
                                 members=members)
                    changed = True
                    logger.info("event=cohort_loaded cohort=%s group_type=%s size=%d last_modified=%d "
                                "members_file=%d download_ms=%.0f", Quoted(cohort_id), Quoted(cohort.group_type),
                                cohort.size, cohort.last_modified, members, (self._monotonic() - started) * 1000)
            finally:
                self.requests += self._fetcher.requests - before
                self._alive()
        self._failures = self._failures + 1 if failed else 0
        self._next_retry = self._monotonic() + self._backoff.delay(self._failures) if failed else None
        if changed or not self.directories:
            self._publish(refreshed=not failed)
        else:
            self._note_health(refreshed=True)

    def _publish(self, refreshed: bool = False) -> None:
        cohorts = sorted(self._entries.values(), key=lambda entry: entry["id"])
        for entry in cohorts:
            entry["interval_ms"] = self._interval_ms
        try:
            number = self._writer.publish_cohorts(cohorts, {"source": self._source, "interval_ms": self._interval_ms})
        except Exception as error:
            logger.error("event=cohort_publish_failed error=%s", Quoted(error))
            return
        self.directories += 1
        logger.info("event=cohorts_published directory=%d cohorts=%d missing=%d", number, len(cohorts),
                    sum(1 for entry in cohorts if not entry.get("members")))
        self._note_health(refreshed)

    def _note_health(self, refreshed: bool) -> None:
        entries = self._entries.values()
        errors = [entry.get("error_at_ns") or 0 for entry in entries if entry.get("error")]
        values = {W_COHORT_COUNT: len(self._entries),
                  W_COHORT_MISSING: sum(1 for entry in entries if not entry.get("members")),
                  W_COHORT_INTERVAL: self._interval_ms, W_COHORT_FAILURES: self._failures,
                  W_COHORT_ERROR_AT: max(errors) if errors else 0}
        if refreshed:
            values[W_COHORT_REFRESHED] = self._wall_clock_ns()
        self._writer.record_cohort_health(values)


def _ids(references: Mapping[str, Any]) -> Set[str]:
    return {cohort_id for ids in references.values() for cohort_id in ids}


def build_cohort_publisher(config: Any, writer: Any, alive: Callable[[], None]) -> Optional[CohortPublisher]:
    """The publisher flagd runs when cohort credentials are configured, else None."""
    if not config.cohort_api_key or not config.cohort_secret_key:
        return None
    fetcher = CohortFetcher(config.cohort_url, config.cohort_api_key, config.cohort_secret_key,
                            config.max_cohort_size, config.request_timeout_ms / 1000.0)
    return CohortPublisher(writer, fetcher, config.cohort_poll_interval_ms, config.cohort_url, alive=alive)
