"""Events from a real LocalEvaluationClient, delivered by amplitude-analytics to a stand-in of HTTP API v2."""

import logging
import socket
import threading
import time

import amplitude
import pytest
from stand_in import Answer

from amplitude_experiment import AssignmentConfig, LocalEvaluationClient, LocalEvaluationConfig, ServerZone, User, Variant
from amplitude_experiment.exposure import ExposureConfig
from amplitude_experiment.local import client as client_module
from amplitude_experiment.local.evaluate_options import EvaluateOptions
from amplitude_experiment.tracking import EvaluationTracker, build_tracker

LOGGER_NAME = "tests.tracking"
EXPOSE = EvaluateOptions(tracks_exposure=True)
T0 = 1795700599.418  # seconds; day 20783 for insert ids
DAY = 86400.0

FLAGS = [
    {
        "key": "exp",
        "metadata": {"flagType": "experiment", "flagVersion": 2, "experimentKey": "exp-9", "evaluationMode": "local"},
        "variants": {"on": {"key": "on", "value": "on"}, "off": {"key": "off", "metadata": {"default": True}}},
        "segments": [
            {
                "metadata": {"segmentName": "rule"},
                "conditions": [[{"selector": ["context", "user", "user_id"], "op": "is", "values": ["uid"]}]],
                "variant": "on",
            },
            {"metadata": {"segmentName": "All Other Users"}, "variant": "off"},
        ],
    },
    {"key": "rel", "metadata": {"flagType": "release", "flagVersion": 7}, "variants": {"on": {"key": "on", "value": "on"}}, "segments": [{"variant": "on"}]},
    {
        "key": "mx",
        "metadata": {"flagType": "mutual-exclusion-group", "flagVersion": 1},
        "variants": {"slot": {"key": "slot", "value": "slot"}},
        "segments": [{"variant": "slot", "metadata": {"segmentName": "s"}}],
    },
    {"key": "dflt", "metadata": {"flagType": "release", "flagVersion": 3}, "variants": {"off": {"key": "off", "metadata": {"default": True}}}, "segments": [{"variant": "off"}]},
    {
        "key": "notrack",
        "metadata": {"flagType": "experiment", "flagVersion": 1, "trackExposure": False},
        "variants": {"on": {"key": "on", "value": "on"}},
        "segments": [{"variant": "on"}],
    },
    {"key": "valonly", "metadata": {}, "variants": {"v": {"value": "blue"}}, "segments": [{"variant": "v"}]},
]


def the_user():
    return User(
        user_id="uid",
        device_id="did",
        country="DE",
        city="Berlin",
        version="1.0",
        os="ios",
        ip_address="1.2.3.4",
        library="lib",
        platform="web",
        carrier="c",
        user_properties={"plan": "pro"},
        groups={"org": ["o1"]},
    )


# What reference 1.13.0 sends for the_user() and FLAGS (recorded with the same stand-in; the
# reference leaves "time" to the analytics SDK, we stamp the evaluation time).
LIBRARY = "amplitude-python/" + amplitude.constants.SDK_VERSION
EXPECTED_ASSIGNMENT = {
    "carrier": "c",
    "city": "Berlin",
    "country": "DE",
    "device_id": "did",
    "event_properties": {
        "dflt.variant": "off",
        "exp.details": "v2 rule:rule",
        "exp.variant": "on",
        "mx.details": "v1 rule:s",
        "mx.variant": "slot",
        "notrack.variant": "on",
        "rel.variant": "on",
    },
    "event_type": "[Experiment] Assignment",
    "insert_id": "uid did 2035524644 20783",
    "library": LIBRARY,
    "platform": "web",
    "time": 1795700599418,
    "user_id": "uid",
    "user_properties": {
        "$set": {"[Experiment] exp": "on", "[Experiment] notrack": "on", "[Experiment] rel": "on"},
        "$unset": {"[Experiment] dflt": "-"},
        "plan": "pro",
    },
}


def exposure(flag, variant, insert_hash, metadata, set_properties, experiment_key=None):
    properties = {"[Experiment] Flag Key": flag, "[Experiment] Variant": variant}
    if experiment_key:
        properties["[Experiment] Experiment Key"] = experiment_key
    if metadata:
        properties["metadata"] = metadata
    return {
        "device_id": "did",
        "event_properties": properties,
        "event_type": "[Experiment] Exposure",
        "groups": {"org": ["o1"]},
        "insert_id": "uid did %d 20783" % insert_hash,
        "library": LIBRARY,
        "time": 1795700599418,
        "user_id": "uid",
        "user_properties": {"$set": set_properties, "$unset": {}},
    }


EXPECTED_EXPOSURES = [
    exposure(
        "exp",
        "on",
        2044137223,
        {"evaluationMode": "local", "experimentKey": "exp-9", "flagType": "experiment", "flagVersion": 2, "segmentName": "rule"},
        {"[Experiment] exp": "on"},
        experiment_key="exp-9",
    ),
    exposure("rel", "on", 2592007947, {"flagType": "release", "flagVersion": 7}, {"[Experiment] rel": "on"}),
    exposure("mx", "slot", 2319273145, {"flagType": "mutual-exclusion-group", "flagVersion": 1, "segmentName": "s"}, {}),
    exposure("valonly", "blue", 59219159, {}, {"[Experiment] valonly": "blue"}),
]


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def logger():
    log = logging.getLogger(LOGGER_NAME)
    log.setLevel(logging.INFO)
    return log


@pytest.fixture
def local_client(stand_in, clock, logger, monkeypatch):
    """``make(assignment=..., exposure=...)`` -> (started client, its tracker); analytics options as dicts."""
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, FLAGS))
    stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}))
    trackers = []

    def tracker_with_clock(config, log):
        trackers.append(build_tracker(config, log, clock=clock))
        return trackers[-1]

    monkeypatch.setattr(client_module, "build_tracker", tracker_with_clock)
    clients = []

    def make(assignment=None, exposure=None):
        config = LocalEvaluationConfig(
            server_url=stand_in.url,
            flag_source="poll",
            assignment_config=AssignmentConfig(**analytics(stand_in, "a-key", assignment)) if assignment is not None else None,
            exposure_config=ExposureConfig(**analytics(stand_in, "e-key", exposure)) if exposure is not None else None,
            logger=logger,
        )
        client = LocalEvaluationClient("server-key", config)
        clients.append(client)
        client.start()
        return client, trackers[-1]

    yield make
    for client in clients:
        client.stop(timeout=1)


def analytics(stand_in, api_key, options):
    """Nothing is sent before a flush unless a test asks otherwise."""
    settings = dict(
        api_key=api_key,
        server_url=stand_in.url + "/2/httpapi",
        flush_queue_size=100,
        flush_interval_millis=60000,
        flush_max_retries=1,
    )
    settings.update(options)
    return settings


def events_sent(stand_in, api_key, path="/2/httpapi"):
    return [event for request in stand_in.seen(path) if request.json()["api_key"] == api_key for event in request.json()["events"]]


def test_assignment_and_exposure_events_are_the_references(local_client, stand_in):
    client, _ = local_client(assignment={"send_evaluated_props": True}, exposure={})
    user = the_user()
    client.evaluate_v2(user, options=EXPOSE)
    client.stop()
    assert events_sent(stand_in, "a-key") == [EXPECTED_ASSIGNMENT]
    assert events_sent(stand_in, "e-key") == EXPECTED_EXPOSURES
    assert user.user_properties == {"plan": "pro"}  # quirk Q10 fixed: the caller's dict is left alone


def test_exposures_only_when_asked_per_call(local_client, stand_in):
    client, tracker = local_client(assignment={}, exposure={})
    client.evaluate_v2(the_user())
    client.evaluate_v2(the_user(), options=EvaluateOptions(tracks_exposure=1))  # only True counts
    tracker.flush(5)
    assert len(events_sent(stand_in, "a-key")) == 1
    assert events_sent(stand_in, "e-key") == []
    client.evaluate_v2(the_user(), options=EXPOSE)
    tracker.flush(5)
    assert len(events_sent(stand_in, "e-key")) == 4


def test_repeats_are_deduplicated_until_a_day_without_them(local_client, stand_in, clock):
    client, tracker = local_client(assignment={}, exposure={})
    for _ in range(5):
        client.evaluate_v2(the_user(), options=EXPOSE)
    tracker.flush(5)
    assert len(events_sent(stand_in, "a-key")) == 1
    assert len(events_sent(stand_in, "e-key")) == 4

    clock.advance(DAY - 1)  # seen again within the TTL: still deduplicated, and the TTL restarts
    client.evaluate_v2(the_user(), options=EXPOSE)
    clock.advance(DAY - 1)
    client.evaluate_v2(the_user(), options=EXPOSE)
    client.evaluate_v2(User(user_id="someone-else"), options=EXPOSE)  # a new result is not a repeat
    tracker.flush(5)
    assignments = events_sent(stand_in, "a-key")
    assert [event["user_id"] for event in assignments] == ["uid", "someone-else"]

    clock.advance(DAY + 0.001)  # a full day unseen: tracked again, with the new day in the insert id
    client.evaluate_v2(the_user(), options=EXPOSE)
    tracker.flush(5)
    assignments = events_sent(stand_in, "a-key")
    assert [event["user_id"] for event in assignments] == ["uid", "someone-else", "uid"]
    assert assignments[-1]["insert_id"] == "uid did 2035524644 20786"
    assert assignments[-1]["time"] == int(clock.now * 1000)
    assert len(events_sent(stand_in, "e-key")) == 4 + 3 + 4


def test_stop_flushes_pending_events(local_client, stand_in):
    client, _ = local_client(assignment={})
    client.evaluate_v2(the_user())
    assert stand_in.seen("/2/httpapi") == []  # batched: 100 events or 60 s
    client.stop(timeout=5)
    assert len(events_sent(stand_in, "a-key")) == 1


def test_stop_waits_no_longer_than_its_timeout(local_client, stand_in, caplog):
    client, _ = local_client(assignment={})
    stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}, delay=3.0))
    client.evaluate_v2(the_user())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        client.stop(timeout=0.2)
    assert time.monotonic() - started < 2.5
    assert "still being sent" in caplog.text
    stand_in.wait_for(1, "/2/httpapi", timeout=5)


def test_dead_endpoint_is_logged_not_raised(local_client, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_url = "http://127.0.0.1:%d/2/httpapi" % probe.getsockname()[1]
    client, _ = local_client(assignment={"server_url": dead_url})
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        variants = client.evaluate_v2(the_user())
        client.stop(timeout=5)
    assert variants["exp"].key == "on"
    assert "could not be delivered to %s" % dead_url in caplog.text


@pytest.mark.parametrize("zone", ["EU", ServerZone.EU])
def test_eu_zone_sends_to_the_eu_endpoint(local_client, stand_in, monkeypatch, zone):
    assert AssignmentConfig(server_zone=zone).server_url == "https://api.eu.amplitude.com/2/httpapi"
    assert AssignmentConfig().server_url == "https://api2.amplitude.com/2/httpapi"
    # Point the analytics SDK's EU endpoint at the stand-in; the US one stays where it was.
    monkeypatch.setitem(amplitude.constants.SERVER_URL["EU"], "v2", stand_in.url + "/eu/2/httpapi")
    client, _ = local_client(assignment={"server_url": None, "server_zone": zone})
    client.evaluate_v2(the_user())
    client.stop(timeout=5)
    assert len(events_sent(stand_in, "a-key", "/eu/2/httpapi")) == 1
    assert stand_in.seen("/2/httpapi") == []


def test_eu_flags_with_us_events_are_pointed_out(caplog):
    config = LocalEvaluationConfig(server_zone=ServerZone.EU, assignment_config=AssignmentConfig(api_key="k"), flag_source="poll")
    with caplog.at_level(logging.WARNING):
        build_tracker(config, logging.getLogger(LOGGER_NAME))
    assert "sends events to https://api2.amplitude.com" in caplog.text


def test_no_tracker_without_tracking_configs():
    assert build_tracker(LocalEvaluationConfig(flag_source="poll"), logging.getLogger(LOGGER_NAME)) is None


class RecordingSink:
    def __init__(self, block: bool = False):
        self.events = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()

    def track(self, event):
        self.entered.set()
        assert self.release.wait(10)
        self.events.append(event)

    def flush(self):
        return []


def variants():
    return {"f": Variant("on", key="on", metadata={})}


def test_analytics_client_starts_on_first_tracked_result(logger):
    sinks = []

    def factory(config):
        sinks.append(RecordingSink())
        return sinks[-1]

    tracker = EvaluationTracker(logger, AssignmentConfig(api_key="k"), sink_factory=factory)
    tracker.flush(1)
    assert sinks == []
    tracker.track(User(user_id="u"), {}, False)  # nothing evaluated, nothing tracked
    assert sinks == []
    tracker.track(User(user_id="u"), variants(), False)
    tracker.track(User(user_id="v"), variants(), False)
    tracker.flush(5)
    assert len(sinks) == 1
    assert [event.user_id for event in sinks[0].events] == ["u", "v"]


def test_full_queue_drops_and_warns_without_blocking(logger, caplog):
    sink = RecordingSink(block=True)
    tracker = EvaluationTracker(logger, AssignmentConfig(api_key="k"), sink_factory=lambda config: sink, max_pending=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        tracker.track(User(user_id="first"), variants(), False)
        assert sink.entered.wait(5)  # the pipeline thread is busy with the first result
        for i in range(9):
            tracker.track(User(user_id="user-%d" % i), variants(), False)
        assert caplog.text.count("queue is full") == 1
        sink.release.set()
        tracker.flush(5)
    assert [event.user_id for event in sink.events] == ["first", "user-0", "user-1"]
    assert "dropped 7 results" in caplog.text


def test_tracking_errors_never_reach_the_caller(logger, caplog):
    class BrokenSink(RecordingSink):
        def track(self, event):
            raise RuntimeError("analytics exploded")

    tracker = EvaluationTracker(logger, AssignmentConfig(api_key="k"), sink_factory=lambda config: BrokenSink())
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        tracker.track(object(), variants(), False)  # not a user at all
        tracker.track(User(), variants(), False)  # no ids: Amplitude would reject the event
        tracker.track(User(user_id="u"), variants(), False)
        tracker.track(User(user_id="v"), variants(), False)
        tracker.flush(5)
    assert caplog.text.count("tracking an evaluation failed") == 1
    assert caplog.text.count("without user_id and device_id") == 1
    assert caplog.text.count("could not build or queue an event") == 1


def test_idle_worker_ends_and_the_next_result_starts_another(logger):
    from amplitude_experiment.tracking._delivery import EventPipeline

    sink = RecordingSink()
    pipeline = EventPipeline("idle-test", AssignmentConfig(api_key="k"), lambda record, callback: [record], logger, lambda config: sink, idle_seconds=0.05)

    def workers():
        return [t for t in threading.enumerate() if t.name == "amplitude_experiment.tracking.idle-test"]

    for round_number in range(2):
        pipeline.submit("event-%d" % round_number)
        pipeline.flush(time.monotonic() + 5)
        assert len(workers()) <= 1
        for worker in workers():
            worker.join(timeout=5)
        assert workers() == []
    assert sink.events == ["event-0", "event-1"]
