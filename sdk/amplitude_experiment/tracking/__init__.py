"""Assignment and exposure events for local evaluation (docs/compatibility.md, 'Tracking events').

The local client calls :meth:`EvaluationTracker.track` after every ``evaluate_v2``. The tracker
deduplicates on the caller's thread (a string join, a digest and a locked dict lookup) and hands
only new results to a per-process :class:`~amplitude_experiment.tracking._delivery.EventPipeline`,
which builds the events and gives them to Amplitude's analytics SDK (``amplitude-analytics``).
When flagd delivers for the config's analytics key, new results go to flagd instead
(:mod:`.host_channel`), which deduplicates them host-wide.
"""

import copy
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from amplitude import constants as _analytics_constants

from ..server_zone import ServerZone
from ._delivery import MAX_PENDING, EventPipeline, EventSink, ProcessAnalytics, SinkFactory
from .assignment import EVALUATED_PROPS, Assignment, AssignmentFilter, AssignmentService, to_event
from .canonical import canonicalize
from .dedup import DAY_MILLIS, DedupFilter
from .encoding import Reporter
from .exposure import Exposure, ExposureFilter, ExposureService, to_exposure_events
from .hash_code import hash_code
from .host_channel import KIND_ASSIGNMENT, KIND_EXPOSURE, EventChannelStatus, HostChannel, route_of

if TYPE_CHECKING:  # pragma: no cover
    from ..local.config import LocalEvaluationConfig
    from ..variant import Variant

__all__ = [
    "DAY_MILLIS",
    "Assignment",
    "AssignmentFilter",
    "AssignmentService",
    "DedupFilter",
    "EvaluationTracker",
    "EventSink",
    "Exposure",
    "ExposureFilter",
    "ExposureService",
    "ProcessAnalytics",
    "build_tracker",
    "canonicalize",
    "hash_code",
    "to_event",
    "to_exposure_events",
]


class EvaluationTracker:
    """Turns evaluation results into assignment and exposure events. Never raises into evaluation.

    Thread-safe and fork-safe: each process sends its own events through its own analytics
    client, started on the first result it tracks.

    :param logger: the client's logger.
    :param assignment_config: an ``AssignmentConfig``, or None for no assignment events.
    :param exposure_config: an ``ExposureConfig``, or None for no exposure events.
    :param clock: seconds since the epoch; drives the dedup TTL, the event time and the
        insert-id day. Tests pass a fake one.
    :param sink_factory: builds each process's analytics client from a config.
    :param max_pending: results waiting for the pipeline thread before new ones are dropped.
    """

    def __init__(
        self,
        logger: logging.Logger,
        assignment_config: Any = None,
        exposure_config: Any = None,
        clock: Callable[[], float] = time.time,
        sink_factory: Optional[SinkFactory] = None,
        max_pending: int = MAX_PENDING,
    ):
        self._logger = logger
        self._clock = clock
        self._warned_no_ids = False
        self._warned_error = False
        self._assignment: Optional[EventPipeline] = None
        self._assignment_filter: Optional[DedupFilter] = None
        self._exposure: Optional[EventPipeline] = None
        self._exposure_filter: Optional[DedupFilter] = None
        self._assignment_config = assignment_config
        self._exposure_config = exposure_config
        #: flagd's event queue, when :meth:`route_to_host` was called (shared mode).
        self._host: Optional[HostChannel] = None
        report = Reporter(logger)
        # The pipelines' builders reach the channel through a weak reference: a pipeline thread
        # outlives a dropped tracker by its idle time, and must not keep the queue open meanwhile.
        tracker = weakref.ref(self)
        if assignment_config is not None:
            send_props = bool(getattr(assignment_config, "send_evaluated_props", False))
            self._assignment_filter = DedupFilter(assignment_config.cache_capacity)
            self._assignment = EventPipeline(
                "assignment",
                assignment_config,
                lambda record, callback: [] if _resent(tracker, KIND_ASSIGNMENT, record)
                else [to_event(record, send_props, callback, report)],
                logger,
                sink_factory,
                max_pending,
            )
        if exposure_config is not None:
            self._exposure_filter = DedupFilter(exposure_config.cache_capacity)
            ttl = self._exposure_filter.ttl_millis
            self._exposure = EventPipeline(
                "exposure",
                exposure_config,
                lambda record, callback: [] if _resent(tracker, KIND_EXPOSURE, record)
                else to_exposure_events(record, ttl, callback, report),
                logger,
                sink_factory,
                max_pending,
            )

    def track(self, user: Any, variants: Dict[str, "Variant"], tracks_exposure: bool) -> None:
        """Queue the events of one evaluation unless the same result was tracked within a day.

        Exposure events need ``tracks_exposure``; assignment events are tracked on every call.
        Cheap for a repeated result, and never raises.
        """
        try:
            exposure = self._exposure if tracks_exposure else None
            assignment = self._assignment
            if not variants or (exposure is None and assignment is None):
                return
            user_id = user.user_id
            device_id = user.device_id
            if not user_id and not device_id:
                if not self._warned_no_ids:
                    self._warned_no_ids = True
                    self._logger.warning("[Experiment] evaluations of users without user_id and device_id are not tracked")
                return
            canonical = canonicalize(user_id, device_id, variants)
            now = self._clock() * 1000
            snapshot = None
            host = self._host
            if exposure is not None and self._exposure_filter.should_track(canonical, now):  # type: ignore[union-attr]
                sent = False if host is None else host.send(KIND_EXPOSURE, user, variants, now, canonical)
                if sent is not True:
                    snapshot = _snapshot(user)
                    exposure.submit(_record(Exposure(snapshot, dict(variants), now), canonical, sent))
            if assignment is not None and self._assignment_filter.should_track(canonical, now):  # type: ignore[union-attr]
                sent = False if host is None else host.send(KIND_ASSIGNMENT, user, variants, now, canonical)
                if sent is not True:
                    snapshot = snapshot or _snapshot(user)
                    assignment.submit(_record(Assignment(snapshot, dict(variants), now), canonical, sent))
        except Exception:
            if not self._warned_error:
                self._warned_error = True
                self._logger.exception("[Experiment] tracking an evaluation failed; evaluation results are unaffected")

    def route_to_host(self, prefix: str, deployment_key: str, owner: Any = None) -> None:
        """Hand new results to flagd whenever it advertises that it delivers for this tracker's
        analytics key and endpoint (see :mod:`.host_channel`); deliver them here otherwise."""
        send_props = bool(getattr(self._assignment_config, "send_evaluated_props", False))
        routes = {KIND_EXPOSURE: route_of(self._exposure_config), KIND_ASSIGNMENT: route_of(self._assignment_config)}
        self._host = HostChannel(prefix, deployment_key, routes, self._logger, owner,
                                 EVALUATED_PROPS if send_props else ())

    def host_status(self) -> Optional[EventChannelStatus]:
        """Where this process's new results went (:class:`.host_channel.EventChannelStatus`), None
        when results are never routed to flagd."""
        return self._host.status() if self._host is not None else None

    def flush(self, timeout: Optional[float]) -> None:
        """Send every queued event, waiting at most ``timeout`` seconds in all (None: no limit).

        Logs a warning for whatever is still in flight when the time is up; never raises. The
        analytics clients stay usable, as in the reference.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for pipeline in (self._exposure, self._assignment):
            if pipeline is None:
                continue
            try:
                pipeline.flush(deadline)
            except Exception:
                self._logger.warning("[Experiment] flushing %s events failed", pipeline.kind, exc_info=True)


def build_tracker(
    config: "LocalEvaluationConfig",
    logger: logging.Logger,
    clock: Callable[[], float] = time.time,
    sink_factory: Optional[SinkFactory] = None,
) -> Optional[EvaluationTracker]:
    """A tracker for ``config.assignment_config`` / ``config.exposure_config``, or None when neither is set.

    Starts nothing: each process starts its analytics client when it first tracks a result.
    """
    assignment_config = getattr(config, "assignment_config", None)
    exposure_config = getattr(config, "exposure_config", None)
    if assignment_config is None and exposure_config is None:
        return None
    for kind, analytics_config in (("assignment_config", assignment_config), ("exposure_config", exposure_config)):
        if analytics_config is not None:
            _check(kind, analytics_config, getattr(config, "server_zone", None), logger)
    return EvaluationTracker(logger, assignment_config, exposure_config, clock, sink_factory)


def _check(kind: str, analytics_config: Any, experiment_zone: Any, logger: logging.Logger) -> None:
    if not analytics_config.api_key:
        logger.error("[Experiment] %s has no api_key: Amplitude will reject its events", kind)
    us_urls = _analytics_constants.SERVER_URL[_analytics_constants.DEFAULT_ZONE].values()
    if experiment_zone == ServerZone.EU and analytics_config.server_url in us_urls:
        # Not changed for the user (the reference does not either), but worth saying once.
        logger.warning("[Experiment] flags come from the EU zone but %s sends events to %s", kind, analytics_config.server_url)


def _snapshot(user: Any) -> Any:
    """A copy the pipeline thread can read while the caller goes on changing its ``User``."""
    snapshot = copy.copy(user)
    for name in ("user_properties", "groups"):
        value = getattr(snapshot, name, None)
        if isinstance(value, dict):
            setattr(snapshot, name, dict(value))
    return snapshot


def _resent(tracker: "weakref.ref[EvaluationTracker]", kind: int, record: Any) -> bool:
    """On the pipeline thread: whether a result that found flagd's queue full went to flagd after
    all (:meth:`.HostChannel.resend`), so this process builds no events for it."""
    message = getattr(record, "_message", None)
    if message is None:
        return False
    host = getattr(tracker(), "_host", None)
    return host is not None and host.resend(kind, message)


def _record(record: Any, canonical: str, sent: Any) -> Any:
    """``record`` with its canonical form and, when flagd's queue was full, the message to offer again."""
    record._canonical = canonical
    record._message = sent if isinstance(sent, bytes) else None
    return record
