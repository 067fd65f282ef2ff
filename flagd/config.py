"""flagd's settings: one frozen dataclass whose fields also generate the command-line options.

Each field's metadata says which subcommands take it and its help text; ``cli.py`` turns that into
``--kebab-case`` options and ``FLAGD_UPPER_CASE`` environment variables, so an option is written
once. The deployment key is a field too, but never an option: it comes from the environment, a
file or a systemd credential (see ``cli.py``), and it is left out of ``repr``.
"""

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from amplitude_experiment._cohort_api import (
    DEFAULT_COHORT_SERVER_URL,
    DEFAULT_MAX_COHORT_SIZE,
    EU_COHORT_SERVER_URL,
    MIN_COHORT_POLLING_INTERVAL_MILLIS,
)
from amplitude_experiment._flag_api import (
    DEFAULT_SERVER_URL,
    DEFAULT_SHM_PREFIX,
    DEFAULT_STREAM_URL,
    EU_SERVER_URL,
    EU_STREAM_URL,
    FLAGS_PATH,
    STREAM_PATH,
)
from amplitude_experiment.snapshot import key_hash

from flagd.metrics import parse_address

__all__ = ["Config", "ConfigError", "ExitCode", "DEFAULT_SERVER_URL", "EU_SERVER_URL", "DEFAULT_SHM_PREFIX"]

#: Amplitude's HTTP API v2 (the analytics SDK's default endpoint) and its EU host: flagd's event endpoints.
DEFAULT_ANALYTICS_URL = "https://api2.amplitude.com/2/httpapi"
EU_ANALYTICS_URL = "https://api.eu.amplitude.com/2/httpapi"

# The flag-config hosts and the shared-memory namespace are the SDK's (amplitude_experiment._flag_api),
# so workers find the daemon without settings.


class ExitCode(enum.IntEnum):
    """Process exit statuses. Only ``cli.py`` turns them into ``sys.exit``.

    systemd units can list ``ALREADY_RUNNING`` and ``USAGE`` in ``RestartPreventExitStatus=``:
    restarting does not fix either.
    """

    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad option or environment value, no deployment key (argparse also exits 2)
    STARTUP_FAILURE = 3  # shared memory or state directory could not be set up
    ALREADY_RUNNING = 4  # another flagd holds the lock for this deployment key and prefix
    STALE = 5  # status: a snapshot is published, but its heartbeat is old or its publisher is gone
    ABSENT = 6  # status/dump: nothing is published for this deployment key
    INVALID = 7  # check: the flags file has problems (each printed on its own line)
    DEGRADED = 8  # status: flagd runs and the snapshot is fresh, but its last poll failed or --state-dir fails


class ConfigError(ValueError):
    """An option value flagd cannot run with; the message names the option."""


RUN = ("run",)
ALL = ("run", "status", "dump", "clean")


def _option(default: Any, help: str, commands: Tuple[str, ...] = RUN, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, "commands": commands, **extra})


@dataclass(frozen=True)
class Config:
    """Everything ``Daemon`` and the ``status``/``dump`` commands need. Immutable once built."""

    deployment_key: str = field(default="", repr=False, metadata={"option": False})
    server_url: str = _option(
        DEFAULT_SERVER_URL, "base URL of the flag-config API (or an evaluation-proxy); "
        "with --server-zone eu and this left at its default, the EU host is used")
    server_zone: str = _option("us", "Amplitude data center", choices=("us", "eu"))
    flags_file: Optional[str] = _option(
        None, "read flags from this JSON file (the API's shape) instead of the API; no network needed",
        metavar="PATH")
    allow_empty_flags: bool = _option(
        False, "publish a flags file that holds no flags (every flag off for every user); without it an empty "
        "list is refused as a mistake")
    poll_interval_ms: int = _option(30000, "how often to poll the API or check the flags file")
    request_timeout_ms: int = _option(10000, "time limit of one whole flag-config request, "
                                     "body included (also the connect and per-read timeout)")
    backoff_min_ms: int = _option(1000, "first retry delay after a failed fetch; doubles per failure, jittered")
    backoff_max_ms: int = _option(60000, "longest retry delay after failed fetches (at least the poll interval)")
    state_dir: Optional[str] = _option(
        None, "directory for the last good snapshot, re-published at start when the upstream is down "
        "(default: $STATE_DIRECTORY under systemd, else none)", metavar="DIR")
    shm_prefix: str = _option(DEFAULT_SHM_PREFIX, "shared-memory namespace; workers use the same value", ALL)
    group: Optional[str] = _option(None, "group (name or gid) given to the shared-memory files so workers can read them")
    log_level: str = _option("info", "logging level", ALL, choices=("debug", "info", "warning", "error"))
    metrics_address: Optional[str] = _option(
        None, "serve Prometheus metrics on HOST:PORT, e.g. 127.0.0.1:9464 (needs prometheus_client, the "
        "metrics extra); off by default", metavar="HOST:PORT")
    flagd_owner: Optional[str] = _option(
        None, "status, dump: the user (name or uid) flagd runs as; a shared-memory file is trusted only when the caller's uid, "
        "root or this user owns it (default: amplitude-flagd, when that user exists)", ("status", "dump"),
        metavar="USER")
    # Cohort targeting (docs/cohorts.md): on when both credentials are given (never as options).
    cohort_api_key: str = field(default="", repr=False, metadata={"option": False})
    cohort_secret_key: str = field(default="", repr=False, metadata={"option": False})
    cohort_server_url: str = _option(
        DEFAULT_COHORT_SERVER_URL, "base URL of the cohort download API (or an evaluation-proxy); with "
        "--server-zone eu and this left at its default, the EU host is used")
    cohort_poll_interval_ms: int = _option(
        MIN_COHORT_POLLING_INTERVAL_MILLIS, "how often each referenced cohort is asked for again (with "
        "lastModified: unchanged cohorts cost a 204)")
    max_cohort_size: int = _option(DEFAULT_MAX_COHORT_SIZE, "cohorts with more members are not downloaded "
                                   "(flags evaluate as if no one were in them; status names them)")
    analytics_api_key: str = field(default="", repr=False, metadata={"option": False})
    analytics_server_url: Optional[str] = _option(
        None, "full URL of the analytics endpoint flagd delivers the workers' events to (with an analytics API "
        "key; default Amplitude's HTTP API, its EU host with --server-zone eu)", metavar="URL")
    analytics_cache_capacity: int = _option(65536, "results remembered for the host-wide deduplication of events")
    analytics_flush_queue_size: int = _option(200, "events per batch sent to the analytics endpoint")
    analytics_flush_interval_ms: int = _option(10000, "longest wait before a partial batch of events is sent")
    analytics_flush_max_retries: int = _option(12, "retries of a failed batch of events before it is dropped")
    stream: bool = _option(
        False, "keep one Server-Sent Events connection to Amplitude's flag stream and publish each pushed change "
        "at once; the API is polled only while the stream is down or its last message "
        "was rejected (docs/streaming.md)")
    stream_server_url: str = _option(
        DEFAULT_STREAM_URL, "base URL of the flag stream (--stream); with --server-zone eu and this left at its "
        "default, the EU stream host is used")
    stream_conn_timeout_ms: int = _option(
        1500, "--stream: how long start-up waits for the stream's first message before it polls instead")
    max_age_ms: Optional[int] = _option(
        None, "status: report stale when the last successful fetch is older than this "
        "(default: 3 poll intervals, at least 10 s)", ("status",))

    def __post_init__(self) -> None:
        if not self.deployment_key:
            raise ConfigError("no deployment key")
        for name in ("poll_interval_ms", "request_timeout_ms", "backoff_min_ms", "backoff_max_ms",
                     "cohort_poll_interval_ms", "max_cohort_size", "stream_conn_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError("--%s must be positive, got %d" % (name.replace("_", "-"), getattr(self, name)))
        if self.max_age_ms is not None and self.max_age_ms <= 0:
            raise ConfigError("--max-age-ms must be positive, got %d" % self.max_age_ms)
        if self.server_zone not in ("us", "eu"):
            raise ConfigError("--server-zone must be us or eu, got %r" % self.server_zone)
        url = self.server_url.rstrip("/")
        if not (url.startswith("http://") or url.startswith("https://")) or "/" in url.split("://", 1)[1]:
            raise ConfigError("--server-url must be a scheme and host such as https://api.lab.amplitude.com, got %r"
                              % self.server_url)
        cohort_url = self.cohort_server_url.rstrip("/")
        if not (cohort_url.startswith("http://") or cohort_url.startswith("https://")) \
                or "/" in cohort_url.split("://", 1)[1]:
            raise ConfigError("--cohort-server-url must be a scheme and host such as %s, got %r"
                              % (DEFAULT_COHORT_SERVER_URL, self.cohort_server_url))
        if bool(self.cohort_api_key) != bool(self.cohort_secret_key):
            raise ConfigError("cohort targeting needs both the cohort API key and the cohort secret key; only one "
                              "was given")
        for name in ("analytics_flush_queue_size", "analytics_flush_interval_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError("--%s must be positive, got %d" % (name.replace("_", "-"), getattr(self, name)))
        if self.analytics_server_url is not None and not self.analytics_server_url.startswith(("http://", "https://")):
            raise ConfigError("--analytics-server-url must be a full http(s) URL such as "
                              "https://api2.amplitude.com/2/httpapi, got %r" % self.analytics_server_url)
        if self.stream and self.flags_file:
            raise ConfigError("--stream reads Amplitude's flag stream; it cannot be combined with --flags-file")
        stream_url = self.stream_server_url.rstrip("/")
        if not (stream_url.startswith("http://") or stream_url.startswith("https://")) \
                or "/" in stream_url.split("://", 1)[1]:
            raise ConfigError("--stream-server-url must be a scheme and host such as %s, got %r"
                              % (DEFAULT_STREAM_URL, self.stream_server_url))
        if not self.shm_prefix or "/" in self.shm_prefix:
            raise ConfigError("--shm-prefix must be a non-empty name without '/', got %r" % self.shm_prefix)
        if self.metrics_address is not None:
            try:
                parse_address(self.metrics_address)  # a typo is a usage error; a port in use fails at start
            except ValueError as error:
                raise ConfigError(str(error)) from None

    @property
    def flags_url(self) -> str:
        """The poll URL; ``--server-zone eu`` with the default URL switches hosts as LocalEvaluationConfig does
        (docs/compatibility.md, "Hosts")."""
        base = self.server_url.rstrip("/")
        if self.server_zone == "eu" and base == DEFAULT_SERVER_URL:
            base = EU_SERVER_URL
        return base + FLAGS_PATH

    @property
    def cohort_url(self) -> str:
        """The cohort API's base URL; ``--server-zone eu`` with the default switches to the EU host."""
        base = self.cohort_server_url.rstrip("/")
        if self.server_zone == "eu" and base == DEFAULT_COHORT_SERVER_URL:
            base = EU_COHORT_SERVER_URL
        return base

    @property
    def stream_url(self) -> str:
        """The stream URL; ``--server-zone eu`` with the default stream (or API) URL streams from the EU
        host (the reference keeps the US host there, docs/compatibility.md)."""
        base = self.stream_server_url.rstrip("/")
        if self.server_zone == "eu" and base in (DEFAULT_STREAM_URL, DEFAULT_SERVER_URL):
            base = EU_STREAM_URL
        return base + STREAM_PATH

    @property
    def analytics_url(self) -> str:
        """Where events go: ``--analytics-server-url``, else Amplitude's HTTP API (its EU host with
        ``--server-zone eu``), the analytics SDK's own defaults."""
        if self.analytics_server_url:
            return self.analytics_server_url
        return EU_ANALYTICS_URL if self.server_zone == "eu" else DEFAULT_ANALYTICS_URL

    def analytics_settings(self) -> Dict[str, Any]:
        """What the event relay needs (flagd/events.py); holds the analytics key."""
        return {"api_key": self.analytics_api_key, "server_url": self.analytics_url,
                "cache_capacity": self.analytics_cache_capacity,
                "flush_queue_size": self.analytics_flush_queue_size,
                "flush_interval_ms": self.analytics_flush_interval_ms,
                "flush_max_retries": self.analytics_flush_max_retries}

    @property
    def source_name(self) -> str:
        """What the snapshot says it came from: ``file:<path>`` or the server URL (never the key)."""
        if self.flags_file:
            return "file:" + self.flags_file
        return self.flags_url.split("/sdk/", 1)[0]

    @property
    def key_hash(self) -> str:
        """The hash that names this key's shared-memory files, and stands for the key in logs."""
        return key_hash(self.deployment_key)

    @classmethod
    def option_fields(cls, command: str) -> Dict[str, "dataclasses.Field[Any]"]:
        """The fields that are options of ``command``, by name, in declaration order."""
        return {
            f.name: f for f in dataclasses.fields(cls)
            if f.metadata.get("option", True) and command in f.metadata.get("commands", RUN)
        }
