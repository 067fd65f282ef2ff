"""What ``amplitude-flagd status`` and ``dump`` report, read from the segments like a worker would.

Both only read: they never create, lock or unlink anything, so they are safe next to a running
daemon and under another user (a member of the segments' group).
"""

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from amplitude_experiment.snapshot.segment import IndexState, SnapshotReader, publisher_alive

from .config import Config, ExitCode

__all__ = ["dump", "publisher_alive", "status"]

MIN_MAX_AGE_MS = 10000


def _reader(config: Config) -> SnapshotReader:
    """A reader with a worker's trust rule: this uid, root, or flagd's user (``--flagd-owner``)."""
    owner = config.flagd_owner
    return SnapshotReader(config.shm_prefix, config.deployment_key,
                          owner=int(owner) if owner and owner.isdigit() else owner)


def status(config: Config, wall_clock_ns: Callable[[], int] = time.time_ns,
           alive: Callable[[IndexState], Optional[bool]] = publisher_alive) -> Tuple[ExitCode, Dict[str, Any]]:
    """The health of this key's snapshot: OK, STALE (old heartbeat or publisher gone) or ABSENT."""
    report: Dict[str, Any] = {"key_hash": config.key_hash, "shm_prefix": config.shm_prefix}
    try:
        reader = _reader(config)
        state = reader.state()
        snapshot = reader.load() if state.version else None
    except Exception as error:  # no index, unreadable segment: nothing a worker could serve
        report.update(state="absent", problems=["no snapshot: %s" % (error or type(error).__name__)])
        return ExitCode.ABSENT, report
    if snapshot is None:
        report.update(state="absent", problems=["nothing published for this deployment key"])
        return ExitCode.ABSENT, report
    now = wall_clock_ns()
    document = snapshot.meta  # the flags themselves are not decoded for a status
    poll_interval_ms = int(document.get("poll_interval_ms") or 30000)
    max_age_ms = config.max_age_ms or max(3 * poll_interval_ms, MIN_MAX_AGE_MS)
    last_fetch_ns = state.last_fetch_ns or int(document.get("fetched_at_ns") or 0)
    is_alive = bool(alive(state))
    problems: List[str] = []
    if not state.publisher_pid:
        problems.append("no publisher: flagd stopped (workers still serve this snapshot)")
    elif not is_alive:
        problems.append("publisher pid %d is not running" % state.publisher_pid)
    fetch_age = _age_s(now, last_fetch_ns)
    if fetch_age is None or fetch_age * 1000 > max_age_ms:
        problems.append("last successful fetch is older than %.0f s" % (max_age_ms / 1000.0))
    flag_count = len(snapshot)
    report.update(
        state="stale" if problems else "ok",
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
        publisher_pid=state.publisher_pid,
        publisher_alive=is_alive,
        problems=problems,
    )
    return (ExitCode.STALE if problems else ExitCode.OK), report


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
    return ExitCode.OK, result


def _age_s(now_ns: int, then_ns: int) -> Optional[float]:
    if not then_ns:
        return None
    return round(max(0, now_ns - then_ns) / 1e9, 3)


def _iso(ns: int) -> Optional[str]:
    if not ns:
        return None
    seconds = ns / 1e9
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % int((seconds % 1) * 1000)
