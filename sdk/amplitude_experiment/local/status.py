"""``LocalEvaluationClient.flag_source_status``: one typed shape for every flag source.

Every key is present whatever the source; a key that does not apply to the source serving now is
None. Times are wall-clock seconds since the epoch, ages seconds.
"""

from typing import Any, Dict, List, Optional, TypedDict

__all__ = ["FlagSourceStatus", "empty_status", "publisher_trouble"]


class FlagSourceStatus(TypedDict):
    """What serves this client's flags and how healthy it is.

    Common keys:

    - ``source``: ``"poll"`` (this process polls Amplitude) or ``"flagd"`` (flagd's snapshot).
    - ``flag_source``: the configured mode, ``"poll"``, ``"flagd"`` or ``"auto"``.
    - ``healthy``: flags are loaded and nothing is failing now (poll: the last poll succeeded;
      flagd: the publisher runs, its heartbeat is fresh and its last poll succeeded).
    - ``version``: the snapshot version served (flagd; None when polling).
    - ``flags``: number of flags served, None before any were loaded.
    - ``age_seconds``: poll: since the last successful poll (with ``stream_updates``, since the
      stream last confirmed the flags: a message or a keep-alive); flagd: since the served version
      was published.
    - ``last_success``: when flags were last fetched successfully (by this process or by flagd).
    - ``last_error`` / ``last_error_at``: this process's last problem (a failed poll, a refused
      shared-memory file) and when, None when there was none or it was resolved.
    - ``consecutive_failures``: this process's failed polls in a row (0 in shared mode).
    - ``flags_compiled``: flags this process compiled so far (a flag is compiled when a request
      first needs it, and again only when its content changes).

    Shared mode (None while polling): ``published_version`` (what the index names now; equals
    ``version`` unless a newer one was refused), ``publisher_pid``, ``publisher_alive``,
    ``heartbeat_age_seconds``, ``last_fetch_age_seconds``, ``poll_interval_seconds`` (flagd's),
    ``upstream`` (where flagd got the flags: a URL or ``file:<path>``), ``index`` (the index's
    name; also set in auto mode while polling), ``publisher_last_error`` /
    ``publisher_last_error_at`` / ``publisher_consecutive_failures`` / ``publisher_failing``
    (flagd's own health, read from the index).

    Polling (None in shared mode): ``url`` and ``polls`` (polls attempted by this process).

    ``events``: where this process's tracked results went (an ``EventChannelStatus``, see
    amplitude_experiment.tracking.host_channel: handed to flagd, delivered here, fallbacks by
    reason); None without tracking or with ``flag_source="poll"``.

    Transport (docs/streaming.md): ``transport`` is how flags arrive now, ``"stream"`` or
    ``"poll"`` (in shared mode, flagd's: also ``"file"``), ``transport_since`` since when. With
    ``stream_updates`` (None otherwise): ``stream_url``, ``stream_last_error`` /
    ``stream_last_error_at``, ``stream_consecutive_failures``, ``stream_connects`` (connection
    attempts, failed ones included), ``stream_messages`` (flag lists received). In shared mode
    ``stream_last_error`` and ``stream_last_error_at`` are flagd's.

    Cohorts (None without cohort targeting: no ``cohort_sync_config`` while polling, no cohorts
    published by flagd in shared mode): ``cohorts`` maps each cohort the flags reference to its
    state (``group_type``, ``size``, ``last_modified``, ``loaded``, ``stale``, ``last_success``,
    ``last_error``, ``last_error_at``); ``cohorts_missing`` lists those not loaded (flags evaluate
    as if no one were in them), ``cohorts_stale`` those whose last refresh is older than two
    cohort intervals (docs/cohorts.md).
    """

    source: str
    flag_source: str
    healthy: bool
    version: Optional[int]
    flags: Optional[int]
    age_seconds: Optional[float]
    last_success: Optional[float]
    last_error: Optional[str]
    last_error_at: Optional[float]
    consecutive_failures: int
    flags_compiled: Optional[int]
    published_version: Optional[int]
    publisher_pid: Optional[int]
    publisher_alive: Optional[bool]
    heartbeat_age_seconds: Optional[float]
    last_fetch_age_seconds: Optional[float]
    poll_interval_seconds: Optional[float]
    upstream: Optional[str]
    index: Optional[str]
    publisher_last_error: Optional[str]
    publisher_last_error_at: Optional[float]
    publisher_consecutive_failures: Optional[int]
    publisher_failing: Optional[List[str]]
    url: Optional[str]
    polls: Optional[int]
    cohorts: Optional[Dict[str, Any]]
    cohorts_missing: Optional[List[str]]
    cohorts_stale: Optional[List[str]]
    events: Optional[Dict[str, Any]]
    transport: Optional[str]
    transport_since: Optional[float]
    stream_url: Optional[str]
    stream_last_error: Optional[str]
    stream_last_error_at: Optional[float]
    stream_consecutive_failures: Optional[int]
    stream_connects: Optional[int]
    stream_messages: Optional[int]


def empty_status(source: str, flag_source: str) -> FlagSourceStatus:
    """A status with every key present and nothing known."""
    return FlagSourceStatus(
        source=source, flag_source=flag_source, healthy=False, version=None, flags=None, age_seconds=None,
        last_success=None, last_error=None, last_error_at=None, consecutive_failures=0, flags_compiled=None,
        published_version=None, publisher_pid=None, publisher_alive=None, heartbeat_age_seconds=None,
        last_fetch_age_seconds=None, poll_interval_seconds=None, upstream=None, index=None,
        publisher_last_error=None, publisher_last_error_at=None, publisher_consecutive_failures=None,
        publisher_failing=None, url=None, polls=None, events=None, transport=None, transport_since=None,
        stream_url=None,
        stream_last_error=None, stream_last_error_at=None, stream_consecutive_failures=None, stream_connects=None,
        stream_messages=None, cohorts=None, cohorts_missing=None, cohorts_stale=None,
    )


def publisher_trouble(pid: int, alive: Optional[bool], failures: int, failing: List[str],
                      last_error: Optional[str], last_error_age_s: Optional[float]) -> str:
    """Why flagd's snapshot is not being refreshed, in the words of what the index tells: for the
    worker's stale warning, so it does not ask "is flagd running?" while flagd runs and fails."""
    if not pid:
        return "flagd stopped (no publisher recorded in the index)"
    if alive is False:
        return "flagd (pid %d) is not running" % pid
    if "source" in failing or failures:
        return "flagd (pid %d) runs but its last %d poll%s failed%s" % (
            pid, failures, "" if failures == 1 else "s",
            ", the last %.0f s ago: %s" % (last_error_age_s or 0.0, last_error) if last_error else "")
    if "publish" in failing:
        return "flagd (pid %d) runs but cannot publish: %s" % (pid, last_error or "see its log")
    return "flagd (pid %d) runs but has not refreshed its heartbeat: is it stuck? (see its log)" % pid
