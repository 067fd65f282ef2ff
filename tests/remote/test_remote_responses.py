"""What ``fetch_v2`` makes of each answer, and how many attempts the stand-in saw (docs/compatibility.md, 'Remote results and retries', Q1, Q2)."""

import logging

import pytest

from amplitude_experiment import User, Variant
from amplitude_experiment.exception import FetchException
from remote_support import VARDATA, VARIANTS, ok
from stand_in import Answer


def test_variants_come_back_with_key_value_payload_and_metadata(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())

    variants = make_client().fetch_v2(User(user_id="u1"))

    assert list(variants) == ["checkout-redesign", "old-flag"]
    treatment = variants["checkout-redesign"]
    assert (treatment.key, treatment.value, treatment.payload) == ("treatment", "treatment", {"color": "blue"})
    assert treatment.metadata == {"flagType": "experiment", "flagVersion": 12}
    off = variants["old-flag"]
    assert (off.key, off.value, off.payload, off.metadata) == ("off", None, None, {"default": True})


@pytest.mark.parametrize(
    "value, expected",
    [
        ("on", "on"), (True, "true"), (10, "10"), (10.2, "10.2"), ([1, 2, 3], "[1,2,3]"),
        ({"k": "v"}, '{"k":"v"}'), (None, None), ("", ""),
    ],
)
def test_a_value_that_is_not_a_string_becomes_compact_json(stand_in, make_client, value, expected):
    stand_in.answer("POST", VARDATA, ok({"f": {"key": "k", "value": value}}))

    variant = make_client().fetch_v2(User(user_id="u1"))["f"]

    assert variant.value == expected
    assert variant == Variant(expected, key="k")


def test_missing_fields_are_none(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok({"f": {}}))

    variant = make_client().fetch_v2(User(user_id="u1"))["f"]

    assert (variant.key, variant.value, variant.payload, variant.metadata) == (None, None, None, None)


# --- failures with fetch_retries = 0 (the default) ----------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 413])
def test_a_permanent_4xx_returns_none_after_one_attempt_even_with_retries(stand_in, make_client, status):
    stand_in.answer("POST", VARDATA, Answer(status, b"no"))

    assert make_client(fetch_retries=3, fetch_retry_backoff_min_millis=10).fetch_v2(User(user_id="u1")) is None
    assert len(stand_in.seen(VARDATA)) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 201, 204, 302])
def test_a_retryable_answer_returns_an_empty_dict_without_retries(stand_in, make_client, status):
    stand_in.answer("POST", VARDATA, Answer(status, b"busy", headers={"Location": "/elsewhere"}))

    assert make_client().fetch_v2(User(user_id="u1")) == {}
    assert len(stand_in.seen()) == 1  # and a 302 is not followed


def test_an_unreachable_server_returns_an_empty_dict_without_retries(make_client, refused_url):
    assert make_client(server_url=refused_url).fetch_v2(User(user_id="u1")) == {}


def test_an_unreachable_server_raises_a_connection_error_after_the_retries(make_client, refused_url):
    client = make_client(server_url=refused_url, fetch_retries=2, fetch_retry_backoff_min_millis=10)

    with pytest.raises(ConnectionError, match="127.0.0.1"):
        client.fetch_v2(User(user_id="u1"))


@pytest.mark.parametrize(
    "body, excerpt",
    [
        (b"<html>upstream overloaded</html>", "upstream overloaded"),
        (b"", "not JSON"),
        (b'["not", "an", "object"]', '["not"'),
        (b'{"f": "not a variant"}', "not a variant"),
        (b"null", "null"),
        (b"\xff\xfe garbage", "garbage"),
    ],
)
def test_a_200_that_is_not_variants_json_is_an_error_with_the_status_and_an_excerpt(
        stand_in, make_client, caplog, body, excerpt):
    stand_in.answer("POST", VARDATA, Answer(200, body))

    with caplog.at_level(logging.ERROR, logger="Amplitude"):
        assert make_client().fetch_v2(User(user_id="u1")) == {}  # retryable, so {} with no retries (Q2)
    with pytest.raises(FetchException) as raised:
        make_client(fetch_retries=1, fetch_retry_backoff_min_millis=10).fetch_v2(User(user_id="u1"))

    assert raised.value.status_code == 200
    assert "status=200" in str(raised.value) and excerpt in str(raised.value)
    assert any(excerpt in record.getMessage() for record in caplog.records)


def test_a_long_garbage_body_is_cut_short_in_the_error(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(200, b"x" * 100_000))

    with pytest.raises(FetchException) as raised:
        make_client(fetch_retries=1, fetch_retry_backoff_min_millis=10).fetch_v2(User(user_id="u1"))

    assert len(str(raised.value)) < 400


def test_an_error_status_reports_its_reason_and_body(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(503, b"maintenance window"))

    with pytest.raises(FetchException) as raised:
        make_client(fetch_retries=1, fetch_retry_backoff_min_millis=10).fetch_v2(User(user_id="u1"))

    assert raised.value.status_code == 503
    assert str(raised.value).startswith("Fetch error response: status=503 Service Unavailable")
    assert "maintenance window" in str(raised.value)


def test_the_connection_stays_usable_after_an_error_answer(stand_in, make_client):
    # Q1: the reference left the 400's body unread and its next fetch failed with {}.
    stand_in.answer("POST", VARDATA, Answer(400, b"bad request body"), Answer(503, b"x" * 5000), ok())
    client = make_client(connection_pool_max_size=1)
    user = User(user_id="u1")

    assert client.fetch_v2(user) is None
    assert client.fetch_v2(user) == {}
    assert set(client.fetch_v2(user)) == set(VARIANTS)
    assert len(stand_in.seen(VARDATA)) == 3
