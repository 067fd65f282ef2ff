"""flagd's Prometheus metrics, served on ``--metrics-address HOST:PORT`` (opt-in).

Uses ``prometheus_client`` (the ``metrics`` extra), imported only when an address is given. Every
metric lives in a registry of its own, so a test or an embedding process can run several daemons.
The daemon's thread only sets values; prometheus_client's server thread reads them.

=========================================  =======  ===============================================
metric                                     type     meaning
=========================================  =======  ===============================================
flagd_published_version                    gauge    version workers are told to serve (0: none)
flagd_flags                                gauge    flags in that version
flagd_cohorts                              gauge    distinct cohort ids its conditions name
flagd_snapshot_bytes                       gauge    size of that version's version file
flagd_last_success_timestamp_seconds       gauge    last successful fetch (unchanged content too)
flagd_last_publish_timestamp_seconds       gauge    when the current version was published
flagd_consecutive_failures                 gauge    failed polls in a row (0: the last one worked)
flagd_fetch_errors_total{kind}             counter  fetch_failed, config_rejected
flagd_publish_errors_total{kind}           counter  publish_failed, state_save_failed
flagd_config_problems_total                counter  problems found in configs from the API
flagd_publish_duration_seconds             histo.   writing one version into shared memory
flagd_info{key_hash, source, shm_prefix}   gauge    1; which key and source this daemon serves
flagd_events_total{outcome}                counter  worker events: received, deduplicated, sent,
                                                    failed, dropped, rejected, worker_fallbacks
flagd_events_queue_depth                   gauge    messages waiting in the event queue
=========================================  =======  ===============================================

The event metrics exist when flagd delivers events (an analytics API key is given).

Streaming is not implemented, so there is no stream-state metric yet.
"""

import os
from typing import Any, Callable, Iterable, Iterator, Optional, Set, Tuple

__all__ = ["DaemonMetrics", "MetricsUnavailable", "parse_address"]

FETCH_KINDS = ("fetch_failed", "config_rejected")
PUBLISH_KINDS = ("publish_failed", "state_save_failed")
EVENT_OUTCOMES = ("received", "deduplicated", "sent", "failed", "dropped", "rejected", "worker_fallbacks")


class MetricsUnavailable(RuntimeError):
    """``--metrics-address`` was given but prometheus_client is not installed, or the address is unusable."""


def parse_address(address: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) -> (host, port). :raises ValueError: naming the address."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("--metrics-address must be HOST:PORT such as 127.0.0.1:9464, got %r" % address)
    return host, int(port)


class DaemonMetrics:
    """The daemon's metrics and, after :meth:`serve`, the HTTP server that exposes them."""

    def __init__(self, key_hash: str, source: str, shm_prefix: str):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise MetricsUnavailable(
                "--metrics-address needs prometheus_client: pip install 'amplitude-experiment-shared[metrics]' "
                "(or pip install prometheus_client)") from None
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.published_version = Gauge("flagd_published_version", "Version workers are told to serve (0: none)",
                                       registry=registry)
        self.flags = Gauge("flagd_flags", "Flags in the published version", registry=registry)
        self.cohorts = Gauge("flagd_cohorts", "Distinct cohort ids the published flags' conditions name",
                             registry=registry)
        self.snapshot_bytes = Gauge("flagd_snapshot_bytes", "Size of the published version's version file",
                                    registry=registry)
        self.last_success = Gauge("flagd_last_success_timestamp_seconds",
                                  "Last successful fetch from the source (content changed or not)", registry=registry)
        self.last_publish = Gauge("flagd_last_publish_timestamp_seconds", "When the current version was published",
                                  registry=registry)
        self.consecutive_failures = Gauge("flagd_consecutive_failures", "Failed polls in a row", registry=registry)
        self.fetch_errors = Counter("flagd_fetch_errors", "Polls that gave no usable config, by kind", ["kind"],
                                    registry=registry)
        self.publish_errors = Counter("flagd_publish_errors", "Failures to publish or to save the last good copy",
                                      ["kind"], registry=registry)
        self.config_problems = Counter("flagd_config_problems", "Problems found in configs from the API",
                                       registry=registry)
        self.publish_duration = Histogram("flagd_publish_duration_seconds", "Writing one version into shared memory",
                                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                                          registry=registry)
        info = Gauge("flagd_info", "1, labelled with the key hash, source and prefix this daemon serves",
                     ["key_hash", "source", "shm_prefix"], registry=registry)
        info.labels(key_hash=key_hash, source=source, shm_prefix=shm_prefix).set(1)
        for kind in FETCH_KINDS:
            self.fetch_errors.labels(kind=kind)
        for kind in PUBLISH_KINDS:
            self.publish_errors.labels(kind=kind)
        self._server: Any = None
        self._thread: Any = None

    def serve(self, address: str) -> Tuple[str, int]:
        """Start the HTTP server (a daemon thread); returns the bound (host, port).

        :raises MetricsUnavailable: the address is malformed or cannot be bound.
        """
        from prometheus_client import start_http_server

        try:
            host, port = parse_address(address)
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except (ValueError, OSError) as error:
            raise MetricsUnavailable("cannot serve metrics on %s: %s" % (address, error)) from None
        return host, self._server.server_port

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # --- what the daemon reports --------------------------------------------------------------

    def published(self, version: int, flags: Iterable[Any], version_file_path: str, at_s: float, seconds: float) -> None:
        self.adopted(version, flags, version_file_path)
        self.last_publish.set(at_s)
        self.publish_duration.observe(seconds)

    def adopted(self, version: int, flags: Iterable[Any], version_file_path: str) -> None:
        """The version served now (published by this flagd or found at start), its flags and size."""
        flags = list(flags)
        self.published_version.set(version)
        self.flags.set(len(flags))
        self.cohorts.set(len(cohort_ids(flags)))
        try:
            self.snapshot_bytes.set(os.stat(version_file_path).st_size)
        except OSError:
            pass

    def succeeded(self, at_s: float) -> None:
        self.last_success.set(at_s)
        self.consecutive_failures.set(0)

    def failed(self, kind: str, failures: int) -> None:
        if kind in PUBLISH_KINDS:
            self.publish_errors.labels(kind=kind).inc()
        else:
            self.fetch_errors.labels(kind=kind).inc()
        if kind != "state_save_failed":
            self.consecutive_failures.set(failures)

    def problems(self, count: int) -> None:
        self.config_problems.inc(count)

    def watch_events(self, read: Callable[[], Any]) -> None:
        """Export the event relay's counters (``read()`` gives flagd/event_counters.EventCounters) at each scrape."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        class _EventCollector:
            def collect(self) -> Iterator[Any]:
                counters = read()
                total = CounterMetricFamily("flagd_events", "Worker events by outcome", labels=["outcome"])
                for outcome in EVENT_OUTCOMES:
                    total.add_metric([outcome], counters[outcome])
                yield total
                yield GaugeMetricFamily("flagd_events_queue_depth", "Messages waiting in the event queue",
                                        value=counters["queue_depth"])

        self.registry.register(_EventCollector())


def cohort_ids(flags: Iterable[Any]) -> Set[str]:
    """Cohort ids named by conditions on ``cohort_ids`` (user or group), across all flags."""
    found: Set[str] = set()
    for flag in flags:
        for segment in (flag.get("segments") or []) if isinstance(flag, dict) else []:
            for group in (segment.get("conditions") or []) if isinstance(segment, dict) else []:
                for condition in group if isinstance(group, list) else []:
                    if not isinstance(condition, dict):
                        continue
                    selector = condition.get("selector") or []
                    if selector and selector[-1] == "cohort_ids":
                        found.update(value for value in condition.get("values") or [] if isinstance(value, str))
    return found


def version_file_path(prefix: str, key_hash: str, version: int) -> Optional[str]:
    """Where a version file shows in the file system (Linux's /dev/shm)."""
    from amplitude_experiment.snapshot.host import SHM_DIR

    return "%s/%s.%s.v%d" % (SHM_DIR, prefix, key_hash, version)
