"""Event building, checked against values produced by the reference SDK 1.13.0."""

import copy

import pytest

from amplitude_experiment import User, Variant
from amplitude_experiment.assignment import Assignment, AssignmentFilter, AssignmentService, to_event
from amplitude_experiment.exposure import DAY_MILLIS, Exposure, ExposureFilter, ExposureService, to_exposure_events
from amplitude_experiment.tracking import canonicalize

NOW = 1795700599418.0  # day 20783


def results():
    return {
        "rel": Variant("on", key="on", metadata={"flagVersion": 7}),
        "exp": Variant("on", key="on", metadata={"flagType": "experiment"}),
        "mx": Variant("slot", key="slot", metadata={"flagType": "mutual-exclusion-group"}),
        "dflt": Variant(None, key="off", metadata={"default": True}),
        "nokey": Variant("blue", metadata={}),
    }


# (user, canonical, assignment insert id, exposure insert ids in result order), from the reference.
VECTORS = [
    (
        User(user_id="uid", device_id="did"),
        "uid did dflt off exp on mx slot rel on ",
        "uid did 1700070309 20783",
        ["uid did 2662763294 20783", "uid did 3110570146 20783", "uid did 1514071600 20783", "uid did 1940125315 20783"],
    ),
    (
        User(device_id=" d1 "),
        "None d1 dflt off exp on mx slot rel on ",
        "None  d1  2458599691 20783",
        ["None  d1  3421292676 20783", "None  d1  3869099528 20783", "None  d1  2272600982 20783", "None  d1  2698654697 20783"],
    ),
    (
        User(user_id="  ", device_id="d"),
        " d dflt off exp on mx slot rel on ",
        "   d 3436332858 20783",
        ["   d 3398842401 20783", "   d 534108189 20783", "   d 2214705615 20783", "   d 2664595868 20783"],
    ),
]


@pytest.mark.parametrize("user, canonical, assignment_id, exposure_ids", VECTORS)
def test_canonical_and_insert_ids_match_reference(user, canonical, assignment_id, exposure_ids):
    assert canonicalize(user.user_id, user.device_id, results()) == canonical
    assert to_event(Assignment(user, results(), NOW), False).insert_id == assignment_id
    events = to_exposure_events(Exposure(user, results(), NOW))
    assert [event.insert_id for event in events] == exposure_ids


def test_assignment_event_fields():
    event = to_event(Assignment(User(user_id="uid", device_id="did"), results(), NOW), False)
    assert event.get_event_body() == {
        "event_type": "[Experiment] Assignment",
        "user_id": "uid",
        "device_id": "did",
        "time": 1795700599418,
        "insert_id": "uid did 1700070309 20783",
        "event_properties": {
            "dflt.variant": "off",
            "exp.variant": "on",
            "mx.variant": "slot",
            "rel.variant": "on",
        },
        "user_properties": {
            "$set": {"[Experiment] exp": "on", "[Experiment] rel": "on"},
            "$unset": {"[Experiment] dflt": "-"},
        },
    }


def test_assignment_details_need_version_and_segment():
    variants = {"f": Variant("on", key="on", metadata={"flagVersion": 3, "segmentName": "All Other Users"})}
    event = to_event(Assignment(User(user_id="u"), variants, NOW), False)
    assert event.event_properties == {"f.variant": "on", "f.details": "v3 rule:All Other Users"}


def test_send_evaluated_props_copies_user_properties_q10():
    props = {"plan": "pro"}
    user = User(user_id="u", country="DE", version="1.0", user_properties=props)
    event = to_event(Assignment(user, results(), NOW), True)
    assert props == {"plan": "pro"}  # the reference writes $set/$unset into the caller's dict
    body = event.get_event_body()
    assert body["user_properties"]["plan"] == "pro"
    assert body["user_properties"]["$set"] == {"[Experiment] exp": "on", "[Experiment] rel": "on"}
    assert body["country"] == "DE"
    assert "version" not in body  # not an analytics event field: the reference does not send it either


def test_send_evaluated_props_with_no_user_properties_q10():
    # The reference raises TypeError out of evaluate_v2 here.
    event = to_event(Assignment(User(user_id="u"), results(), NOW), True)
    assert set(event.user_properties) == {"$set", "$unset"}


def test_exposure_events_skip_default_and_untracked_flags():
    variants = results()
    variants["quiet"] = Variant("on", key="on", metadata={"trackExposure": False})
    variants["zero"] = Variant("on", key="on", metadata={"trackExposure": 0})  # only False skips
    variants["yes"] = Variant("on", key="on", metadata={"default": "yes"})  # truthy default skips
    keys = [event.event_properties["[Experiment] Flag Key"] for event in to_exposure_events(Exposure(User(user_id="u"), variants, NOW))]
    assert keys == ["rel", "exp", "mx", "nokey", "zero"]


def test_exposure_event_fields():
    user = User(user_id="uid", device_id="did", groups={"org": ["o1"]})
    variants = {
        "exp": Variant("on", key="on", metadata={"flagType": "experiment", "experimentKey": "exp-9"}),
        "mx": Variant("slot", key="slot", metadata={"flagType": "mutual-exclusion-group"}),
        "nokey": Variant("blue", metadata={}),
    }
    bodies = [event.get_event_body() for event in to_exposure_events(Exposure(user, variants, NOW))]
    common = {"event_type": "[Experiment] Exposure", "user_id": "uid", "device_id": "did", "time": 1795700599418, "groups": {"org": ["o1"]}}
    exp, mx, nokey = bodies
    assert exp == dict(
        common,
        insert_id=exp["insert_id"],
        event_properties={
            "[Experiment] Flag Key": "exp",
            "[Experiment] Variant": "on",
            "[Experiment] Experiment Key": "exp-9",
            "metadata": {"flagType": "experiment", "experimentKey": "exp-9"},
        },
        user_properties={"$set": {"[Experiment] exp": "on"}, "$unset": {}},
    )
    assert mx["user_properties"] == {"$set": {}, "$unset": {}}
    assert nokey["event_properties"] == {"[Experiment] Flag Key": "nokey", "[Experiment] Variant": "blue"}
    assert nokey["user_properties"]["$set"] == {"[Experiment] nokey": "blue"}


def test_compat_services_track_once_per_result():
    class Recorder:
        def __init__(self):
            self.events = []

        def track(self, event):
            self.events.append(event)

    recorder = Recorder()
    assignments = AssignmentService(recorder, AssignmentFilter(10))
    exposures = ExposureService(recorder, ExposureFilter(10))
    user = User(user_id="u")
    for _ in range(3):
        assignments.track(Assignment(user, results(), NOW))
        exposures.track(Exposure(user, results(), NOW))
    assert [event.event_type for event in recorder.events] == ["[Experiment] Assignment"] + ["[Experiment] Exposure"] * 4
    assert not AssignmentFilter(10).should_track(Assignment(user, {}, NOW))
    assert DAY_MILLIS == 86400000


def test_events_survive_the_analytics_deep_copy_with_a_callback():
    calls = []
    event = to_event(Assignment(User(user_id="u"), results(), NOW), False, lambda *args: calls.append(args))
    copy.deepcopy(event).callback(200, "ok")
    assert calls and calls[0][1:] == (200, "ok")
