"""flagd's event relay: the workers' tracked results in, one deduplicated stream to Amplitude out.

Workers send each new tracked result as a msgpack message on the key's POSIX message queue
(``/<prefix>.<keyhash>.q``; the format is the SDK's, amplitude_experiment.tracking.host_channel).
One thread here blocks in ``receive``, deduplicates host-wide with the SDK's own rule and filter
(same user, same variants, 24 h sliding TTL, ``--analytics-cache-capacity`` entries; the key is
the canonical form the worker computed for its own dedup and sent along), and hands
what is new to the SDK's event pipeline, which builds the reference's events (evaluation time and
insert ids included) and delivers them through ``amplitude-analytics`` (batching, retries).

The relay advertises itself in the index: word 33 the hash of its endpoint URL, then word 32 the
hash of its analytics API key (a worker routes to flagd only when both match its own config).
Stopping clears word 32 first, so workers deliver for themselves again, then reads what the queue
still holds and flushes it all. Messages nobody read stay in the kernel queue for the next flagd.

The only flagd module that imports the SDK's tracking package and the analytics SDK.
"""

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import amplitude
import msgpack
import posix_ipc

from amplitude_experiment.snapshot.layout import (
    W_ANALYTICS_ENDPOINT,
    W_ANALYTICS_KEY,
    W_EVENTS_QUEUE_DEPTH,
    W_EVENTS_QUEUE_KEY,
    W_EVENTS_SINCE,
    W_EVENTS_WORKER_FALLBACKS,
    analytics_endpoint_hash,
    analytics_key_hash,
    queue_name,
)
from amplitude_experiment.tracking import Assignment, DedupFilter, Exposure, to_event, to_exposure_events
from amplitude_experiment.tracking._delivery import EventPipeline
from amplitude_experiment.tracking.encoding import Reporter
from amplitude_experiment.tracking.host_channel import HEADER_FIELDS, KIND_ASSIGNMENT, KIND_EXPOSURE, MESSAGE_FORMAT
from amplitude_experiment.user import User
from amplitude_experiment.variant import Variant

from .event_counters import COUNTER_WORDS, EventCounters, queue_limits, read_counters
from .log import Quoted

__all__ = ["EventRelay", "open_queue", "start_relay"]

logger = logging.getLogger(__name__)

#: The queue's mode: flagd reads and writes, the group (the workers) may only send.
QUEUE_MODE = 0o620
#: Seconds the receive thread blocks before it looks whether to stop.
RECEIVE_WAIT = 0.25
#: The queue depth is looked up after this many messages (and whenever the queue is empty).
DEPTH_EVERY = 64
#: The most fallbacks one message may report: a worker counts them between two of its messages.
MAX_FALLBACKS = 2 ** 32
#: At stop, how long to wait for the last events to be sent (seconds).
STOP_FLUSH_SECONDS = 10.0

def open_queue(name: str, gid: Optional[int]) -> Any:
    """Create the queue (as large as the kernel allows) or reuse the one a previous flagd left,
    with its unread messages; mode 0620 and the workers' group.

    :raises PermissionError: the queue exists and another user owns it (it may read what workers send).
    :raises OSError: the kernel refused to create it.
    """
    limits = queue_limits()
    wanted = (limits["msg_max"] or 10, limits["msgsize_max"] or 8192)
    queue = None
    for messages, size in (wanted, (min(wanted[0], 10), min(wanted[1], 8192))):
        try:
            queue = posix_ipc.MessageQueue(name, flags=posix_ipc.O_CREAT, mode=0o600, max_messages=messages,
                                           max_message_size=size, read=True, write=False)
            break
        except ValueError:  # above this user's limits (msg_max, msgsize_max) or RLIMIT_MSGQUEUE
            continue
        except posix_ipc.PermissionsError as error:
            raise PermissionError("%s exists and this user may not read it (%s): another user created it; "
                                  "remove it as root (posix_ipc.unlink_message_queue) and restart flagd"
                                  % (name, error)) from None
    if queue is None:
        raise OSError("the kernel refused to create %s with %d messages of %d bytes or 10 of 8192 (%s)"
                      % (name, wanted[0], wanted[1], ", ".join("%s=%s" % item for item in limits.items())))
    stat = os.fstat(queue.mqd)
    if stat.st_uid != os.geteuid():
        queue.close()
        raise PermissionError("%s is owned by uid %d, not by flagd's uid %d: another user may read what workers "
                              "send; remove it as root and restart flagd" % (name, stat.st_uid, os.geteuid()))
    os.fchmod(queue.mqd, QUEUE_MODE)
    if gid is not None and stat.st_gid != gid:
        os.fchown(queue.mqd, -1, gid)
    return queue


def _header(message: bytes) -> List[Any]:
    """The decoded fields of one worker message, the header checked.

    :raises ValueError: not a message a worker of this format sends.
    """
    fields = msgpack.unpackb(message, raw=False, strict_map_key=False, use_list=True)
    if not isinstance(fields, list) or len(fields) < HEADER_FIELDS or fields[0] != MESSAGE_FORMAT \
            or (len(fields) - HEADER_FIELDS) % 4 or fields[1] not in (KIND_EXPOSURE, KIND_ASSIGNMENT) \
            or not isinstance(fields[2], str) or not isinstance(fields[3], (int, float)) \
            or not isinstance(fields[7], int) or not 0 <= fields[7] <= MAX_FALLBACKS:
        raise ValueError("not an event message of format %d" % MESSAGE_FORMAT)
    return fields


def _decode(fields: List[Any]) -> Tuple[Any, Dict[str, Variant], bool]:
    """(user, variants, evaluated properties sent) of a message's checked fields.

    :raises ValueError: the flags part is malformed.
    """
    props = fields[8]
    user = User(**props) if isinstance(props, dict) else User()
    user.user_id = fields[4]
    user.device_id = fields[5]
    user.groups = fields[6]
    variants = {fields[at]: Variant(fields[at + 2], None, fields[at + 1], fields[at + 3])
                for at in range(HEADER_FIELDS, len(fields), 4)}
    return user, variants, isinstance(props, dict)


class EventRelay:
    """Receives the workers' results, deduplicates them host-wide and delivers them.

    :param words: the index as u64 words (the writer's mapping): advertisement and counters.
    :param analytics: the ``amplitude.Config`` to deliver with (api key, server_url, batching).
    :param cache_capacity: results remembered per kind for deduplication.
    :param sink_factory: builds the analytics client (tests pass a fake; Amplitude's SDK by default).
    """

    def __init__(self, prefix: str, deployment_key: str, words: Any, analytics: amplitude.Config,
                 cache_capacity: int, gid: Optional[int] = None, sink_factory: Optional[Callable[..., Any]] = None,
                 wall_clock_ns: Callable[[], int] = time.time_ns):
        self.queue_name = queue_name(prefix, deployment_key)
        self._words = words
        self._analytics = analytics
        self._gid = gid
        self._wall_clock_ns = wall_clock_ns
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTER_WORDS, 0)
        self._queue: Any = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._warned_rejected = False
        report = Reporter(logger)
        self._filters = {KIND_EXPOSURE: DedupFilter(cache_capacity), KIND_ASSIGNMENT: DedupFilter(cache_capacity)}
        ttl = self._filters[KIND_EXPOSURE].ttl_millis
        counted = self._counting_callback()
        self._pipelines = {
            KIND_EXPOSURE: EventPipeline(
                "exposure", analytics,
                lambda record, callback: to_exposure_events(record, ttl, counted(callback), report),
                logger, sink_factory),
            KIND_ASSIGNMENT: EventPipeline(
                "assignment", analytics,
                lambda record, callback: [to_event(record, record.send_evaluated_props, counted(callback), report)],
                logger, sink_factory),
        }

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the queue, start the receive thread, then advertise (endpoint first, key last).

        :raises OSError: the queue cannot be created or is not flagd's (nothing is advertised).
        """
        self._queue = open_queue(self.queue_name, self._gid)
        words = self._words
        for name in COUNTER_WORDS:
            words[COUNTER_WORDS[name]] = 0
        self._counts["queue_capacity"] = self._queue.max_messages
        self._counts["message_size"] = self._queue.max_message_size
        self._counts["queue_depth"] = self._queue.current_messages
        self._store()
        words[W_EVENTS_SINCE] = self._wall_clock_ns()
        key, endpoint = analytics_key_hash(self._analytics.api_key), analytics_endpoint_hash(self._analytics.server_url)
        if words[W_EVENTS_QUEUE_KEY] and (words[W_EVENTS_QUEUE_KEY], words[W_ANALYTICS_ENDPOINT]) != (key, endpoint):
            self._discard_left_over()
        words[W_EVENTS_QUEUE_KEY] = key
        self._thread = threading.Thread(target=self._receive_loop, name="flagd.events", daemon=True)
        self._thread.start()
        words[W_ANALYTICS_ENDPOINT] = endpoint
        words[W_ANALYTICS_KEY] = key
        logger.info("event=events_relay queue=%s endpoint=%s queue_capacity=%d message_size=%d waiting=%d",
                    self.queue_name, Quoted(self._analytics.server_url), self._queue.max_messages,
                    self._queue.max_message_size, self._counts["queue_depth"])

    def _discard_left_over(self) -> None:
        """Read away what a previous flagd left in the queue for another analytics key or endpoint:
        delivered with ours, those events would reach another project or region. Counted as rejected."""
        discarded = 0
        for _ in range(max(self._queue.max_messages, 1) * 4):  # bounded: a worker may still send for it
            try:
                self._queue.receive(0)
            except posix_ipc.BusyError:
                break
            discarded += 1
        if discarded:
            for _ in range(discarded):
                self._count("rejected")
            logger.warning("event=events_discarded queue=%s count=%d msg=%s", self.queue_name, discarded, Quoted(
                "a previous flagd left these for another analytics key or endpoint; not delivered with this one"))

    def stop(self, timeout: float = STOP_FLUSH_SECONDS) -> None:
        """Stop advertising, read what the queue holds now, and deliver everything held (SIGTERM)."""
        deadline = time.monotonic() + timeout
        self._words[W_ANALYTICS_KEY] = 0  # workers deliver for themselves from their next result on
        self._stopping = True
        if self._thread is not None:
            self._thread.join(RECEIVE_WAIT * 4)
        drained = 0
        if self._queue is not None:
            capacity = max(self._queue.max_messages, 1)
            for _ in range(capacity * 4):  # bounded: workers that saw the key a moment ago may still send
                try:
                    message, _ = self._queue.receive(0)
                except posix_ipc.BusyError:
                    break
                self._handle(message)
                drained += 1
        for pipeline in self._pipelines.values():
            pipeline.flush(deadline)
        self._note_depth()
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        counts = self._counts
        logger.info("event=events_flushed drained=%d received=%d deduplicated=%d sent=%d failed=%d dropped=%d",
                    drained, counts["received"], counts["deduplicated"], counts["sent"], counts["failed"],
                    counts["dropped"])

    def counters(self) -> EventCounters:
        return read_counters(self._words)

    # --- receiving ----------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        queue = self._queue
        handled = 0
        while not self._stopping:
            try:
                message, _ = queue.receive(RECEIVE_WAIT)
            except posix_ipc.BusyError:
                self._note_depth()
                continue
            except posix_ipc.SignalError:  # a signal's C handler ran on this thread (EINTR): read on
                continue
            except Exception as error:  # the descriptor is unusable: nobody reads the queue from now on
                if not self._stopping:
                    self._words[W_ANALYTICS_KEY] = 0  # so workers deliver their own again
                    logger.error("event=events_receive_failed queue=%s error=%s msg=%s", self.queue_name,
                                 Quoted(error), Quoted("flagd stopped delivering events; workers deliver their own"))
                return
            self._handle(message)
            handled += 1
            if not handled % DEPTH_EVERY:
                self._note_depth()

    def _handle(self, message: bytes) -> None:
        """Deduplicate and deliver one message; never raises (anyone in the workers' group may send)."""
        try:
            self._relay(message)
        except Exception as error:
            self._reject(error)

    def _relay(self, message: bytes) -> None:
        fields = _header(message)
        kind, canonical, timestamp = fields[1], fields[2], float(fields[3])
        # The worker's canonical form is the dedup key: a repeat costs one decode and one lookup.
        new = self._filters[kind].should_track(canonical, timestamp)
        self._count("received" if new else "deduplicated", fields[7])
        if not new:
            return
        user, variants, evaluated_props = _decode(fields)
        if kind == KIND_EXPOSURE:
            record: Any = Exposure(user, variants, timestamp)
        else:
            record = Assignment(user, variants, timestamp)
            # The sending worker's send_evaluated_props: it sends the user's fields only with it on.
            record.send_evaluated_props = evaluated_props
        record._canonical = canonical
        if not self._pipelines[kind].submit(record):
            self._count("dropped")

    def _reject(self, error: Exception) -> None:
        self._count("rejected")
        if not self._warned_rejected:
            self._warned_rejected = True
            logger.warning("event=events_message_rejected queue=%s error=%s (logged once)", self.queue_name,
                           Quoted(error))

    # --- counters -----------------------------------------------------------------------------

    def _counting_callback(self) -> Callable[[Any], Any]:
        # Closures, not bound methods: the analytics SDK deep-copies each event with its callback.
        count = self._count

        def counted(callback: Any) -> Any:
            def on_result(event: Any, code: int, message: Optional[str]) -> None:
                count("sent" if 200 <= code < 300 else "failed")
                callback(event, code, message)

            return on_result

        return counted

    def _count(self, name: str, worker_fallbacks: int = 0) -> None:
        with self._lock:
            self._counts[name] += 1
            self._words[COUNTER_WORDS[name]] = self._counts[name]
            if name == "deduplicated":  # received counts every message read, new or repeated
                self._counts["received"] += 1
                self._words[COUNTER_WORDS["received"]] = self._counts["received"]
            if worker_fallbacks:
                self._counts["worker_fallbacks"] += worker_fallbacks
                self._words[W_EVENTS_WORKER_FALLBACKS] = self._counts["worker_fallbacks"]

    def _note_depth(self) -> None:
        queue = self._queue
        if queue is None:
            return
        try:
            depth = queue.current_messages
        except posix_ipc.Error:
            return
        with self._lock:
            self._counts["queue_depth"] = depth
            self._words[W_EVENTS_QUEUE_DEPTH] = depth

    def _store(self) -> None:
        with self._lock:
            for name, word in COUNTER_WORDS.items():
                self._words[word] = self._counts[name]


def analytics_config(api_key: str, server_url: str, flush_queue_size: int, flush_interval_ms: int,
                     flush_max_retries: int) -> amplitude.Config:
    """The analytics SDK's config for flagd's deliveries."""
    return amplitude.Config(api_key=api_key, server_url=server_url, flush_queue_size=flush_queue_size,
                            flush_interval_millis=flush_interval_ms, flush_max_retries=flush_max_retries,
                            logger=logging.getLogger("flagd.events.analytics"))


def start_relay(prefix: str, deployment_key: str, words: Any, settings: Dict[str, Any], gid: Optional[int]
                ) -> Optional[EventRelay]:
    """Build and start the relay from flagd's settings; None (logged) when it cannot run."""
    config = analytics_config(settings["api_key"], settings["server_url"], settings["flush_queue_size"],
                              settings["flush_interval_ms"], settings["flush_max_retries"])
    relay = EventRelay(prefix, deployment_key, words, config, settings["cache_capacity"], gid)
    try:
        relay.start()
    except (OSError, ValueError, posix_ipc.Error) as error:
        logger.error("event=events_unavailable queue=%s error=%s msg=%s", relay.queue_name, Quoted(error),
                     Quoted("flagd delivers no events; workers deliver their own"))
        return None
    return relay

