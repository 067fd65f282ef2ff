"""What the client sends: path, headers and body, as the stand-in recorded them (docs/compatibility.md, 'Remote requests')."""

import base64
import json
import logging

import pytest

from amplitude_experiment import Experiment, RemoteEvaluationConfig, User
from amplitude_experiment.remote.fetch_options import FetchOptions
from remote_support import KEY, VARDATA, ok

LIBRARY = "experiment-python-server/1.13.0"


def test_posts_the_user_to_vardata_with_the_deployment_key(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    user = User(device_id="d1", user_id="u1", user_properties={"plan": "pro"})

    make_client().fetch_v2(user)

    [seen] = stand_in.seen(VARDATA)
    assert seen.method == "POST"
    assert seen.query == "v=0"
    assert seen.headers["Authorization"] == "Api-Key " + KEY
    assert seen.headers["Content-Type"] == "application/json;charset=utf-8"
    assert not [name for name in seen.headers if name.lower().startswith("x-amp-exp")]
    assert seen.body == user.to_json().encode("utf-8")
    assert seen.json() == {
        "device_id": "d1", "user_id": "u1", "country": None, "city": None, "region": None, "dma": None,
        "language": None, "platform": None, "version": None, "os": None, "device_manufacturer": None,
        "device_brand": None, "device_model": None, "carrier": None, "library": LIBRARY,
        "ip_address": None, "user_properties": {"plan": "pro"}, "groups": None, "group_properties": None,
        "group_cohort_ids": None, "cohort_ids": None,
    }


def test_sets_the_library_on_the_callers_user_only_when_it_is_empty(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    client = make_client()
    plain, tagged = User(user_id="u1"), User(user_id="u2", library="my-lib/2.0")

    client.fetch_v2(plain)
    client.fetch_v2(tagged)

    assert plain.library == LIBRARY  # the caller's object is changed, as by the reference
    assert tagged.library == "my-lib/2.0"
    assert [seen.json()["library"] for seen in stand_in.seen(VARDATA)] == [LIBRARY, "my-lib/2.0"]


def test_extra_user_attributes_and_raw_groups_are_sent(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    user = User(user_id="u1", groups={"org": ["acme"]}, group_properties={"org": {"acme": {"tier": "gold"}}})
    user.favourite_colour = "blue"

    make_client().fetch_v2(user)

    body = stand_in.seen(VARDATA)[0].json()
    assert body["favourite_colour"] == "blue"
    assert body["groups"] == {"org": ["acme"]}
    assert body["group_properties"] == {"org": {"acme": {"tier": "gold"}}}


@pytest.mark.parametrize(
    "options, expected",
    [
        (FetchOptions(tracksAssignment=True), {"X-Amp-Exp-Track": "track"}),
        (FetchOptions(tracksAssignment=False), {"X-Amp-Exp-Track": "no-track"}),
        (FetchOptions(tracksExposure=True), {"X-Amp-Exp-Exposure-Track": "track"}),
        (FetchOptions(tracksExposure=False), {"X-Amp-Exp-Exposure-Track": "no-track"}),
        (FetchOptions(flagKeys=["flag-a", "flag-b"]), {"X-Amp-Exp-Flag-Keys": "WyJmbGFnLWEiLCJmbGFnLWIiXQ"}),
        (FetchOptions(flagKeys=[]), {}),
        (FetchOptions(), {}),
        (
            FetchOptions(True, False, ["checkout"]),
            {"X-Amp-Exp-Track": "track", "X-Amp-Exp-Exposure-Track": "no-track",
             "X-Amp-Exp-Flag-Keys": "WyJjaGVja291dCJd"},
        ),
    ],
)
def test_fetch_options_become_headers(stand_in, make_client, options, expected):
    stand_in.answer("POST", VARDATA, ok())

    make_client().fetch_v2(User(user_id="u1"), options)

    headers = stand_in.seen(VARDATA)[0].headers
    assert {name: value for name, value in headers.items() if name.lower().startswith("x-amp-exp")} == expected


def test_flag_keys_header_is_compact_ascii_json_in_unpadded_url_safe_base64(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    keys = ["日本", "a?b>c", "x"]

    make_client().fetch_v2(User(user_id="u1"), FetchOptions(flagKeys=keys))

    value = stand_in.seen(VARDATA)[0].headers["X-Amp-Exp-Flag-Keys"]
    assert "=" not in value and "+" not in value and "/" not in value
    decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    assert decoded == b'["\\u65e5\\u672c","a?b>c","x"]'
    assert json.loads(decoded) == keys


def test_large_users_are_sent_with_a_warning_about_the_cdn(stand_in, make_client, caplog):
    stand_in.answer("POST", VARDATA, ok())
    user = User(user_id="u1", user_properties={"notes": "x" * 9000})

    with caplog.at_level(logging.WARNING, logger="Amplitude"):
        assert make_client().fetch_v2(user)

    assert len(stand_in.seen(VARDATA)) == 1
    assert any("CDN" in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


def test_the_eu_zone_fetches_from_the_eu_host():
    from amplitude_experiment import RemoteEvaluationClient, ServerZone

    client = RemoteEvaluationClient(KEY, RemoteEvaluationConfig(server_zone=ServerZone.EU))
    try:
        assert client._url == "https://api.lab.eu.amplitude.com/sdk/v2/vardata?v=0"
    finally:
        client.close()


# --- bad input: a clear error, and nothing sent ----------------------------------------------


@pytest.mark.parametrize("key", ["", None])
def test_an_empty_deployment_key_fails_at_initialize(key):
    with pytest.raises(ValueError, match="Experiment API key is empty"):
        Experiment.initialize_remote(key)


def test_a_user_json_cannot_encode_raises_before_any_request(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    user = User(user_id="u1", user_properties={"tags": {"a", "b"}})

    with pytest.raises(TypeError, match="user cannot be encoded as JSON.*set"):
        make_client(fetch_retries=3).fetch_v2(user)

    assert stand_in.seen() == []


@pytest.mark.parametrize("user", [None, {"user_id": "u1"}])
def test_something_that_is_not_a_user_raises_before_any_request(stand_in, make_client, user):
    with pytest.raises(TypeError, match="needs an amplitude_experiment.User"):
        make_client().fetch_v2(user)

    assert stand_in.seen() == []


def test_flag_keys_json_cannot_encode_raise_before_any_request(stand_in, make_client):
    with pytest.raises(TypeError, match="flagKeys"):
        make_client().fetch_v2(User(user_id="u1"), FetchOptions(flagKeys=[object()]))

    assert stand_in.seen() == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"server_url": "api.lab.amplitude.com"}, "server_url"),
        ({"server_url": "ftp://api.lab.amplitude.com"}, "server_url"),
        ({"connection_pool_max_size": 0}, "connection_pool_max_size"),
        ({"fetch_timeout_millis": 0}, "fetch_timeout_millis"),
        ({"fetch_retry_timeout_millis": -5}, "fetch_retry_timeout_millis"),
        ({"fetch_retries": -1}, "fetch_retries"),
        ({"fetch_pool_acquire_timeout_millis": -1}, "fetch_pool_acquire_timeout_millis"),
    ],
)
def test_unusable_settings_fail_at_initialize(options, message):
    with pytest.raises(ValueError, match=message):
        Experiment.initialize_remote(KEY, RemoteEvaluationConfig(**options))


def test_a_proxy_from_the_environment_is_used(stand_in, monkeypatch):
    # The stand-in plays the proxy: a plain-HTTP proxy receives the absolute URL.
    from amplitude_experiment import RemoteEvaluationClient

    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", stand_in.url)
    stand_in.answer("POST", VARDATA, ok())

    with RemoteEvaluationClient(KEY, RemoteEvaluationConfig(server_url="http://flags.example.invalid")) as client:
        monkeypatch.delenv("HTTP_PROXY")  # read when the client was built, not per request
        assert client.fetch_v2(User(user_id="u1"))

    [seen] = stand_in.seen(VARDATA)
    assert seen.headers["Host"] == "flags.example.invalid"
    assert seen.headers["Authorization"] == "Api-Key " + KEY
