"""The standalone flag source against a stand-in for Amplitude's flags endpoint."""

import json
import logging
import os
import time

import pytest

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from stand_in import Answer

FLAGS_PATH = "/sdk/v2/flags"


def flag(key, value="on", user_id=None, dependencies=None):
    """A flag that answers `value` (for `user_id` only, when given) and "off" otherwise."""
    segments = []
    if user_id is not None:
        segments.append({
            "conditions": [[{"selector": ["context", "user", "user_id"], "op": "is", "values": [user_id]}]],
            "variant": value,
        })
    else:
        segments.append({"variant": value})
    segments.append({"variant": "off"})
    config = {
        "key": key,
        "metadata": {"flagType": "release", "flagVersion": 1},
        "variants": {value: {"key": value, "value": value}, "off": {"key": "off", "metadata": {"default": True}}},
        "segments": segments,
    }
    if dependencies:
        config["dependencies"] = dependencies
    return config


def client_for(server, interval_ms=60000, timeout_ms=2000):
    config = LocalEvaluationConfig(
        server_url=server.url,
        flag_source="poll",
        flag_config_polling_interval_millis=interval_ms,
        flag_config_poller_request_timeout_millis=timeout_ms,
    )
    return LocalEvaluationClient("server-key-123", config)


def keys_and_values(variants):
    return {key: variant.value for key, variant in variants.items()}


def test_start_fetches_with_the_reference_headers_and_evaluates(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", user_id="u1")]))
    with client_for(stand_in) as client:
        client.start()
        assert keys_and_values(client.evaluate_v2(User(user_id="u1"))) == {"a": "on"}
        assert keys_and_values(client.evaluate_v2(User(user_id="u2"))) == {"a": None}
    request = stand_in.seen(FLAGS_PATH)[0]
    assert request.method == "GET"
    assert request.query == "v=0"
    assert request.headers["Authorization"] == "Api-Key server-key-123"
    assert request.headers["Content-Type"] == "application/json;charset=utf-8"
    assert request.headers["X-Amp-Exp-Library"] == "experiment-python-server/1.13.0"


def test_evaluate_before_start_returns_nothing(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a")]))
    client = client_for(stand_in)
    assert client.evaluate_v2(User(user_id="u1")) == {}
    assert stand_in.seen(FLAGS_PATH) == []


def test_polls_at_the_interval_and_picks_up_changes(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]), Answer(200, [flag("a", "v2")]))
    with client_for(stand_in, interval_ms=50) as client:
        client.start()
        assert keys_and_values(client.evaluate_v2(User())) == {"a": "v1"}
        stand_in.wait_for(3, FLAGS_PATH)
        assert keys_and_values(client.evaluate_v2(User())) == {"a": "v2"}
    arrivals = [request.at for request in stand_in.seen(FLAGS_PATH)]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= 0.04, gaps


@pytest.mark.parametrize(
    "bad_answer, logged",
    [
        (Answer(500, "upstream broke"), "HTTP 500: upstream broke"),
        (Answer(200, "<html>not json"), "not JSON"),
        (Answer(200, {"flags": []}), "must be a JSON array"),
        (Answer(200, [flag("good"), {"key": "broken", "variants": {}, "segments": None}]), "flag 'broken': segments"),
        (Answer(200, [flag("a", "v1")], delay=1.0), "timed out"),
    ],
    ids=["status", "garbage", "not-a-list", "invalid-flag", "slow"],
)
def test_a_failed_poll_keeps_the_last_good_flags_and_says_why(stand_in, caplog, bad_answer, logged):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]), bad_answer)
    with client_for(stand_in, interval_ms=20, timeout_ms=300) as client:
        with caplog.at_level(logging.ERROR, logger="Amplitude"):
            client.start()
            stand_in.wait_for(3, FLAGS_PATH)
            assert keys_and_values(client.evaluate_v2(User())) == {"a": "v1"}
    failures = [record.getMessage() for record in caplog.records if "poll failed" in record.getMessage()]
    assert failures and logged in failures[0], failures
    assert "server-key-123" not in caplog.text


def test_failures_back_off_instead_of_retrying_in_a_tight_loop(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a")]), Answer(503, "busy"))
    with client_for(stand_in, interval_ms=10) as client:
        client.start()
        stand_in.wait_for(4, FLAGS_PATH, timeout=10)
    arrivals = [request.at for request in stand_in.seen(FLAGS_PATH)]
    # The interval (10 ms) caps the backoff, so retries come no faster than the interval; the
    # reference retried with no delay at all (quirk Q4).
    retry_gaps = [later - earlier for earlier, later in zip(arrivals[1:], arrivals[2:])]
    assert all(gap >= 0.007 for gap in retry_gaps), retry_gaps


def test_backoff_grows_when_the_interval_is_long(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(503, "down"))
    client = client_for(stand_in, interval_ms=60000)
    client.start()  # does not raise: the failure is logged and retried
    try:
        stand_in.wait_for(3, FLAGS_PATH, timeout=10)
    finally:
        client.stop()
    first, second, third = [request.at for request in stand_in.seen(FLAGS_PATH)][:3]
    assert 0.35 <= second - first <= 0.6
    assert 0.75 <= third - second <= 1.2


def test_a_first_fetch_that_fails_is_retried_until_flags_arrive(stand_in, caplog):
    stand_in.answer("GET", FLAGS_PATH, Answer(500, "down"), Answer(200, [flag("a")]))
    with client_for(stand_in, interval_ms=60000) as client:
        with caplog.at_level(logging.ERROR, logger="Amplitude"):
            client.start()
        assert client.evaluate_v2(User()) == {}
        assert "poll failed" in caplog.text
        stand_in.wait_for(2, FLAGS_PATH, timeout=5)
        deadline = time.monotonic() + 5
        while client.evaluate_v2(User()) == {} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keys_and_values(client.evaluate_v2(User())) == {"a": "on"}


def test_stop_ends_polling(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a")]))
    client = client_for(stand_in, interval_ms=20)
    client.start()
    stand_in.wait_for(2, FLAGS_PATH)
    client.stop()
    count = len(stand_in.seen(FLAGS_PATH))
    thread = client._source._thread
    assert thread is None or not thread.is_alive()
    assert len(stand_in.seen(FLAGS_PATH)) == count
    assert keys_and_values(client.evaluate_v2(User())) == {"a": "on"}  # still serves the last flags


def test_storage_order_follows_the_reference(stand_in):
    """Flags already held keep their position, new ones are appended (docs/compatibility.md, 'Storage order')."""
    first = [flag("a"), flag("b"), flag("c")]
    second = [flag("d"), flag("c"), flag("a")]
    stand_in.answer("GET", FLAGS_PATH, Answer(200, first), Answer(200, second))
    with client_for(stand_in, interval_ms=20) as client:
        client.start()
        assert list(client.evaluate_v2(User())) == ["a", "b", "c"]
        stand_in.wait_for(2, FLAGS_PATH)
        deadline = time.monotonic() + 5
        while "d" not in client.evaluate_v2(User()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(client.evaluate_v2(User())) == ["a", "c", "d"]


def test_status_reports_freshness(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a"), flag("b")]))
    with client_for(stand_in) as client:
        client.start()
        status = client.flag_source_status
    assert status["source"] == "poll"
    assert status["flags"] == 2
    assert status["consecutive_failures"] == 0
    assert 0 <= status["age_seconds"] < 60


@pytest.mark.parametrize("url", ["api.lab.amplitude.com", "ftp://host", ""])
def test_a_server_url_that_is_not_http_is_refused_at_construction(url):
    with pytest.raises(ValueError, match="server_url"):
        LocalEvaluationClient("key", LocalEvaluationConfig(server_url=url, flag_source="poll"))


def test_empty_key_is_refused():
    with pytest.raises(ValueError, match="API key is empty"):
        LocalEvaluationClient("")


@pytest.mark.multiprocess
def test_a_client_started_before_fork_keeps_polling_in_the_child(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    with client_for(stand_in, interval_ms=30) as client:
        client.start()
        before_fork = len(stand_in.seen(FLAGS_PATH))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: wait for the new config through the restarted poller
            os.close(read_end)
            outcome = "timeout"
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    value = client.evaluate_v2(User())["a"].value
                    if value == "v2":
                        outcome = "v2"
                        break
                    time.sleep(0.01)
            except BaseException as error:  # report, never let the child run the parent's tests
                outcome = repr(error)
            os.write(write_end, outcome.encode())
            os._exit(0)
        os.close(write_end)
        stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v2")]))
        with os.fdopen(read_end, "rb") as pipe:
            outcome = pipe.read().decode()
        os.waitpid(pid, 0)
    assert outcome == "v2"
    assert len(stand_in.seen(FLAGS_PATH)) > before_fork


def test_unknown_fields_in_a_config_are_ignored(stand_in):
    config = flag("a")
    config["somethingNew"] = {"x": 1}
    config["segments"][0]["futureField"] = True
    config["variants"]["on"]["extra"] = [1, 2]
    stand_in.answer("GET", FLAGS_PATH, Answer(200, json.loads(json.dumps([config]))))
    with client_for(stand_in) as client:
        client.start()
        assert keys_and_values(client.evaluate_v2(User())) == {"a": "on"}


@pytest.mark.parametrize("flag_source", ["poll", "auto"])
def test_forks_while_polls_fail_never_leave_a_child_hanging(stand_in, tmp_path, shm_prefix, flag_source):
    """Issue 10, item 6: a fork landing while the poller thread logs must not copy a held stream lock."""
    import subprocess
    import sys

    stand_in.answer("GET", FLAGS_PATH, Answer(503, "down"))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fork_while_polling.py")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(root, "sdk"), root]))
    with open(str(tmp_path / "stderr"), "wb") as stderr:
        completed = subprocess.run([sys.executable, script, stand_in.url, "300", "5", flag_source, shm_prefix],
                                   env=env, stdout=subprocess.PIPE, stderr=stderr, timeout=300, check=True)
    hung, polls = (int(word) for word in completed.stdout.split())
    assert polls > 100  # the poller kept failing (and logging) while the forks went on
    assert hung == 0


def test_a_trickling_answer_is_cut_at_the_request_timeout(stand_in):
    """Issue 10, item 5: a server sending a byte every 20 ms never trips a per-read timeout of 300 ms."""
    stand_in.answer("GET", FLAGS_PATH, Answer(200, b"[" + b" " * 200 + b"]", trickle=0.02))
    with client_for(stand_in, interval_ms=60000, timeout_ms=300) as client:
        client.start()
        status = client._source.status()
    assert status["consecutive_failures"] == 1 and "timed out" in status["last_error"], status


def test_an_error_page_echoing_the_key_is_redacted_in_the_poll_error(stand_in, caplog):
    """Issue 10, item 3: the poller's error holds no 8-character run of the deployment key."""
    key = "server-key-123"
    head = "<html>" + "x" * 100 + " Authorization: Api-Key "
    stand_in.answer("GET", FLAGS_PATH, Answer(502, head + "y" * (200 - len(head) - len(key) + 2) + key))
    with caplog.at_level(logging.ERROR, logger="Amplitude"):
        with client_for(stand_in) as client:
            client.start()
    assert not any(key[i:i + 8] in caplog.text for i in range(len(key) - 7)), caplog.text
    assert "HTTP 502" in caplog.text


def test_a_poll_that_changes_one_flag_compiles_one_flag(stand_in):
    first = [flag("f%d" % n) for n in range(30)]
    second = list(first)
    second[4] = flag("f4", "v2")
    stand_in.answer("GET", FLAGS_PATH, Answer(200, first), Answer(200, second))
    with client_for(stand_in, interval_ms=50) as client:
        client.start()
        assert client.flag_source_status["flags_compiled"] == 30  # validating is compiling, once
        assert len(client.evaluate_v2(User())) == 30
        stand_in.wait_for(3, FLAGS_PATH)
        assert client.evaluate_v2(User(), ["f4"])["f4"].value == "v2"
        assert len(client.evaluate_v2(User())) == 30
        assert client.flag_source_status["flags_compiled"] == 31
