"""Per-process Prometheus metrics of local evaluation clients, in prometheus_client's multiprocess mode.

On only when ``prometheus_client`` is installed and ``PROMETHEUS_MULTIPROC_DIR`` is set (as gunicorn
and uWSGI users set it for their own metrics): each process writes its values into files in that
directory and the application's /metrics endpoint (a ``MultiProcessCollector``) serves them all.
Gauges carry a ``pid`` label, so an operator sees which version every worker serves::

    amplitude_experiment_served_version{pid}                     snapshot version served (0: polling)
    amplitude_experiment_flags{pid}                              flags served
    amplitude_experiment_snapshot_published_timestamp_seconds{pid}  when that version was published (age:
                                                                 time() - this); polling: last successful poll
    amplitude_experiment_last_refresh_timestamp_seconds{pid}     when this process last loaded new flags
    amplitude_experiment_source{pid, source, flag_source}        1 for the source serving now ("poll"/"flagd")
    amplitude_experiment_evaluations_total                       evaluate_v2 calls, summed over processes

The hot path adds one attribute load when metrics are off, and an integer add when on: evaluations
are counted in memory and written at most once a second (and at exit), since a write into the
multiprocess file takes a lock.
"""

import atexit
import os
import threading
import time
from typing import Any, Callable, Dict, Optional

from .._fork import FORKS

__all__ = ["ClientMetrics", "client_metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Evaluations between two looks at the clock for a flush.
CHECK_EVERY = 64
FLUSH_SECONDS = 1.0

_metrics_lock = threading.Lock()
_families: Optional[Dict[str, Any]] = None


def client_metrics(status: Callable[[], Dict[str, Any]], flag_source: str) -> Optional["ClientMetrics"]:
    """Metrics for one client, or None when prometheus_client or PROMETHEUS_MULTIPROC_DIR is missing."""
    if not os.environ.get(MULTIPROC_ENV):
        return None
    families = _metric_families()
    if families is None:
        return None
    return ClientMetrics(families, status, flag_source)


def _metric_families() -> Optional[Dict[str, Any]]:
    """The metric objects, created once per process (prometheus_client's registry is global)."""
    global _families
    with _metrics_lock:
        if _families is not None:
            return _families
        try:
            from prometheus_client import Counter, Gauge
        except ImportError:
            return None
        gauge = "all"  # one series per process, labelled with its pid
        _families = {
            "version": Gauge("amplitude_experiment_served_version", "Snapshot version this process serves (0: polling)",
                             multiprocess_mode=gauge),
            "flags": Gauge("amplitude_experiment_flags", "Flags this process serves", multiprocess_mode=gauge),
            "published": Gauge("amplitude_experiment_snapshot_published_timestamp_seconds",
                               "When the served flags were published by flagd (or last polled)", multiprocess_mode=gauge),
            "refreshed": Gauge("amplitude_experiment_last_refresh_timestamp_seconds",
                               "When this process last loaded new flags", multiprocess_mode=gauge),
            "source": Gauge("amplitude_experiment_source", "1 for the flag source serving now",
                            ["source", "flag_source"], multiprocess_mode=gauge),
            "evaluations": Counter("amplitude_experiment_evaluations", "evaluate_v2 calls"),
        }
        return _families


class ClientMetrics:
    """One client's metrics. :meth:`evaluated` is called by ``evaluate_v2`` with the flags it used."""

    def __init__(self, families: Dict[str, Any], status: Callable[[], Dict[str, Any]], flag_source: str):
        self._families = families
        self._status = status
        self._flag_source = flag_source
        self._flags: Any = None
        self._pending = 0
        self._countdown = CHECK_EVERY
        self._next_flush = 0.0
        self._source: Optional[str] = None
        self._pid = os.getpid()
        self._generation = FORKS.generation
        atexit.register(self.flush)

    def evaluated(self, flags: Any) -> None:
        self._pending += 1  # unlocked on purpose: a lost increment under a race is one evaluation
        if flags is not self._flags or self._generation != FORKS.generation:
            if self._generation != FORKS.generation:  # a fork child reports under its own pid
                self._generation = FORKS.generation
                self._pid = os.getpid()
                self._pending = 1
                self._source = None
            self._loaded(flags)
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = CHECK_EVERY
            now = time.monotonic()
            if now >= self._next_flush:
                self._next_flush = now + FLUSH_SECONDS
                self.flush()

    def flush(self) -> None:
        """Write the counted evaluations (also at exit and from ``flag_source_status``)."""
        if os.getpid() != self._pid:  # a fork child: the parent's count is the parent's
            self._pid = os.getpid()
            self._pending = 0
            self._flags = None
            return
        pending, self._pending = self._pending, 0
        if pending:
            self._families["evaluations"].inc(pending)

    def _loaded(self, flags: Any) -> None:
        self._flags = flags
        try:
            status = self._status()
        except Exception:  # a status that fails must not fail an evaluation
            return
        families = self._families
        families["version"].set(status.get("version") or 0)
        families["flags"].set(len(flags))
        published = status.get("last_success")
        if status.get("source") == "flagd" and status.get("age_seconds") is not None:
            published = time.time() - status["age_seconds"]
        if published:
            families["published"].set(published)
        families["refreshed"].set(time.time())
        source = status.get("source") or "poll"
        if source != self._source:
            if self._source is not None:
                families["source"].labels(source=self._source, flag_source=self._flag_source).set(0)
            families["source"].labels(source=source, flag_source=self._flag_source).set(1)
            self._source = source
