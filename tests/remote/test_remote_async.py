"""``fetch_async_v2`` and the deprecated ``fetch``/``fetch_async``: callbacks, futures, the executor (docs/compatibility.md, 'Public API', 'Deprecated filters', 'Remote results and retries').

Every test waits on the returned future, which completes after the callback has returned.
"""

import logging
import threading
import warnings

import pytest

from amplitude_experiment import User
from amplitude_experiment.exception import FetchException
from amplitude_experiment.remote.client import WORKER_NAME
from amplitude_experiment.remote.fetch_options import FetchOptions
from remote_support import VARDATA, VARIANTS, ok
from stand_in import Answer


class Recorder:
    """A callback that records its arguments, as the reference calls it (2 or 3 positional)."""

    def __init__(self, fail_times=0):
        self.calls = []
        self.fail_times = fail_times

    def __call__(self, *args):
        self.calls.append(args)
        if len(self.calls) <= self.fail_times:
            raise RuntimeError("callback failure %d" % len(self.calls))


def test_success_calls_back_with_user_and_variants_and_resolves_the_future(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    user, callback = User(user_id="u1"), Recorder()

    future = make_client().fetch_async_v2(user, callback)
    variants = future.result(timeout=10)

    assert set(variants) == set(VARIANTS)
    assert callback.calls == [(user, variants)]
    assert user.library == "experiment-python-server/1.13.0"


def test_a_permanent_4xx_calls_back_with_none(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(401))
    user, callback = User(user_id="u1"), Recorder()

    assert make_client().fetch_async_v2(user, callback).result(timeout=10) is None
    assert callback.calls == [(user, None)]


def test_a_retryable_error_with_no_retries_calls_back_with_an_empty_dict(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(503))
    user, callback = User(user_id="u1"), Recorder()

    assert make_client().fetch_async_v2(user, callback).result(timeout=10) == {}
    assert callback.calls == [(user, {})]


def test_exhausted_retries_call_back_with_the_error_and_fail_the_future(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(500))
    user, callback = User(user_id="u1"), Recorder()

    future = make_client(fetch_retries=1, fetch_retry_backoff_min_millis=10).fetch_async_v2(user, callback)

    error = future.exception(timeout=10)
    assert isinstance(error, FetchException) and error.status_code == 500
    assert callback.calls == [(user, {}, error)]
    assert len(stand_in.seen(VARDATA)) == 2


def test_a_callback_that_raises_is_logged_and_called_again_with_the_error(stand_in, make_client, caplog):
    stand_in.answer("POST", VARDATA, ok())
    user, callback = User(user_id="u1"), Recorder(fail_times=2)

    with caplog.at_level(logging.ERROR, logger="Amplitude"):
        variants = make_client().fetch_async_v2(user, callback).result(timeout=10)

    assert set(variants) == set(VARIANTS)
    assert len(callback.calls) == 2
    assert callback.calls[0] == (user, variants)
    assert callback.calls[1][:2] == (user, {}) and str(callback.calls[1][2]) == "callback failure 1"
    logged = [record for record in caplog.records if record.levelno == logging.ERROR and record.exc_info]
    assert [str(record.exc_info[1]) for record in logged] == ["callback failure 1", "callback failure 2"]


def test_a_two_argument_callback_is_not_lost_silently_on_failure(stand_in, make_client, caplog):
    stand_in.answer("POST", VARDATA, Answer(500))
    seen = []

    def two_args(user, variants):
        seen.append(variants)

    client = make_client(fetch_retries=1, fetch_retry_backoff_min_millis=10)
    with caplog.at_level(logging.ERROR, logger="Amplitude"):
        client.fetch_async_v2(User(user_id="u1"), two_args).exception(timeout=10)

    assert seen == []
    assert any(record.exc_info and isinstance(record.exc_info[1], TypeError) for record in caplog.records)


def test_no_callback_still_fetches(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())

    assert set(make_client().fetch_async_v2(User(user_id="u1")).result(timeout=10)) == set(VARIANTS)
    assert len(stand_in.seen(VARDATA)) == 1


def test_async_fetches_send_no_fetch_options(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())

    make_client().fetch_async_v2(User(user_id="u1")).result(timeout=10)

    assert not [name for name in stand_in.seen(VARDATA)[0].headers if name.lower().startswith("x-amp-exp")]


def test_a_user_that_cannot_be_encoded_calls_back_with_the_error_and_sends_nothing(stand_in, make_client):
    user, callback = User(user_id="u1", user_properties={"when": object()}), Recorder()

    error = make_client().fetch_async_v2(user, callback).exception(timeout=10)

    assert isinstance(error, TypeError)
    assert callback.calls == [(user, {}, error)]
    assert stand_in.seen() == []


def test_the_user_is_encoded_when_the_call_is_made(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok(delay=0.2))
    client = make_client(connection_pool_max_size=1)
    client.fetch_async_v2(User(user_id="busy"))  # holds the only worker and connection
    user = User(user_id="before")

    future = client.fetch_async_v2(user)
    user.user_id = "after"
    future.result(timeout=10)

    assert [seen.json()["user_id"] for seen in stand_in.seen(VARDATA)] == ["busy", "before"]


def test_async_fetches_share_a_bounded_pool_of_workers(roomy_stand_in, make_client):
    stand_in = roomy_stand_in
    stand_in.answer("POST", VARDATA, ok(delay=0.15))
    client = make_client(connection_pool_max_size=2)
    workers = set()

    def note_thread(user, variants):
        workers.add(threading.current_thread().name)

    futures = [client.fetch_async_v2(User(user_id="u%d" % i), note_thread) for i in range(6)]
    results = [future.result(timeout=20) for future in futures]

    assert all(set(result) == set(VARIANTS) for result in results)
    assert len(workers) <= 2 and all(name.startswith(WORKER_NAME) for name in workers)
    arrivals = sorted(seen.at for seen in stand_in.seen(VARDATA))
    assert len(arrivals) == 6
    # Two at a time: each pair arrives once the previous pair was answered.
    assert arrivals[2] - arrivals[0] >= 0.14 and arrivals[4] - arrivals[2] >= 0.14


# --- deprecated methods -------------------------------------------------------------------------

DEFAULTS = {
    "plain": {"key": "on", "value": "on"},
    "default-only": {"key": "off", "metadata": {"default": True}},
    "undeployed-only": {"key": "on", "value": "on", "metadata": {"deployed": False}},
    "default-and-undeployed": {"key": "off", "metadata": {"default": True, "deployed": False}},
    "default-and-deployed": {"key": "off", "metadata": {"default": True, "deployed": True}},
}
KEPT = {"plain", "default-only", "undeployed-only", "default-and-deployed"}


def test_fetch_warns_and_drops_default_variants_of_undeployed_flags(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok(DEFAULTS))
    client = make_client()

    with pytest.warns(DeprecationWarning, match="fetch_v2"):
        variants = client.fetch(User(user_id="u1"), FetchOptions(tracksExposure=True))

    assert set(variants) == KEPT
    assert set(client.fetch_v2(User(user_id="u1"))) == set(DEFAULTS)  # fetch_v2 filters nothing
    assert stand_in.seen(VARDATA)[0].headers["X-Amp-Exp-Exposure-Track"] == "track"


@pytest.mark.parametrize("answer, retries", [(Answer(400), 0), (Answer(500), 0), (Answer(500), 1), (Answer(200, b"?"), 1)])
def test_fetch_never_raises_and_gives_an_empty_dict_on_failure(stand_in, make_client, answer, retries):
    stand_in.answer("POST", VARDATA, answer)
    client = make_client(fetch_retries=retries, fetch_retry_backoff_min_millis=10)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert client.fetch(User(user_id="u1")) == {}
        assert client.fetch(None) == {}


def test_fetch_async_calls_back_with_three_arguments(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok(DEFAULTS))
    user, callback = User(user_id="u1"), Recorder()

    with pytest.warns(DeprecationWarning, match="fetch_async_v2"):
        future = make_client().fetch_async(user, callback)
    future.result(timeout=10)

    [(called_user, variants, error)] = callback.calls
    assert called_user is user and set(variants) == KEPT and error is None


def test_fetch_async_reports_a_rejected_request_as_an_error(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(403))
    user, callback = User(user_id="u1"), Recorder()

    with pytest.warns(DeprecationWarning):
        assert make_client().fetch_async(user, callback).result(timeout=10) == {}

    [(called_user, variants, error)] = callback.calls
    assert called_user is user and variants == {}
    assert isinstance(error, FetchException) and error.status_code == 403


def test_fetch_async_reports_exhausted_retries(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(503))
    callback = Recorder()

    with pytest.warns(DeprecationWarning):
        future = make_client(fetch_retries=1, fetch_retry_backoff_min_millis=10).fetch_async(User(user_id="u1"), callback)
    assert future.result(timeout=10) == {}

    [(_, variants, error)] = callback.calls
    assert variants == {} and isinstance(error, FetchException) and error.status_code == 503
