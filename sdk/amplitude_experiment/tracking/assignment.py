"""Assignment events (deprecated by Amplitude): one event per evaluation result (docs/compatibility.md, 'Tracking events')."""

from typing import Any, Dict, Optional

from amplitude import Amplitude, BaseEvent

from .canonical import ResultFilter, TrackedResult
from .dedup import DAY_MILLIS
from .encoding import Report, default_reporter, encodable, encodable_properties
from .exposure import FLAG_TYPE_MUTUAL_EXCLUSION_GROUP, EventCallback
from .hash_code import hash_code

ASSIGNMENT_EVENT_TYPE = "[Experiment] Assignment"

#: User fields copied onto the event with ``send_evaluated_props``. Like the reference we set all
#: of them, and like the reference only those the analytics event knows (not ``version``, ``os``
#: or ``ip_address``; ``library`` is overwritten by the analytics SDK) reach Amplitude.
EVALUATED_PROPS = (
    "country",
    "city",
    "region",
    "dma",
    "language",
    "platform",
    "version",
    "os",
    "device_manufacturer",
    "device_brand",
    "device_model",
    "carrier",
    "library",
    "ip_address",
)


class Assignment(TrackedResult):
    """An evaluation result as the deprecated assignment tracking sees it (one event per result)."""


def to_event(
    assignment: Assignment,
    send_evaluated_props: bool,
    callback: Optional[EventCallback] = None,
    report: Optional[Report] = None,
) -> BaseEvent:
    """The ``[Experiment] Assignment`` event of one result, with the reference's fields exactly.

    Default variants are listed in the event properties and ``$unset`` from the user; every other
    variant is ``$set``. With ``send_evaluated_props`` the user's own properties are sent too; they
    are copied, never written back into the caller's ``User`` (quirk Q10 fixed), and ``None`` counts
    as no properties. Values are sent as the reference sends them, whatever their type, except one
    that JSON cannot encode: that value alone is converted or left out and ``report`` is told
    (see :mod:`.encoding`; default: the ``Amplitude`` logger, once per kind).
    """
    report = report or default_reporter()
    user = assignment.user
    event_properties: Dict[str, Any] = {}
    set_properties: Dict[str, Any] = {}
    unset_properties: Dict[str, Any] = {}
    for flag_key in sorted(assignment.results):
        variant = assignment.results[flag_key]
        if variant.key is None:
            continue
        metadata = variant.metadata or {}
        event_properties[flag_key + ".variant"] = variant.key
        version = metadata.get("flagVersion")
        segment_name = metadata.get("segmentName")
        if version is not None and segment_name is not None:
            event_properties[flag_key + ".details"] = "v%s rule:%s" % (version, segment_name)
        if metadata.get("flagType") == FLAG_TYPE_MUTUAL_EXCLUSION_GROUP:
            continue
        if metadata.get("default"):
            unset_properties["[Experiment] " + flag_key] = "-"
        else:
            set_properties["[Experiment] " + flag_key] = variant.key
    user_properties: Dict[str, Any] = {}
    if send_evaluated_props:
        user_properties.update(encodable_properties(getattr(user, "user_properties", None), "user_properties", report))
    user_properties["$set"] = set_properties
    user_properties["$unset"] = unset_properties
    event = BaseEvent(
        event_type=ASSIGNMENT_EVENT_TYPE,
        user_id=user.user_id,
        device_id=user.device_id,
        time=int(assignment.timestamp),
        insert_id="%s %s %d %d"
        % (user.user_id, user.device_id, hash_code(assignment.canonicalize()), int(assignment.timestamp / DAY_MILLIS)),
        callback=callback,
    )
    # Plain attributes, as the reference sets the user's properties: passed to the constructor,
    # one value of a type the analytics SDK does not expect (a tuple, a list of lists, a
    # non-string key) would make it leave out the whole dict, $set and $unset included.
    event.event_properties = encodable_properties(event_properties, "event_properties", report)
    event.user_properties = user_properties
    if send_evaluated_props:
        for name in EVALUATED_PROPS:
            setattr(event, name, encodable(getattr(user, name, None), name, report))
    return event


class AssignmentFilter(ResultFilter):
    """The reference's filter of assignments (deprecated with assignment tracking)."""


class AssignmentService:
    """Filters assignments and tracks their events on an ``amplitude.Amplitude`` client, synchronously.

    Kept for code written against the reference's module layout; the local client itself hands
    events to a per-process pipeline instead (:mod:`amplitude_experiment.tracking`).
    """

    def __init__(self, amplitude: Amplitude, assignment_filter: AssignmentFilter, send_evaluated_props: bool = False):
        self.amplitude = amplitude
        self.assignmentFilter = assignment_filter  # the reference's attribute name
        self.send_evaluated_props = send_evaluated_props

    def track(self, assignment: Assignment) -> None:
        """Send the assignment's event unless this result was already sent within the TTL."""
        if self.assignmentFilter.should_track(assignment):
            self.amplitude.track(to_event(assignment, self.send_evaluated_props))
