"""flagd's event counters in the index and the kernel's message-queue limits: what ``status`` reads.

Light on purpose (no analytics SDK): ``amplitude-flagd status`` imports it; the relay that writes
the counters is ``events.py``.
"""

import os
from typing import Any, Dict, Optional, TypedDict

import posix_ipc

from amplitude_experiment.snapshot.layout import (
    W_ANALYTICS_KEY,
    W_EVENTS_DEDUPLICATED,
    W_EVENTS_DROPPED,
    W_EVENTS_FAILED,
    W_EVENTS_MESSAGE_SIZE,
    W_EVENTS_QUEUE_CAPACITY,
    W_EVENTS_QUEUE_DEPTH,
    W_EVENTS_RECEIVED,
    W_EVENTS_REJECTED,
    W_EVENTS_SENT,
    W_EVENTS_SINCE,
    W_EVENTS_WORKER_FALLBACKS,
)

__all__ = ["COUNTER_WORDS", "EventCounters", "QueueLimits", "queue_limits", "read_counters", "remove_queue"]

#: Where Linux shows its POSIX message-queue limits.
MQUEUE_LIMITS = "/proc/sys/fs/mqueue"

COUNTER_WORDS = {
    "received": W_EVENTS_RECEIVED, "deduplicated": W_EVENTS_DEDUPLICATED, "sent": W_EVENTS_SENT,
    "failed": W_EVENTS_FAILED, "queue_depth": W_EVENTS_QUEUE_DEPTH, "worker_fallbacks": W_EVENTS_WORKER_FALLBACKS,
    "rejected": W_EVENTS_REJECTED, "dropped": W_EVENTS_DROPPED, "queue_capacity": W_EVENTS_QUEUE_CAPACITY,
    "message_size": W_EVENTS_MESSAGE_SIZE,
}


class EventCounters(TypedDict):
    """flagd's event counters (index words 34..44), since ``since_ns``: what ``status`` shows.

    ``delivers``: flagd advertises an analytics key now. ``received`` / ``deduplicated`` /
    ``rejected``: worker messages read, dropped as repeats within 24 h, undecodable.
    ``sent`` / ``failed`` / ``dropped``: events Amplitude accepted, events given up after retries,
    results dropped because the delivery queue was full or the analytics client could not start. ``queue_depth``: messages waiting in the
    kernel queue at the last look. ``worker_fallbacks``: results workers delivered themselves while
    flagd delivers for them (told by their next message). ``queue_capacity`` / ``message_size``:
    the queue's limits (messages, bytes).
    """

    delivers: bool
    received: int
    deduplicated: int
    sent: int
    failed: int
    dropped: int
    rejected: int
    queue_depth: int
    worker_fallbacks: int
    queue_capacity: int
    message_size: int
    since_ns: int


def read_counters(words: Any) -> EventCounters:
    """The counters as the index holds them now (word by word: for reports)."""
    counters: Any = {name: int(words[word]) for name, word in COUNTER_WORDS.items()}
    counters["delivers"] = bool(words[W_ANALYTICS_KEY])
    counters["since_ns"] = int(words[W_EVENTS_SINCE])
    return counters


class QueueLimits(TypedDict):
    """The kernel's POSIX message-queue limits (/proc/sys/fs/mqueue), None where unreadable."""

    msg_max: Optional[int]
    msgsize_max: Optional[int]
    queues_max: Optional[int]


def queue_limits(directory: str = MQUEUE_LIMITS) -> QueueLimits:
    """Read the limits that bound the event queue: messages per queue, bytes per message, queues."""
    values: Dict[str, Optional[int]] = {}
    for name in ("msg_max", "msgsize_max", "queues_max"):
        try:
            with open(os.path.join(directory, name)) as handle:
                values[name] = int(handle.read().strip())
        except (OSError, ValueError):
            values[name] = None
    return QueueLimits(msg_max=values["msg_max"], msgsize_max=values["msgsize_max"], queues_max=values["queues_max"])


def remove_queue(prefix: str, hashed_key: str) -> bool:
    """Unlink a key's event queue (``clean``, tests); messages in it are lost. True if one was removed."""
    try:
        posix_ipc.unlink_message_queue("/%s.%s.q" % (prefix, hashed_key))
        return True
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        return False
