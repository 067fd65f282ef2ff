"""What ``amplitude-flagd status`` and ``dump`` report, read from the shared-memory files like a worker would.

Both only read: they never create, lock or unlink anything, so they are safe next to a running
daemon and under another user (a member of the files' group).
"""

import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypedDict

from amplitude_experiment.snapshot.health import read_health
from amplitude_experiment.snapshot.layout import COHORT_STALE_INTERVALS, cohort_entry_stale
from amplitude_experiment.snapshot.transport import read_transport
from amplitude_experiment.snapshot import (
    IndexState,
    SnapshotReader,
    list_published,
    publisher_alive,
    remove_by_key_hash,
)

from .config import Config, ExitCode

__all__ = ["StatusReport", "clean", "dump", "host_status", "publisher_alive", "status", "status_by_key_hash"]


class _StatusBase(TypedDict):
    key_hash: str
    shm_prefix: str
    state: str
    problems: List[str]


class StatusReport(_StatusBase, total=False):
    """What ``amplitude-flagd status [--json]`` prints. Times are ISO 8601 UTC, ages seconds.

    ``state`` is ``ok``, ``degraded`` (flagd runs and serves, but its last poll failed or its state
    dir does), ``stale`` (no fresh fetch within ``max_age_s``, or no publisher) or ``absent``;
    ``problems`` says why in words, empty when ``ok``. An absent report has only the first four keys.
    """

    version: int
    flag_count: int
    #: The published config has no flags (after flags, flagd publishes ``[]`` only when the API repeated it).
    empty_config: bool
    source: Optional[str]
    published_at: Optional[str]
    age_s: Optional[float]
    last_fetch: Optional[str]
    last_fetch_age_s: Optional[float]
    heartbeat_age_s: Optional[float]
    max_age_s: float
    publisher_pid: Optional[int]
    publisher_alive: bool
    consecutive_failures: int
    failing: List[str]
    last_error: Optional[str]
    last_error_kind: Optional[str]
    last_error_at: Optional[str]
    last_error_age_s: Optional[float]
    config_problems: int
    #: Cohort targeting (absent when flagd downloads no cohorts): one map per cohort the flags
    #: reference (id, group_type, size, last_modified, age_s since the last successful download,
    #: stale, last_error); member ids are never shown (shared memory holds keyed hashes only).
    #: Missing: not loaded; stale: loaded, but not refreshed for over two cohort intervals.
    cohorts: List[Dict[str, Any]]
    cohorts_missing: List[str]
    cohorts_stale: List[str]
    #: flagd's event relay (flagd/event_counters.EventCounters), None when it delivers no events.
    events: Optional[Dict[str, Any]]
    #: How flags reach flagd now: ``stream``, ``poll`` or ``file`` (None: a flagd that does not say),
    #: since when, and with ``--stream`` the stream's last error, failed attempts in a row, its last
    #: event (keep-alives included) and the connections opened (docs/streaming.md).
    transport: Optional[str]
    transport_since: Optional[str]
    stream_last_error: Optional[str]
    stream_last_error_at: Optional[str]
    stream_failures: int
    stream_last_event_age_s: Optional[float]
    stream_connects: int


MIN_MAX_AGE_MS = 10000


def _owner(owner: Optional[str]) -> Any:
    return int(owner) if owner and owner.isdigit() else owner


def _reader(config: Config) -> SnapshotReader:
    """A reader with a worker's trust rule: this uid, root, or flagd's user (``--flagd-owner``)."""
    return SnapshotReader(config.shm_prefix, config.deployment_key, owner=_owner(config.flagd_owner))


def status(config: Config, wall_clock_ns: Callable[[], int] = time.time_ns,
           alive: Callable[[IndexState], Optional[bool]] = publisher_alive) -> Tuple[ExitCode, StatusReport]:
    """The health of this key's snapshot: OK, DEGRADED (flagd's last poll failed), STALE (no fresh
    fetch, or publisher gone) or ABSENT."""
    return status_by_key_hash(config.shm_prefix, config.key_hash, config.max_age_ms, wall_clock_ns, alive,
                              owner=config.flagd_owner)


def status_by_key_hash(prefix: str, hashed: str, max_age_ms: Optional[int] = None,
                       wall_clock_ns: Callable[[], int] = time.time_ns,
                       alive: Callable[[IndexState], Optional[bool]] = publisher_alive,
                       owner: Optional[str] = None) -> Tuple[ExitCode, StatusReport]:
    """:func:`status` for the key whose hash is ``hashed`` (``status --key-hash``: the secret is not
    needed), with a worker's trust rule for the shared-memory files' owner (``--flagd-owner``)."""
    report: Any = {"key_hash": hashed, "shm_prefix": prefix}
    try:
        reader = SnapshotReader(prefix, "", owner=_owner(owner), hashed_key=hashed)
        state = reader.state()
        snapshot = reader.load() if state.version else None
    except Exception as error:  # no index, unreadable file: nothing a worker could serve
        report.update(state="absent", problems=["no snapshot: %s" % (error or type(error).__name__)])
        return ExitCode.ABSENT, report
    if snapshot is None:
        report.update(state="absent", problems=["nothing published for this deployment key"])
        return ExitCode.ABSENT, report
    now = wall_clock_ns()
    document = snapshot.meta  # the flags themselves are not decoded for a status
    # The running flagd's interval (the index), as workers judge it; an adopted version's meta may
    # hold the interval of the flagd that published it.
    poll_interval_ms = int(state.poll_interval_ms or document.get("poll_interval_ms") or 30000)
    max_age_ms = max_age_ms or max(3 * poll_interval_ms, MIN_MAX_AGE_MS)
    last_fetch_ns = state.last_fetch_ns or int(document.get("fetched_at_ns") or 0)
    is_alive = bool(alive(state))
    health = read_health(reader.words)
    transport = read_transport(reader.words)
    problems: List[str] = []
    last_error = ("%s at %s: %s" % (health.last_error_kind, _iso(health.last_error_at_ns), health.last_error)
                  if health.last_error_at_ns else None)
    if not state.publisher_pid:
        problems.append("no publisher: flagd stopped (workers still serve this snapshot)")
    elif not is_alive:
        problems.append("publisher pid %d is not running" % state.publisher_pid)
    fetch_age = _age_s(now, last_fetch_ns)
    stale = bool(problems)
    if fetch_age is None or fetch_age * 1000 > max_age_ms:
        stale = True
        problems.append("last successful fetch is older than %.0f s%s" % (
            max_age_ms / 1000.0, "; last error %s" % last_error if last_error else ""))
    elif is_alive and "source" in health.failing:
        problems.append("the source is failing: %d poll%s in a row failed, the last with %s; workers serve v%d" % (
            health.consecutive_failures, "" if health.consecutive_failures == 1 else "s", last_error, snapshot.version))
    if is_alive and "publish" in health.failing and not stale:
        problems.append("publishing is failing: %s" % last_error)
    if is_alive and "state_dir" in health.failing:
        problems.append("the state dir is failing, no last good copy is kept for restarts: %s" % (
            health.last_error if health.last_error_kind == "state_save_failed" else "see flagd's log"))
    try:
        cohorts = _cohorts(reader, now)
    except Exception as error:  # refused or corrupt: say so, the flags are still served
        cohorts = []
        problems.append("the cohort directory cannot be read: %s" % error)
    missing = [entry["id"] for entry in cohorts if entry["size"] is None]
    if missing and is_alive and not stale:
        problems.append("cohort%s %s not loaded: flags evaluate as if no one were in %s" % (
            "" if len(missing) == 1 else "s", ", ".join(missing), "it" if len(missing) == 1 else "them"))
    unrefreshed = [entry for entry in cohorts if entry["stale"]]
    if unrefreshed and is_alive and not stale:
        problems.append("cohort%s %s not refreshed for over %d intervals, served as last loaded" % (
            "" if len(unrefreshed) == 1 else "s", ", ".join(
                "%s (%s)" % (entry["id"], entry["last_error"] or "no error recorded") for entry in unrefreshed),
            COHORT_STALE_INTERVALS))
    degraded = bool(problems) and not stale
    flag_count = len(snapshot)
    report.update(
        state="stale" if stale else "degraded" if degraded else "ok",
        version=snapshot.version,
        flag_count=flag_count,
        # flagd publishes an empty list after flags only when the API confirmed it (docs/flagd.md).
        empty_config=flag_count == 0,
        source=document.get("source"),
        published_at=_iso(state.published_at_ns or snapshot.created_ns),
        age_s=_age_s(now, state.published_at_ns or snapshot.created_ns),
        last_fetch=_iso(last_fetch_ns),
        last_fetch_age_s=fetch_age,
        heartbeat_age_s=_age_s(now, state.heartbeat_ns),
        max_age_s=max_age_ms / 1000.0,
        publisher_pid=state.publisher_pid or None,
        publisher_alive=is_alive,
        consecutive_failures=health.consecutive_failures,
        failing=list(health.failing),
        last_error=health.last_error,
        last_error_kind=health.last_error_kind,
        last_error_at=_iso(health.last_error_at_ns),
        last_error_age_s=_age_s(now, health.last_error_at_ns),
        config_problems=health.config_problems,
        transport=transport.transport,
        transport_since=_iso(transport.transport_since_ns),
        stream_last_error=transport.stream_last_error,
        stream_last_error_at=_iso(transport.stream_last_error_at_ns),
        stream_failures=transport.stream_failures,
        stream_last_event_age_s=_age_s(now, transport.stream_last_event_ns),
        stream_connects=transport.stream_connects,
        problems=problems,
    )
    if cohorts:
        report.update(cohorts=cohorts, cohorts_missing=missing, cohorts_stale=[entry["id"] for entry in unrefreshed])
    report.update(event_report(reader.words))
    return (ExitCode.STALE if stale else ExitCode.DEGRADED if degraded else ExitCode.OK), report


def event_report(words: Any) -> Dict[str, Any]:
    """The event relay's counters as ``status`` shows them: one ``events`` entry, None when flagd
    delivers no events and never counted any."""
    from .event_counters import queue_limits, read_counters

    counters = read_counters(words)
    if not counters["delivers"] and not counters["since_ns"]:
        return {"events": None}
    counters_report: Dict[str, Any] = dict(counters)
    counters_report["since"] = _iso(counters_report.pop("since_ns"))
    # What a larger queue would need (docs/tracking.md, "The queue and the kernel's limits").
    counters_report.update(("kernel_" + name, value) for name, value in queue_limits().items())
    return {"events": counters_report}


def host_status(prefix: Optional[str] = None, max_age_ms: Optional[int] = None,
                owner: Optional[str] = None) -> List[StatusReport]:
    """One report per key published on this host (of ``prefix`` only, when given), sorted by prefix
    and key hash. Needs no deployment key."""
    return [status_by_key_hash(name_prefix, hashed, max_age_ms, owner=owner)[1]
            for name_prefix, hashed in list_published(prefix)]


def clean(prefix: str, hashed: str) -> Tuple[ExitCode, List[str], str]:
    """Remove the shared-memory files of a key whose publisher is gone: (exit code, names removed, why not).

    Refuses (ALREADY_RUNNING) while the publisher runs: stop that flagd first. Workers that mapped
    a version keep serving it; they find nothing new until a flagd publishes this key again.
    """
    try:
        reader = SnapshotReader(prefix, "", hashed_key=hashed)
        state = reader.state() if reader.attach() else IndexState()
    except Exception as error:
        state = IndexState()
        reason = str(error)
    else:
        reason = ""
    if state.publisher_pid and publisher_alive(state):
        return ExitCode.ALREADY_RUNNING, [], "flagd pid %d still publishes key hash %s under prefix %s: stop it first" % (
            state.publisher_pid, hashed, prefix)
    removed = remove_by_key_hash(prefix, hashed)
    from .event_counters import remove_queue

    if remove_queue(prefix, hashed):  # unread events in it are lost: workers deliver their own from now on
        removed.append("/%s.%s.q" % (prefix, hashed))
    if not removed:
        return ExitCode.ABSENT, [], reason or "nothing published for key hash %s under prefix %s" % (hashed, prefix)
    return ExitCode.OK, removed, ""


def dump(config: Config) -> Tuple[ExitCode, Optional[Dict[str, Any]]]:
    """The current snapshot: its version, when it was made, and the published document."""
    try:
        snapshot = _reader(config).load()
    except Exception:
        snapshot = None
    if snapshot is None:
        return ExitCode.ABSENT, None
    result: Dict[str, Any] = {"version": snapshot.version, "created_ns": snapshot.created_ns}
    result.update(snapshot.document)
    try:
        reader = _reader(config)
        reader.attach()
        cohorts = _cohorts(reader, time.time_ns())
    except Exception:
        cohorts = []
    if cohorts:
        result["cohorts"] = cohorts
    return ExitCode.OK, result


def _cohorts(reader: SnapshotReader, now_ns: int) -> List[Dict[str, Any]]:
    """The published cohort directory's entries, as status and dump show them (no member ids)."""
    from amplitude_experiment.snapshot.layout import W_COHORT_VERSION

    number = reader.words[W_COHORT_VERSION]
    if not number:
        return []
    view = reader.read_cohorts(number)
    return [{"id": entry.get("id"), "group_type": entry.get("group_type"),
             "size": entry.get("size") if entry.get("members") else None,
             "last_modified": entry.get("last_modified"),
             "age_s": _age_s(now_ns, int(entry.get("fetched_at_ns") or 0)),
             "stale": cohort_entry_stale(entry, now_ns),
             "last_error": entry.get("error")} for entry in view.cohorts]


def _age_s(now_ns: int, then_ns: int) -> Optional[float]:
    if not then_ns:
        return None
    return round(max(0, now_ns - then_ns) / 1e9, 3)


def _iso(ns: int) -> Optional[str]:
    if not ns:
        return None
    seconds = ns / 1e9
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % int((seconds % 1) * 1000)
