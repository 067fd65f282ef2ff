"""User properties of every type reach Amplitude as the reference sends them, field by field.

The reference (1.13.0) and ours evaluate the same users against the same flags, with assignment
tracking (``send_evaluated_props=True``) and exposure tracking, and send to the same stand-in of
HTTP API v2. Where the reference's events arrive, ours must be the same (the event time aside:
the reference stamps it when the analytics SDK receives the event). Where the reference's batch is
lost (a value ``json.dumps`` cannot encode fails the whole batch in the analytics SDK's thread),
ours arrives with only that value converted or left out, and one warning says so.
"""

import json
import logging

import pytest
from stand_in import Answer

import reference_env

from amplitude_experiment import AssignmentConfig, LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.exposure import ExposureConfig
from amplitude_experiment.local.evaluate_options import EvaluateOptions

# Run in both interpreters: the same users on either side.
CASES_SOURCE = r'''
import datetime, decimal, uuid

def property_cases():
    """(name, user_properties, groups) per user."""
    return [
        ("plain", {"plan": "pro", "n": 1, "ok": True}, {"org": ["o1"]}),
        ("tuple", {"plan": "pro", "t": ("a", "b")}, {"org": ["o1"]}),
        ("list of lists", {"plan": "pro", "ll": [[1, 2], ["x"]]}, {"org": ["o1"]}),
        ("list with null", {"plan": "pro", "l": ["a", None]}, {"org": ["o1"]}),
        ("nested non-string keys", {"plan": "pro", "d": {1: "one", 2: "two"}}, {"org": ["o1"]}),
        ("tuple groups", {"plan": "pro"}, {"org": ("o1", "o2")}),
        ("datetime", {"plan": "pro", "at": datetime.datetime(2026, 11, 30, 9, 30, 0)}, {"org": ["o1"]}),
        ("date", {"plan": "pro", "on": datetime.date(2026, 11, 30)}, {"org": ["o1"]}),
        ("decimal", {"plan": "pro", "price": decimal.Decimal("9.99")}, {"org": ["o1"]}),
        ("set", {"plan": "pro", "tags": {"b", "a"}}, {"org": ["o1"]}),
        ("bytes", {"plan": "pro", "raw": b"\x00\x01"}, {"org": ["o1"]}),
        ("uuid", {"plan": "pro", "id": uuid.UUID("12345678-1234-5678-1234-567812345678")}, {"org": ["o1"]}),
        ("top-level int key", {"plan": "pro", 7: "seven"}, {"org": ["o1"]}),
        ("set in groups", {"plan": "pro"}, {"org": {"o1"}}),
    ]
'''
namespace: dict = {}
exec(CASES_SOURCE, namespace)
CASES = namespace["property_cases"]()

# What ours sends where the reference's batch is lost: only the bad value differs.
CONVERTED = {
    "datetime": {"at": "2026-11-30T09:30:00"},
    "date": {"on": "2026-11-30"},
    "decimal": {"price": "9.99"},
    "set": {"tags": ["a", "b"]},
    "bytes": {},
    "uuid": {"id": "12345678-1234-5678-1234-567812345678"},
    "top-level int key": {"7": "seven"},
}

FLAGS = [
    {"key": "rel", "metadata": {"flagType": "release", "flagVersion": 7},
     "variants": {"on": {"key": "on", "value": "on"}}, "segments": [{"variant": "on", "metadata": {"segmentName": "s"}}]},
    {"key": "dflt", "metadata": {"flagType": "release", "flagVersion": 3},
     "variants": {"off": {"key": "off", "metadata": {"default": True}}}, "segments": [{"variant": "off"}]},
    # Metadata the analytics SDK's constructor check rejects (a null in a list): the reference's
    # exposure event for this flag loses all of its event properties, the flag key included.
    {"key": "tagged", "metadata": {"flagType": "experiment", "flagVersion": 1, "tags": ["x", None]},
     "variants": {"on": {"key": "on", "value": "on"}}, "segments": [{"variant": "on"}]},
]

REFERENCE_SCRIPT = r'''
import json, sys, logging
exec(sys.stdin.read())
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.assignment import AssignmentConfig
from amplitude_experiment.exposure.exposure_config import ExposureConfig
from amplitude_experiment.local.evaluate_options import EvaluateOptions

url = sys.argv[1]
quiet = logging.getLogger("reference-tracking")
quiet.addHandler(logging.NullHandler())
quiet.propagate = False
analytics = dict(server_url=url + "/2/httpapi", flush_queue_size=100, flush_interval_millis=60000, flush_max_retries=1)
config = LocalEvaluationConfig(
    server_url=url, flag_config_polling_interval_millis=3600000, logger=quiet,
    assignment_config=AssignmentConfig(api_key="ref-a", send_evaluated_props=True, **analytics),
    exposure_config=ExposureConfig(api_key="ref-e", **analytics))
client = LocalEvaluationClient("server-key", config)
client.start()
outcome = {}
for name, properties, groups in property_cases():
    user = User(user_id="u " + name, device_id="d", country="DE", platform="web",
                user_properties=properties, groups=groups)
    errors = []
    try:
        client.evaluate_v2(user, options=EvaluateOptions(tracks_exposure=True))
    except Exception as error:  # it formats the user as JSON for a debug line, whatever the level
        errors.append("evaluate_v2 %s: %s" % (type(error).__name__, error))
    for service in (client.assignment_service, client.exposure_service):
        for future in service.amplitude.flush():
            if future is None:  # nothing was buffered
                continue
            try:
                future.result(timeout=20)
            except Exception as error:
                errors.append("%s: %s" % (type(error).__name__, error))
    outcome[name] = errors
sys.stdout.write(json.dumps(outcome))
sys.stdout.flush()
import os
os._exit(0)  # the analytics SDK's exit hook would wait for its idle consumer thread
'''


def _by_user(stand_in, api_key):
    events = {}
    for request in stand_in.seen("/2/httpapi"):
        body = request.json()
        if body["api_key"] != api_key:
            continue
        for event in body["events"]:
            event.pop("time", None)
            events.setdefault(event["user_id"], []).append(event)
    return events


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    from stand_in import StandIn

    if reference_env.reference_python() is None:
        pytest.skip("reference SDK unavailable: %s" % reference_env.reference_unavailable_reason())
    with StandIn() as stand_in:
        stand_in.answer("GET", "/sdk/v2/flags", Answer(200, FLAGS))
        stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}))
        script = tmp_path_factory.mktemp("tracking") / "reference_tracking.py"
        script.write_text(REFERENCE_SCRIPT)
        outcome = json.loads(reference_env.run_reference(str(script), CASES_SOURCE.encode(), timeout=120,
                                                         args=(stand_in.url,)))
        analytics = dict(server_url=stand_in.url + "/2/httpapi", flush_queue_size=100, flush_interval_millis=60000,
                         flush_max_retries=1)
        logger = logging.getLogger("tests.tracking.types")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger.addHandler(handler)
        try:
            client = LocalEvaluationClient("server-key", LocalEvaluationConfig(
                server_url=stand_in.url, flag_source="poll", logger=logger,
                assignment_config=AssignmentConfig(api_key="our-a", send_evaluated_props=True, **analytics),
                exposure_config=ExposureConfig(api_key="our-e", **analytics)))
            client.start()
            for name, properties, groups in CASES:
                user = User(user_id="u " + name, device_id="d", country="DE", platform="web",
                            user_properties=properties, groups=groups)
                client.evaluate_v2(user, options=EvaluateOptions(tracks_exposure=True))
            client.stop()
        finally:
            logger.removeHandler(handler)
        yield {"outcome": outcome, "warnings": [r.getMessage() for r in records if r.levelno == logging.WARNING],
               "ref-a": _by_user(stand_in, "ref-a"), "ref-e": _by_user(stand_in, "ref-e"),
               "our-a": _by_user(stand_in, "our-a"), "our-e": _by_user(stand_in, "our-e")}


REFERENCE_SENDS = [name for name, _, _ in CASES if name not in CONVERTED and name != "set in groups"]


@pytest.mark.parametrize("name", REFERENCE_SENDS)
def test_assignment_event_is_the_references(sent, name):
    assert sent["outcome"][name] == []
    theirs = sent["ref-a"]["u " + name]
    assert len(theirs) == 1
    assert set(theirs[0]["user_properties"]) >= {"$set", "$unset", "plan"}  # the reference did send them
    assert sent["our-a"]["u " + name] == theirs


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_assignment_where_the_reference_loses_the_batch(sent, name):
    assert sent["outcome"][name] and "u " + name not in sent["ref-a"]  # the reference sent nothing
    plain = sent["ref-a"]["u plain"][0]
    ours = sent["our-a"]["u " + name]
    assert len(ours) == 1
    expected_properties = {"plan": "pro", **CONVERTED[name],
                           "$set": plain["user_properties"]["$set"], "$unset": plain["user_properties"]["$unset"]}
    assert ours[0]["user_properties"] == expected_properties
    same_fields = {key: value for key, value in plain.items() if key not in ("user_properties", "user_id", "insert_id")}
    assert {key: value for key, value in ours[0].items() if key not in ("user_properties", "user_id", "insert_id")} == same_fields


def _without_tagged_properties(events):
    """The reference's exposure of the flag with the list-with-null metadata lacks event_properties."""
    return [dict(event, event_properties=None) if "event_properties" not in event else event for event in events]


@pytest.mark.parametrize("name", REFERENCE_SENDS)
def test_exposure_events_are_the_references_except_the_dropped_properties(sent, name):
    theirs = sent["ref-e"]["u " + name]
    ours = sent["our-e"]["u " + name]
    assert len(theirs) == len(ours) == 2  # rel and tagged; dflt is a default variant
    assert ours[0] == theirs[0]
    assert "event_properties" not in theirs[1]  # the reference's flag key vanished
    assert ours[1]["event_properties"] == {"[Experiment] Flag Key": "tagged", "[Experiment] Variant": "on",
                                           "metadata": {"flagType": "experiment", "flagVersion": 1, "tags": ["x", None]}}
    assert {k: v for k, v in ours[1].items() if k != "event_properties"} == theirs[1]


def test_groups_the_reference_cannot_encode_are_sent_as_lists(sent):
    assert sent["outcome"]["set in groups"] and "u set in groups" not in sent["ref-e"]
    assert [event["groups"] for event in sent["our-e"]["u set in groups"]] == [{"org": ["o1"]}] * 2
    assert len(sent["our-a"]["u set in groups"]) == 1


def test_where_the_reference_fails(sent):
    """Most values JSON cannot encode make the reference's evaluate_v2 itself raise (it formats the
    user as JSON for a debug line at any log level); a non-string key among string keys fails the
    analytics SDK's sorted JSON instead, losing the batch."""
    outcome = sent["outcome"]
    for name in ("datetime", "date", "decimal", "set", "bytes", "uuid", "set in groups"):
        assert [error.split(":")[0] for error in outcome[name]] == ["evaluate_v2 AttributeError"], outcome[name]
    assert outcome["top-level int key"] and "TypeError" in outcome["top-level int key"][0]


def test_each_kind_of_conversion_is_logged_once(sent):
    warnings = sent["warnings"]
    for type_name in ("datetime", "date", "Decimal", "set", "bytes", "UUID"):
        assert sum(" a %s," % type_name in message for message in warnings) >= 1, (type_name, warnings)
    assert len(warnings) == len(set(warnings))
    assert not any("9.99" in message or "12345678" in message for message in warnings)  # no values in logs


def test_module_builders_convert_too(caplog):
    import datetime

    from amplitude_experiment.assignment import Assignment, to_event

    user = User(user_id="u", user_properties={"at": datetime.date(2026, 1, 2), "t": ("a",)})
    with caplog.at_level(logging.WARNING, logger="Amplitude"):
        event = to_event(Assignment(user, {}, 0), True)
    assert json.loads(json.dumps(event.get_event_body()))["user_properties"] == {
        "at": "2026-01-02", "t": ["a"], "$set": {}, "$unset": {}}

