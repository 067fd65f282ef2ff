"""Exposure events: one per flag the user was actually exposed to (docs/compatibility.md, 'Tracking events')."""

from typing import Any, Callable, Dict, List, Optional

from amplitude import Amplitude, BaseEvent

from .canonical import ResultFilter, TrackedResult
from .dedup import DAY_MILLIS
from .encoding import Report, default_reporter, encodable_properties
from .hash_code import hash_code, hash_code_concat

EXPOSURE_EVENT_TYPE = "[Experiment] Exposure"
FLAG_TYPE_MUTUAL_EXCLUSION_GROUP = "mutual-exclusion-group"

#: ``callback(event, status_code, message)`` run by the analytics SDK once an event is sent or dropped.
EventCallback = Callable[[Any, int, Optional[str]], None]


class Exposure(TrackedResult):
    """An evaluation result as exposure tracking sees it (one event per flag)."""


def to_exposure_events(
    exposure: Exposure,
    ttl_millis: int = DAY_MILLIS,
    callback: Optional[EventCallback] = None,
    report: Optional[Report] = None,
) -> List[BaseEvent]:
    """One ``[Experiment] Exposure`` event per flag, in result order, the reference's fields exactly.

    Flags whose metadata says ``trackExposure: false`` or ``default`` are skipped: the user saw
    no experience worth attributing. The insert id hashes the flag key with the whole canonical
    result, so Amplitude drops a repeat of the same exposure on the same day. Property dicts are
    assigned after construction: the reference passes them to the constructor, which leaves out
    the whole dict (the flag key with it) when flag metadata or a variant value holds a null in a
    list or a list of lists. A value JSON cannot encode is converted or left out and ``report``
    is told (see :mod:`.encoding`).
    """
    report = report or default_reporter()
    user = exposure.user
    user_id = user.user_id
    device_id = user.device_id
    groups = getattr(user, "groups", None)
    if groups:
        groups = encodable_properties(groups, "groups", report)
    canonical = exposure.canonicalize()
    canonical_hash = hash_code(canonical)
    day = int(exposure.timestamp / ttl_millis)
    event_time = int(exposure.timestamp)
    events = []
    for flag_key, variant in exposure.results.items():
        metadata = variant.metadata
        if metadata is not None and (metadata.get("trackExposure") is False or metadata.get("default")):
            continue
        label = variant.key or variant.value or None
        set_properties: Dict[str, Any] = {}
        flag_type = metadata.get("flagType") if metadata is not None else None
        if flag_type != FLAG_TYPE_MUTUAL_EXCLUSION_GROUP and label:
            set_properties["[Experiment] " + flag_key] = label
        event_properties: Dict[str, Any] = {"[Experiment] Flag Key": flag_key}
        if label:
            event_properties["[Experiment] Variant"] = label
        experiment_key = metadata.get("experimentKey") if metadata is not None else None
        if experiment_key:
            event_properties["[Experiment] Experiment Key"] = experiment_key
        if metadata:
            event_properties["metadata"] = dict(metadata)
        flag_hash = hash_code_concat(hash_code(flag_key + " "), canonical_hash, len(canonical))
        event = BaseEvent(
            event_type=EXPOSURE_EVENT_TYPE,
            user_id=user_id,
            device_id=device_id,
            time=event_time,
            insert_id="%s %s %d %d" % (user_id, device_id, flag_hash, day),
            callback=callback,
        )
        event.event_properties = encodable_properties(event_properties, "event_properties", report)
        event.user_properties = encodable_properties({"$set": set_properties, "$unset": {}}, "user_properties", report)
        if groups:
            # Assigned directly, as the reference does: groups of lists are not "valid" event values.
            event.groups = groups
        events.append(event)
    return events


class ExposureFilter(ResultFilter):
    """The reference's filter of exposures."""


class ExposureService:
    """Filters exposures and tracks their events on an ``amplitude.Amplitude`` client, synchronously.

    Kept for code written against the reference's module layout; the local client itself hands
    events to a per-process pipeline instead (:mod:`amplitude_experiment.tracking`).
    """

    def __init__(self, amplitude: Amplitude, exposure_filter: ExposureFilter):
        self.amplitude = amplitude
        self.exposure_filter = exposure_filter

    def track(self, exposure: Exposure) -> None:
        """Send one event per exposed flag unless this result was already sent within the TTL."""
        if self.exposure_filter.should_track(exposure):
            for event in to_exposure_events(exposure, self.exposure_filter.ttl_millis):
                self.amplitude.track(event)
