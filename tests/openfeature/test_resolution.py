"""Resolutions through the real OpenFeature client against flags polled from the stand-in:
each type, each reason and error code, the context mapping, exposures, hooks."""

import datetime
import logging
from typing import Any

import pytest
from openfeature_kit import FLAGS_PATH, KEY, set_provider_and_wait, typed_flags
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.hook import Hook
from openfeature.provider import ProviderStatus
from stand_in import Answer

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.exposure import ExposureConfig
from amplitude_experiment.openfeature import AmplitudeProvider
from amplitude_experiment.openfeature._context import context_to_user
from waiting import wait_until

LOGGER = logging.getLogger("test.openfeature")


def local_client(stand_in: Any, **extra: Any) -> LocalEvaluationClient:
    extra.setdefault("logger", LOGGER)
    return LocalEvaluationClient(KEY, LocalEvaluationConfig(
        flag_source="poll", server_url=stand_in.url, flag_config_poller_request_timeout_millis=2000, **extra))


@pytest.fixture
def provider_for(stand_in):
    """``provider_for(**provider_options)`` -> an OpenFeature client whose default provider is ours."""
    stand_in.answer("GET", FLAGS_PATH, Answer(200, typed_flags()))

    def make(client: Any = None, **options: Any) -> Any:
        provider = AmplitudeProvider(client or local_client(stand_in), **options)
        set_provider_and_wait(provider)
        return api.get_client()

    return make


@pytest.fixture
def of(provider_for):
    return provider_for()


ALICE = EvaluationContext("alice")

TYPED = [
    # (method, flag, default, value, variant, reason)
    ("boolean", "bool-on", False, True, "on", Reason.TARGETING_MATCH),
    ("boolean", "bool-true", False, True, "yes", Reason.TARGETING_MATCH),
    ("boolean", "bool-false", True, False, "no", Reason.TARGETING_MATCH),
    ("boolean", "bool-key-only", False, True, "on", Reason.TARGETING_MATCH),
    ("boolean", "default-only", True, False, "off", Reason.DEFAULT),
    ("string", "string-flag", "red", "blue", "blue", Reason.TARGETING_MATCH),
    ("string", "default-only", "red", "off", "off", Reason.DEFAULT),
    ("integer", "int-payload", 0, 42, "big", Reason.TARGETING_MATCH),
    ("integer", "int-value", 0, 17, "seventeen", Reason.TARGETING_MATCH),
    ("integer", "default-only", 7, 7, "off", Reason.DEFAULT),
    ("float", "float-payload", 0.0, 2.5, "rate", Reason.TARGETING_MATCH),
    ("float", "float-int-payload", 0.0, 3.0, "rate", Reason.TARGETING_MATCH),
    ("float", "float-value", 0.0, 0.25, "quarter", Reason.TARGETING_MATCH),
    ("float", "default-only", 1.5, 1.5, "off", Reason.DEFAULT),
    ("object", "object-payload", {}, {"limit": 10, "tags": ["a"]}, "cfg", Reason.TARGETING_MATCH),
    ("object", "object-list", {}, [1, 2, 3], "cfg", Reason.TARGETING_MATCH),
    ("object", "default-only", {"d": 1}, {"d": 1}, "off", Reason.DEFAULT),
    ("boolean", "disabled", False, False, "on", Reason.DISABLED),
    ("string", "rollout-all", "x", "on", "on", Reason.TARGETING_MATCH),
]


@pytest.mark.parametrize("method, flag, default, value, variant, reason", TYPED,
                         ids=["%s-%s" % (case[0], case[1]) for case in TYPED])
def test_each_type_resolves_from_value_or_payload(of, method, flag, default, value, variant, reason):
    details = getattr(of, "get_%s_details" % method)(flag, default, ALICE)
    assert (details.value, details.variant, details.reason, details.error_code) == (value, variant, reason, None)
    assert type(details.value) is type(value)
    assert getattr(of, "get_%s_value" % method)(flag, default, ALICE) == value


MISMATCHES = [
    ("boolean", "bool-bad", ErrorCode.TYPE_MISMATCH),
    ("boolean", "int-payload", ErrorCode.TYPE_MISMATCH),  # value "big"
    ("integer", "int-unparsable", ErrorCode.PARSE_ERROR),
    ("integer", "int-from-float", ErrorCode.TYPE_MISMATCH),
    ("float", "int-unparsable", ErrorCode.PARSE_ERROR),
    ("object", "object-none", ErrorCode.TYPE_MISMATCH),
    ("object", "string-flag", None),  # not a mismatch: its payload {"hex": ...} is an object
]


@pytest.mark.parametrize("method, flag, error_code", MISMATCHES, ids=["%s-%s" % (c[0], c[1]) for c in MISMATCHES])
def test_values_of_the_wrong_type_are_errors_with_the_callers_default(of, method, flag, error_code):
    default = {"boolean": True, "integer": -1, "float": -1.0, "object": {"default": True}}[method]
    details = getattr(of, "get_%s_details" % method)(flag, default, ALICE)
    if error_code is None:
        assert details.value == {"hex": "#00f"} and details.error_code is None
        return
    assert details.value == default
    assert (details.reason, details.error_code) == (Reason.ERROR, error_code)
    assert details.error_message.startswith("variant ")  # names the variant and what it holds


def test_a_bucketed_allocation_is_a_split_and_the_flag_metadata_is_passed_on(of):
    seen = {}
    for index in range(50):
        details = of.get_string_details("split", "x", EvaluationContext("user-%d" % index))
        seen[details.variant] = details
    assert set(seen) == {"control", "treatment"}
    assert {details.reason for details in seen.values()} == {Reason.SPLIT}
    metadata = dict(seen["control"].flag_metadata)
    assert metadata == {"deployed": True, "evaluationMode": "local", "flagType": "experiment", "flagVersion": 1,
                        "segmentName": "All Other Users"}


def test_a_partial_rollout_is_a_split_for_users_inside_and_default_for_the_others(of):
    reasons = {}
    for index in range(2000):  # 1 % allocated: about 20 of these are inside
        details = of.get_boolean_details("rollout-some", False, EvaluationContext("user-%d" % index))
        reasons.setdefault(details.variant, set()).add(details.reason)
        if len(reasons) == 2:
            break
    assert reasons == {"on": {Reason.SPLIT}, "off": {Reason.DEFAULT}}


def test_a_targeted_segment_is_a_targeting_match_and_the_fallthrough_the_default(of):
    hit = of.get_boolean_details("by-user", False, EvaluationContext("alice"))
    miss = of.get_boolean_details("by-user", True, EvaluationContext("bob"))
    assert (hit.value, hit.reason, hit.flag_metadata["segmentName"]) == (True, Reason.TARGETING_MATCH, "Targeted")
    assert (miss.value, miss.reason, miss.flag_metadata["default"]) == (False, Reason.DEFAULT, True)


def test_an_unknown_flag_is_flag_not_found(of):
    details = of.get_boolean_details("no-such-flag", True, ALICE)
    assert (details.value, details.reason, details.error_code) == (True, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)


def test_a_flag_that_gives_no_variant_is_a_general_error(of):
    details = of.get_string_details("no-segment-matches", "x", EvaluationContext("somebody"))
    assert (details.value, details.reason, details.error_code) == ("x", Reason.ERROR, ErrorCode.GENERAL)


def test_a_flag_that_fails_on_the_users_input_is_a_general_error(of):
    odd = EvaluationContext("alice", {"odd": "\ud800"})  # a lone surrogate cannot be hashed for bucketing
    details = of.get_boolean_details("fails-on-odd-input", True, odd)
    assert (details.value, details.reason, details.error_code) == (True, Reason.ERROR, ErrorCode.GENERAL)
    assert of.get_boolean_value("fails-on-odd-input", False, EvaluationContext("alice", {"odd": "x"})) is True


def test_provider_not_ready_until_the_first_flags_load(stand_in, events):
    stand_in.answer("GET", FLAGS_PATH, Answer(503, b"down"))
    client = local_client(stand_in, flag_config_polling_interval_millis=50)
    provider = AmplitudeProvider(client, status_check_seconds=0)
    set_provider_and_wait(provider)
    of = api.get_client()
    assert of.get_provider_status() == ProviderStatus.ERROR
    error = events.wait_for(ProviderEvent.PROVIDER_ERROR)
    assert error.error_code == ErrorCode.PROVIDER_NOT_READY and "HTTP 503" in error.message
    details = of.get_boolean_details("bool-on", False)
    assert (details.value, details.reason, details.error_code) == (False, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY)
    stand_in.answer("GET", FLAGS_PATH, Answer(200, typed_flags()))
    wait_until(lambda: of.get_boolean_value("bool-on", False), 10, "flags to load after the outage")
    assert of.get_provider_status() == ProviderStatus.READY
    events.wait_for(ProviderEvent.PROVIDER_READY)
    assert events.kinds() == [ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_READY]


def test_nothing_raises_out_of_the_provider(provider_for, stand_in, caplog):
    client = local_client(stand_in)
    of = provider_for(client)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("evaluation exploded")

    client.evaluate_v2 = broken
    provider = api.get_provider_metadata()
    assert provider.name == "amplitude-experiment"
    for _ in range(3):
        details = of.get_integer_details("int-payload", 5, ALICE)
        assert (details.value, details.reason, details.error_code) == (5, Reason.ERROR, ErrorCode.GENERAL)
        assert "evaluation exploded" in details.error_message
    logged = [r for r in caplog.records if "OpenFeature resolution" in r.getMessage() and r.levelno == logging.ERROR]
    assert len(logged) == 1  # once per flag and error type, not per resolution


def test_the_provider_resolves_directly_without_an_openfeature_client(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, typed_flags()))
    provider = AmplitudeProvider(local_client(stand_in))
    assert provider.resolve_boolean_details("bool-on", False).error_code == ErrorCode.PROVIDER_NOT_READY
    provider.initialize(EvaluationContext())
    assert provider.resolve_boolean_details("bool-on", False).value is True
    assert provider.resolve_boolean_details("bool-on", False, None).reason == Reason.TARGETING_MATCH
    provider.shutdown()


# --- context mapping --------------------------------------------------------------------------


@pytest.mark.parametrize("flag, context", [
    ("by-user", EvaluationContext("alice")),
    ("by-country", EvaluationContext("u", {"country": "Germany"})),
    ("by-plan", EvaluationContext("u", {"plan": "pro"})),
    ("by-plan", EvaluationContext("u", {"user_properties": {"plan": "pro"}})),
    ("by-org", EvaluationContext("u", {"groups": {"org": ["acme"]}})),
    ("by-org", EvaluationContext("u", {"groups": {"org": "acme"}})),
    ("by-org-size", EvaluationContext("u", {"groups": {"org": "acme"},
                                            "group_properties": {"org": {"acme": {"size": "big"}}}})),
], ids=["targeting-key", "user-field", "property", "user-properties", "groups", "group-name", "group-properties"])
def test_context_attributes_reach_the_rules(of, flag, context):
    assert of.get_boolean_details(flag, False, context).value is True
    assert of.get_boolean_details(flag, True, EvaluationContext("nobody")).value is False


def test_the_targeting_key_can_fill_device_id(provider_for):
    of = provider_for(targeting_key_field="device_id")
    assert of.get_boolean_value("by-device", False, EvaluationContext("dev-1")) is True
    assert of.get_boolean_value("by-user", False, EvaluationContext("alice")) is False
    with pytest.raises(ValueError):
        AmplitudeProvider(object(), targeting_key_field="email")


def test_api_client_and_invocation_contexts_are_merged(of):
    api.set_evaluation_context(EvaluationContext(attributes={"country": "Germany"}))
    try:
        assert of.get_boolean_value("by-country", False) is True
        assert of.get_boolean_value("by-country", False, EvaluationContext("u", {"country": "France"})) is False
    finally:
        api.set_evaluation_context(EvaluationContext())


def test_context_to_user_mapping():
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    user = context_to_user(EvaluationContext("u-1", {
        "user_id": "overridden", "device_id": "d-1", "country": "Germany", "platform": "iOS", "version": "2.1.0",
        "plan": "pro", "signed_up": moment, "user_properties": {"age": 31},
        "groups": {"org": "acme", "team": ("a", "b")}, "group_properties": {"org": {"acme": {"size": 3}}},
    }))
    assert isinstance(user, User)
    assert (user.user_id, user.device_id, user.country, user.platform, user.version) == (
        "u-1", "d-1", "Germany", "iOS", "2.1.0")
    assert user.user_properties == {"plan": "pro", "signed_up": "2026-01-02T03:04:05+00:00", "age": 31}
    assert user.groups == {"org": ["acme"], "team": ["a", "b"]}
    assert user.group_properties == {"org": {"acme": {"size": 3}}}
    assert context_to_user(None).__dict__ == User().__dict__
    assert context_to_user(EvaluationContext()).__dict__ == User().__dict__
    assert context_to_user(EvaluationContext("d"), "device_id").device_id == "d"


# --- exposures and hooks ----------------------------------------------------------------------


def exposures_sent(stand_in: Any) -> list:
    return [event for request in stand_in.seen("/2/httpapi") for event in request.json()["events"]
            if event["event_type"] == "[Experiment] Exposure"]


@pytest.mark.parametrize("track", [True, False])
def test_resolutions_track_exposures_when_configured(provider_for, stand_in, track):
    stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}))
    exposure = ExposureConfig(api_key="e-key", server_url=stand_in.url + "/2/httpapi", flush_queue_size=100,
                              flush_interval_millis=60000, flush_max_retries=1)
    of = provider_for(local_client(stand_in, exposure_config=exposure), track_exposures=track)
    assert of.get_boolean_value("bool-on", False, ALICE) is True
    assert of.get_string_value("string-flag", "", ALICE) == "blue"
    assert of.get_boolean_value("default-only", False, ALICE) is False  # a default variant is no exposure
    api.shutdown()  # stops the client, which flushes
    sent = exposures_sent(stand_in)
    if track:
        assert sorted(event["event_properties"]["[Experiment] Flag Key"] for event in sent) == ["bool-on", "string-flag"]
        assert {event["user_id"] for event in sent} == {"alice"}
    else:
        assert sent == []


def test_user_hooks_run_around_each_resolution(of):
    calls = []

    class Recorder(Hook):
        def before(self, hook_context, hints):
            calls.append(("before", hook_context.flag_key))

        def after(self, hook_context, details, hints):
            calls.append(("after", details.value, details.reason))

        def error(self, hook_context, exception, hints):
            calls.append(("error", type(exception).__name__))

        def finally_after(self, hook_context, details, hints):
            calls.append(("finally", details.variant))

    of.add_hooks([Recorder()])
    of.get_boolean_value("bool-on", False, ALICE)
    of.get_boolean_value("no-such-flag", False, ALICE)
    assert calls == [("before", "bool-on"), ("after", True, Reason.TARGETING_MATCH), ("finally", "on"),
                     ("before", "no-such-flag"), ("error", "FlagNotFoundError"), ("finally", None)]


# --- remote evaluation for flags the local client does not have -------------------------------


def test_flags_that_are_not_local_are_fetched_from_remote_evaluation(stand_in):
    from amplitude_experiment import RemoteEvaluationClient, RemoteEvaluationConfig

    stand_in.answer("GET", FLAGS_PATH, Answer(200, typed_flags()))
    stand_in.answer("POST", "/sdk/v2/vardata", Answer(200, {
        "remote-flag": {"key": "on", "value": "on", "metadata": {"segmentName": "Beta", "flagVersion": 3}},
        "remote-default": {"key": "off", "metadata": {"default": True}},
    }))
    remote = RemoteEvaluationClient(KEY, RemoteEvaluationConfig(server_url=stand_in.url, fetch_retries=0))
    set_provider_and_wait(AmplitudeProvider(local_client(stand_in), remote))
    of = api.get_client()

    assert of.get_boolean_value("bool-on", False, ALICE) is True
    assert stand_in.seen("/sdk/v2/vardata") == []  # a local flag never goes remote

    details = of.get_boolean_details("remote-flag", False, EvaluationContext("bob", {"plan": "pro"}))
    assert (details.value, details.variant, details.reason, details.error_code) == (True, "on", Reason.UNKNOWN, None)
    assert details.flag_metadata["flagVersion"] == 3
    [seen] = stand_in.seen("/sdk/v2/vardata")
    assert seen.json()["user_id"] == "bob" and seen.json()["user_properties"] == {"plan": "pro"}
    assert seen.headers["X-Amp-Exp-Exposure-Track"] == "track" and "X-Amp-Exp-Flag-Keys" in seen.headers

    default = of.get_string_details("remote-default", "x", ALICE)
    assert (default.value, default.reason) == ("off", Reason.DEFAULT)
    missing = of.get_string_details("nowhere", "x", ALICE)
    assert (missing.value, missing.error_code) == ("x", ErrorCode.FLAG_NOT_FOUND)

    stand_in.answer("POST", "/sdk/v2/vardata", Answer(400, b"bad request"))
    refused = of.get_string_details("remote-flag", "x", ALICE)
    assert (refused.value, refused.reason, refused.error_code) == ("x", Reason.ERROR, ErrorCode.GENERAL)
    stand_in.answer("POST", "/sdk/v2/vardata", Answer(503, b"down"))
    failed = of.get_string_details("remote-flag", "x", ALICE)
    # With fetch_retries=0 the remote client answers a failed fetch with no variants (as Amplitude's does).
    assert (failed.value, failed.error_code) == ("x", ErrorCode.FLAG_NOT_FOUND)
    api.shutdown()
    requests = len(stand_in.seen("/sdk/v2/vardata"))
    assert remote.fetch_v2(User(user_id="u")) == {}  # shutdown closed the remote client too: no request
    assert len(stand_in.seen("/sdk/v2/vardata")) == requests
