"""Retries: how many attempts, and the gaps between them, read from the stand-in's arrival times (docs/compatibility.md, 'Remote results and retries', Q3).

The gaps include each failed attempt's own round trip, so they are checked against the backoff
from below tightly and from above with room for a loaded machine.
"""

import logging
import threading

import pytest

from amplitude_experiment import User
from amplitude_experiment.exception import FetchException
from remote_support import VARDATA, VARIANTS, gaps, ok
from stand_in import Answer

SLACK = 0.25  # seconds a busy CI machine may add to a gap


def assert_gaps(seen, expected):
    measured = gaps(seen)
    assert len(measured) == len(expected), measured
    for gap, want in zip(measured, expected):
        assert want - 0.01 <= gap <= want + SLACK, (measured, expected)


def test_the_backoff_starts_at_the_minimum_and_grows_by_the_scalar_up_to_the_maximum(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(503))
    client = make_client(fetch_retries=4, fetch_retry_backoff_min_millis=100,
                         fetch_retry_backoff_scalar=2, fetch_retry_backoff_max_millis=300)

    with pytest.raises(FetchException) as raised:
        client.fetch_v2(User(user_id="u1"))

    assert raised.value.status_code == 503
    seen = stand_in.seen(VARDATA)
    assert len(seen) == 5  # the first attempt and four retries
    assert_gaps(seen, [0.1, 0.2, 0.3, 0.3])


def test_the_default_scalar_of_one_and_a_half(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(500))
    client = make_client(fetch_retries=3, fetch_retry_backoff_min_millis=100)

    with pytest.raises(FetchException):
        client.fetch_v2(User(user_id="u1"))

    assert_gaps(stand_in.seen(VARDATA), [0.1, 0.15, 0.225])


def test_a_retry_that_succeeds_returns_its_variants(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(429), Answer(502), ok())
    client = make_client(fetch_retries=5, fetch_retry_backoff_min_millis=50)

    variants = client.fetch_v2(User(user_id="u1"))

    assert set(variants) == set(VARIANTS)
    assert len(stand_in.seen(VARDATA)) == 3


def test_once_retrying_a_4xx_is_retried_too(stand_in, make_client):
    # The reference's loop retries every error; only the first attempt's 4xx means "no retry".
    stand_in.answer("POST", VARDATA, Answer(503), Answer(400), ok())
    client = make_client(fetch_retries=2, fetch_retry_backoff_min_millis=20)

    assert set(client.fetch_v2(User(user_id="u1"))) == set(VARIANTS)
    assert len(stand_in.seen(VARDATA)) == 3


def test_the_last_retrys_error_is_raised(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(500), Answer(503), Answer(404))
    client = make_client(fetch_retries=2, fetch_retry_backoff_min_millis=20)

    with pytest.raises(FetchException) as raised:
        client.fetch_v2(User(user_id="u1"))

    assert raised.value.status_code == 404


def test_every_failure_is_logged_at_error(stand_in, make_client, caplog):
    stand_in.answer("POST", VARDATA, Answer(500))
    client = make_client(fetch_retries=2, fetch_retry_backoff_min_millis=10)

    with caplog.at_level(logging.ERROR, logger="Amplitude"), pytest.raises(FetchException):
        client.fetch_v2(User(user_id="u1"))

    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert sum("Fetch failed" in m for m in messages) == 1
    assert sum("Retry failed" in m for m in messages) == 2
    assert sum("Failed to fetch variants" in m for m in messages) == 1


def test_the_first_attempt_uses_the_fetch_timeout_and_retries_the_retry_timeout(stand_in, make_client):
    # Q3: the reference used fetch_timeout_millis for every attempt.
    stand_in.answer("POST", VARDATA, Answer(200, VARIANTS, delay=2.0))
    client = make_client(fetch_timeout_millis=200, fetch_retry_timeout_millis=600, fetch_retries=2,
                         fetch_retry_backoff_min_millis=50, fetch_retry_backoff_scalar=1)

    with pytest.raises(TimeoutError, match="timed out after 600 ms"):
        client.fetch_v2(User(user_id="u1"))

    seen = stand_in.seen(VARDATA)
    assert len(seen) == 3
    assert_gaps(seen, [0.2 + 0.05, 0.6 + 0.05])


def test_a_slow_answer_with_no_retries_gives_an_empty_dict_after_the_timeout(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(200, VARIANTS, delay=2.0), ok())
    client = make_client(fetch_timeout_millis=150)
    user = User(user_id="u1")

    assert client.fetch_v2(user) == {}
    assert set(client.fetch_v2(user)) == set(VARIANTS)  # a fresh connection replaced the timed-out one
    assert len(stand_in.seen(VARDATA)) == 2
    assert 0.15 - 0.01 <= gaps(stand_in.seen(VARDATA))[0] <= 0.15 + SLACK


def test_a_slow_retry_that_answers_in_time_succeeds(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(200, VARIANTS, delay=0.5), ok(delay=0.3))
    client = make_client(fetch_timeout_millis=100, fetch_retry_timeout_millis=2000, fetch_retries=1,
                         fetch_retry_backoff_min_millis=10)

    assert set(client.fetch_v2(User(user_id="u1"))) == set(VARIANTS)


def test_waiting_for_a_pooled_connection_past_the_acquire_timeout_is_a_retryable_timeout(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok(delay=0.6))
    client = make_client(connection_pool_max_size=1, fetch_pool_acquire_timeout_millis=50)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", client.fetch_v2(User(user_id="u1"))))
    first.start()
    stand_in.wait_for(1, VARDATA)  # the only connection is now busy for 0.6 s

    results["second"] = client.fetch_v2(User(user_id="u2"))
    first.join(timeout=10)

    assert results["second"] == {}
    assert set(results["first"]) == set(VARIANTS)
    assert len(stand_in.seen(VARDATA)) == 1
