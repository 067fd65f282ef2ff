"""The worker's end of the host event channel: tracked results go to flagd, which deduplicates
host-wide and delivers once (docs/tracking.md, "One exposure per user per host").

After its own per-process dedup, a worker hands each new result to flagd when flagd advertises,
in its index, that it delivers for this tracking config's analytics API key (word 32) and
endpoint (word 33). The result travels as one msgpack message on the key's POSIX message queue
(``/<prefix>.<keyhash>.q``), sent without blocking. When the queue is full, the result goes to
the process's pipeline thread with its message, and that thread offers it once more after a
short wait for room (:meth:`HostChannel.resend`). Whenever flagd cannot take it (flagd is absent
or delivers for another key, the queue stays full or is missing, the message is too large or
holds a value msgpack cannot carry) the worker delivers the result itself, exactly as without
flagd; each case is counted (:meth:`HostChannel.status`).

A message (msgpack array)::

    [MESSAGE_FORMAT, kind (KIND_EXPOSURE | KIND_ASSIGNMENT), the result's canonical form (the
     dedup key, tracking.canonical), evaluation time (ms, float),
     user_id, device_id, groups or nil, fallbacks since this process's previous message,
     evaluated properties (a map: user_properties and the user fields of ``send_evaluated_props``) or nil,
     then per flag of the result: flag key, variant key, variant value, variant metadata]

Flat, and packed by a per-thread ``msgpack.Packer``: the send is on the caller's thread. The
canonical form travels with the result so flagd drops a repeat before decoding anything else.
"""

import logging
import os
import select
import threading
import time
import weakref
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple, TypedDict, Union

import msgpack
import posix_ipc

from ..snapshot.host import trusted_owners
from ..snapshot.layout import (
    RETIRED,
    W_ANALYTICS_ENDPOINT,
    W_ANALYTICS_KEY,
    W_PID,
    W_VERSION,
    analytics_endpoint_hash,
    analytics_key_hash,
    queue_name,
)
from ..snapshot.reader import SnapshotReader

__all__ = ["HEADER_FIELDS", "KIND_ASSIGNMENT", "KIND_EXPOSURE", "MESSAGE_FORMAT", "EventChannelStatus", "HostChannel", "Route",
           "route_of"]

MESSAGE_FORMAT = 1
#: Fields before the per-flag quadruples.
HEADER_FIELDS = 9
KIND_EXPOSURE = 0
KIND_ASSIGNMENT = 1
#: Seconds between two looks for flagd's index or queue while they are missing or refused.
RETRY_SECONDS = 1.0
#: Seconds the pipeline thread waits for room in a full queue before delivering a result itself.
RESEND_WAIT = 0.1
#: After a wait that found no room, seconds during which :meth:`HostChannel.resend` does not wait.
RESEND_PAUSE = 1.0
#: Sends one resend tries at most (other workers may take the room it waited for).
RESEND_TRIES = 8
#: Why a result flagd should have delivered was delivered by this process instead.
FALLBACK_REASONS = ("queue_full", "queue_missing", "too_large", "unencodable")

#: One msgpack packer per thread (a packer is not thread-safe; packb builds one per call).
_PACKERS = threading.local()

#: (hash of the analytics API key, hash of the endpoint URL) a tracking config sends with.
Route = Tuple[int, int]


class EventChannelStatus(TypedDict):
    """Where this process's tracked results went (``flag_source_status["events"]``); counts since start.

    - ``queue``: the event queue's name.
    - ``flagd_delivers``: flagd advertises that it delivers for this process's analytics key and
      endpoint (exposure or assignment config); None before anything was tracked.
    - ``sent_to_flagd``: results handed to flagd.
    - ``sent_after_wait``: of those, results that found the queue full and went to flagd from the
      pipeline thread after a short wait (:meth:`HostChannel.resend`).
    - ``delivered_here``: results this process delivered itself, for any reason.
    - ``not_advertised``: of those, results flagd does not deliver for (no flagd, no analytics key,
      another key or endpoint, or the tracking config turned dedup off).
    - ``fallbacks``: results flagd delivers for but this process had to deliver itself, by reason
      (``queue_full``, ``queue_missing``, ``too_large``, ``unencodable``).
    - ``last_problem``: the last reason the queue could not be used, None when there was none.
    """

    queue: str
    flagd_delivers: Optional[bool]
    sent_to_flagd: int
    sent_after_wait: int
    delivered_here: int
    not_advertised: int
    fallbacks: Dict[str, int]
    last_problem: Optional[str]


#: ``amplitude.Config`` fields flagd's analytics client does not have: set, they change the
#: process's events or requests (plan, ingestion_metadata, min_id_length) or must see every result
#: (callback), so its results stay in the process.
PROCESS_ONLY_FIELDS = ("plan", "ingestion_metadata", "min_id_length", "callback")


def route_of(config: Any) -> Optional[Route]:
    """The route of a tracking config (``ExposureConfig`` / ``AssignmentConfig``), or None when its
    results must stay in this process (no api_key, deduplication turned off, or one of
    :data:`PROCESS_ONLY_FIELDS` set)."""
    if config is None or not getattr(config, "api_key", None) or getattr(config, "cache_capacity", 1) <= 0 \
            or any(getattr(config, name, None) is not None for name in PROCESS_ONLY_FIELDS):
        return None
    return analytics_key_hash(config.api_key), analytics_endpoint_hash(str(config.server_url))


def _reset_in_child(reference: "weakref.ref[HostChannel]") -> None:
    channel = reference()
    if channel is not None:
        channel._lock = threading.Lock()
        channel.sent = channel.resent = channel.not_advertised = channel._unreported = 0
        channel.fallbacks = dict.fromkeys(FALLBACK_REASONS, 0)


def _evaluated_props(user: Any, names: Tuple[str, ...]) -> Dict[str, Any]:
    props = {name: getattr(user, name, None) for name in names}
    props["user_properties"] = getattr(user, "user_properties", None)
    return {name: value for name, value in props.items() if value is not None}


class HostChannel:
    """Sends tracked results to flagd over the key's event queue. Thread- and fork-safe, never raises.

    :param prefix: flagd's shared-memory prefix (``LocalEvaluationConfig.shm_prefix``).
    :param deployment_key: names the index and the queue (hashed).
    :param routes: the route of each kind (KIND_*), None for a kind that stays in this process.
    :param owner: flagd's user, trusted as the index's and the queue's owner besides this uid and root.
    :param evaluated_props: the user fields an assignment sends with ``send_evaluated_props``
        (empty: the assignment config does not send them).
    """

    def __init__(self, prefix: str, deployment_key: str, routes: Dict[int, Optional[Route]], logger: logging.Logger,
                 owner: Any = None, evaluated_props: Tuple[str, ...] = (),
                 monotonic: Callable[[], float] = time.monotonic):
        self.queue_name = queue_name(prefix, deployment_key)
        self._reader = SnapshotReader(prefix, deployment_key, owner=owner)
        self._owner = owner
        self._trusted: Optional[FrozenSet[int]] = None
        self._routes = routes
        self._logger = logger
        self._evaluated_props = evaluated_props
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._words: Any = None
        self._queue: Any = None
        self._queue_pid = 0  # the flagd whose queue is open: a new flagd may have made a new one
        self._max_size = 0
        self._next_attach = 0.0
        self._next_open = 0.0
        self._warned = False
        self.sent = 0
        self.resent = 0  # of sent: found the queue full, sent by the pipeline thread after a wait
        self.resend_wait = RESEND_WAIT
        self._resend_stuck_until = 0.0
        self.not_advertised = 0
        self.fallbacks = dict.fromkeys(FALLBACK_REASONS, 0)
        self._unreported = 0  # fallbacks not yet told to flagd (carried by the next message)
        self.last_problem: Optional[str] = None
        self._advertised: Optional[bool] = None
        # A fork child counts its own results and must not inherit a lock a parent thread held.
        # The index mapping (MAP_SHARED) and the queue descriptor stay usable in the child.
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_in_child(reference))

    def send(self, kind: int, user: Any, variants: Dict[str, Any], timestamp: float, canonical: str
             ) -> Union[bool, bytes]:
        """Hand one new result (whose canonical form is ``canonical``) to flagd without blocking.

        :returns: True when flagd has it; False when this process must deliver it itself (counted);
            the packed message when the queue is full: the process's pipeline thread offers it
            once more with :meth:`resend` before delivering the result itself.
        """
        route = self._routes.get(kind)
        words = self._words
        if words is None or words[W_VERSION] == RETIRED:
            words = self._attach()
        if route is None or words is None or words[W_ANALYTICS_KEY] != route[0] \
                or words[W_ANALYTICS_ENDPOINT] != route[1]:
            self._advertised = False
            self.not_advertised += 1
            return False
        self._advertised = True
        queue = self._queue
        if queue is None or self._queue_pid != words[W_PID]:
            queue = self._open_queue(words)
            if queue is None:
                return self._fall_back("queue_missing")
        props = None
        if kind == KIND_ASSIGNMENT and self._evaluated_props:
            props = _evaluated_props(user, self._evaluated_props)
        fields = [MESSAGE_FORMAT, kind, canonical, timestamp, user.user_id, user.device_id,
                  getattr(user, "groups", None) or None, self._unreported, props]
        for key, variant in variants.items():
            fields += (key, variant.key, variant.value, variant.metadata)
        try:
            packer = _PACKERS.packer
        except AttributeError:
            packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
        try:
            message = packer.pack(fields)
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            packer.reset()
            return self._fall_back("unencodable")
        if len(message) > self._max_size:
            return self._fall_back("too_large")
        try:
            queue.send(message)
        except posix_ipc.BusyError:
            if not self._unreported:
                return message
            # Offered again later: the fallbacks go with the next message sent now, not twice.
            fields[7] = 0
            return packer.pack(fields)
        except (posix_ipc.Error, OSError) as error:
            self._queue = None
            return self._fall_back("queue_missing", str(error))
        self._unreported = 0
        self.sent += 1
        return True

    def resend(self, kind: int, message: bytes) -> bool:
        """On the pipeline thread, for a message :meth:`send` found the queue full for: wait up to
        ``resend_wait`` seconds (:data:`RESEND_WAIT`) for room (no wait for a while after a wait that found none) and
        send it; False (counted as ``queue_full``) when this process must deliver the result itself.

        A burst of all workers at once overflows the queue before flagd gets the CPU to read it;
        waiting here, off the caller's thread, lets flagd catch up instead of each worker
        delivering a copy. Nothing waits longer than today's fallback would: the result is in
        the process's pipeline meanwhile, delivered at exit like any other.
        """
        route = self._routes.get(kind)
        words = self._words
        queue = self._queue
        if route is None or words is None or queue is None or words[W_ANALYTICS_KEY] != route[0] \
                or words[W_ANALYTICS_ENDPOINT] != route[1] or words[W_PID] != self._queue_pid:
            return self._fall_back("queue_full")  # flagd stopped or changed since: deliver it here
        now = self._monotonic()
        deadline = now + (self.resend_wait if now >= self._resend_stuck_until else 0.0)
        for _ in range(RESEND_TRIES):
            try:
                queue.send(message)
            except posix_ipc.BusyError:
                remaining = deadline - self._monotonic()
                if remaining <= 0:
                    break
                try:
                    select.select([], [queue.mqd], [], remaining)  # writable: the queue has room
                except (OSError, ValueError):
                    break
                continue
            except (posix_ipc.Error, OSError, ValueError) as error:
                return self._fall_back("queue_missing", str(error))
            self.resent += 1
            self.sent += 1
            return True
        self._resend_stuck_until = self._monotonic() + RESEND_PAUSE
        return self._fall_back("queue_full")

    def __del__(self) -> None:
        # posix_ipc does not close a queue's descriptor when the object goes: a dropped client
        # would keep the queue allocated (flagd's RLIMIT_MSGQUEUE) after flagd unlinked it.
        queue = getattr(self, "_queue", None)
        if queue is not None:
            try:
                queue.close()
            except Exception:
                pass

    def status(self) -> EventChannelStatus:
        fallbacks = dict(self.fallbacks)
        return EventChannelStatus(
            queue=self.queue_name, flagd_delivers=self._advertised, sent_to_flagd=self.sent,
            sent_after_wait=self.resent,
            delivered_here=self.not_advertised + sum(fallbacks.values()), not_advertised=self.not_advertised,
            fallbacks=fallbacks, last_problem=self.last_problem)

    # --- the slow paths -----------------------------------------------------------------------

    def _fall_back(self, reason: str, detail: Optional[str] = None) -> bool:
        self.fallbacks[reason] += 1
        self._unreported += 1
        problem = reason if detail is None else "%s: %s" % (reason, detail)
        self.last_problem = problem
        if not self._warned:
            self._warned = True
            self._logger.warning("[Experiment] flagd delivers this process's events but %s could not take a "
                                 "result (%s); this process delivers such results itself (counted in "
                                 "flag_source_status()['events'])", self.queue_name, problem)
        return False

    def _attach(self) -> Any:
        now = self._monotonic()
        if now < self._next_attach:
            return None
        with self._lock:
            self._next_attach = now + RETRY_SECONDS
            try:
                if self._reader.attach():
                    self._words = self._reader.words
                    return self._words
            except Exception as error:  # a refused index: the flag source reports it too
                self.last_problem = "index refused: %s" % error
            self._words = None
            return None

    def _open_queue(self, words: Any) -> Any:
        """Open the queue write-only if a trusted user owns it and others cannot touch it."""
        now = self._monotonic()
        if self._queue is not None and self._queue_pid == words[W_PID]:
            return self._queue
        if now < self._next_open and self._queue is None:
            return None
        with self._lock:
            self._next_open = now + RETRY_SECONDS
            pid = words[W_PID]
            try:
                queue = posix_ipc.MessageQueue(self.queue_name, flags=0, read=False, write=True)
            except (posix_ipc.Error, OSError) as error:
                self.last_problem = "queue_missing: %s" % error
                self._queue = None
                return None
            try:
                stat = os.fstat(queue.mqd)
                if self._trusted is None:
                    self._trusted = trusted_owners(self._owner)
                if stat.st_uid not in self._trusted or stat.st_mode & 0o007:
                    raise PermissionError("%s is owned by uid %d with mode %o: not flagd's queue, refusing to send"
                                          % (self.queue_name, stat.st_uid, stat.st_mode & 0o777))
                queue.block = False
                self._max_size = queue.max_message_size
            except Exception as error:
                queue.close()
                self.last_problem = "queue_missing: %s" % error
                self._queue = None
                return None
            old, self._queue, self._queue_pid = self._queue, queue, pid
            if old is not None:
                try:
                    old.close()
                except posix_ipc.Error:
                    pass
            return queue
