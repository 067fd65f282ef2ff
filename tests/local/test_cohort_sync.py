"""Cohort sync in poll mode (``cohort_sync_config``) against the stand-in's cohort endpoint."""

import base64
import logging
import time

import pytest

from amplitude_experiment import CohortSyncConfig, LocalEvaluationClient, LocalEvaluationConfig, User
from stand_in import Answer, serve_cohort
from waiting import wait_until

FLAGS_PATH = "/sdk/v2/flags"
API_KEY = "cohort-api-KEY-1234567"
SECRET = "cohort-SECRET-abcdefghij"


def cohort_flag(key, cohort_ids, op="set contains any", selector=("context", "user", "cohort_ids")):
    """A flag answering "in" when the cohort condition holds, "out" otherwise."""
    return {
        "key": key,
        "metadata": {"flagType": "release", "flagVersion": 1},
        "variants": {"in": {"key": "in", "value": "in"}, "out": {"key": "out", "value": "out"}},
        "segments": [
            {"conditions": [[{"selector": list(selector), "op": op, "values": list(cohort_ids)}]], "variant": "in"},
            {"variant": "out"},
        ],
    }


def group_flag(key, cohort_ids, group_type="org id"):
    return cohort_flag(key, cohort_ids, selector=("context", "groups", group_type, "cohort_ids"))


def client_for(server, sync=True, timeout_ms=2000, interval_ms=3_600_000, max_size=2147483647, logger=None):
    config = LocalEvaluationConfig(
        server_url=server.url, flag_source="poll", flag_config_polling_interval_millis=interval_ms,
        flag_config_poller_request_timeout_millis=timeout_ms, logger=logger,
        cohort_sync_config=CohortSyncConfig(API_KEY, SECRET, max_cohort_size=max_size,
                                            cohort_server_url=server.url) if sync else None)
    return LocalEvaluationClient("server-key-123", config)


def value(client, user, key):
    return client.evaluate_v2(user)[key].value


def test_user_and_group_cohorts_are_downloaded_and_targeted(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [
        cohort_flag("beta", ["c1"]), cohort_flag("not-beta", ["c1", "c2"], op="set does not contain any"),
        group_flag("big-orgs", ["g1"])]))
    serve_cohort(stand_in, "c1", ["alice", "bob"])
    serve_cohort(stand_in, "c2", ["carol"])
    serve_cohort(stand_in, "g1", ["acme"], group_type="org id")
    with client_for(stand_in) as client:
        client.start()
        alice = User(user_id="alice", cohort_ids=["ignored"])
        assert value(client, alice, "beta") == "in"
        assert sorted(alice.cohort_ids) == ["c1"]  # overwritten, as the reference does
        assert value(client, User(user_id="carol"), "not-beta") == "out"
        assert value(client, User(user_id="dave"), "not-beta") == "in"
        assert value(client, User(user_id="dave"), "beta") == "out"
        acme = User(user_id="x", groups={"org id": ["acme"]})
        assert value(client, acme, "big-orgs") == "in"
        assert acme.group_cohort_ids == {"org id": {"acme": ["g1"]}}
        assert value(client, User(groups={"org id": ["other"]}), "big-orgs") == "out"
        # No user id: the caller's cohort ids stay and are evaluated as given.
        assert value(client, User(device_id="d", cohort_ids=["c1"]), "beta") == "in"
        status = client.flag_source_status
        assert status["cohorts_missing"] == [] and status["cohorts_stale"] == []
        assert status["cohorts"]["c1"]["size"] == 2 and status["cohorts"]["g1"]["group_type"] == "org id"


def test_the_request_carries_the_reference_auth_header_and_query(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    script = serve_cohort(stand_in, "c1", ["alice"], last_modified=1719000000000)
    with client_for(stand_in, max_size=5000) as client:
        client.start()
        first = stand_in.seen("/sdk/v1/cohort/c1")[0]
        token = base64.b64encode(("%s:%s" % (API_KEY, SECRET)).encode()).decode()
        assert first.headers["Authorization"] == "Basic " + token
        assert first.headers["X-Amp-Exp-Library"] == "experiment-python-server/1.13.0"
        assert first.query == "maxCohortSize=5000"
        client._source.cohorts.refresh()  # the interval's refresh, now
        second = stand_in.seen("/sdk/v1/cohort/c1")[1]
        assert second.query == "maxCohortSize=5000&lastModified=1719000000000"
        script.update(["alice", "zoe"], 1719000000001)
        assert value(client, User(user_id="zoe"), "beta") == "out"
        client._source.cohorts.refresh()
        assert value(client, User(user_id="zoe"), "beta") == "in"


def test_the_refresh_thread_reloads_a_changed_cohort(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    script = serve_cohort(stand_in, "c1", ["alice"])
    with client_for(stand_in) as client:
        client.start()
        assert client._source.cohorts.interval == 60.0  # the reference's minimum, whatever was asked
        script.update(["zoe"], 2000)
        client._source.cohorts.refresh_soon()
        wait_until(lambda: value(client, User(user_id="zoe"), "beta") == "in", 10, "the changed cohort")
        assert value(client, User(user_id="alice"), "beta") == "out"


@pytest.mark.parametrize("answer, kind", [
    (Answer(202, b""), "not ready"),
    (Answer(500, b"boom"), "HTTP 500"),
    (Answer(429, b"slow down"), "429"),
    (Answer(200, b"<html>not json</html>"), "not a cohort"),
    (Answer(200, {"cohortId": "c1", "memberIds": []}), "not a cohort"),
    (Answer(200, b"", delay=3.0), "timed out"),
])
def test_a_failing_cohort_is_bounded_reported_and_flags_still_evaluate(stand_in, caplog, answer, kind):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"]), cohort_flag("plain", [])]))
    stand_in.answer("GET", "/sdk/v1/cohort/c1", answer)
    caplog.set_level(logging.DEBUG)
    with client_for(stand_in, timeout_ms=1000) as client:
        started = time.monotonic()
        client.start()
        assert time.monotonic() - started < 1000 / 1000 * 2 + 1.5  # the flag fetch and the cohort round
        assert value(client, User(user_id="alice"), "beta") == "out"
        status = client.flag_source_status
        assert status["cohorts_missing"] == ["c1"]
        assert kind in status["cohorts"]["c1"]["last_error"]
    requests = len(stand_in.seen("/sdk/v1/cohort/c1"))
    assert 1 <= requests <= 12, requests  # bounded: never the reference's endless 100 ms loop
    assert "c1" in caplog.text and kind in caplog.text
    assert SECRET not in caplog.text and API_KEY not in caplog.text


def test_a_cohort_that_recovers_is_loaded_on_the_backoff(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    stand_in.answer("GET", "/sdk/v1/cohort/c1", Answer(500, b"down"), Answer(500, b"down"), Answer(500, b"down"),
                    Answer(200, {"cohortId": "c1", "groupType": "User", "lastModified": 5, "size": 1,
                                 "memberIds": ["alice"]}))
    with client_for(stand_in) as client:
        client.start()
        assert client.flag_source_status["cohorts_missing"] == ["c1"]
        wait_until(lambda: value(client, User(user_id="alice"), "beta") == "in", 10, "the retried cohort")
        assert client.flag_source_status["cohorts_missing"] == []


def test_a_cohort_larger_than_the_maximum_is_skipped_with_a_clear_log(stand_in, caplog):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["big", "small"])]))
    serve_cohort(stand_in, "big", ["u%d" % i for i in range(20)])
    serve_cohort(stand_in, "small", ["alice"])
    with client_for(stand_in, max_size=10) as client:
        client.start()
        assert value(client, User(user_id="u1"), "beta") == "out"
        assert value(client, User(user_id="alice"), "beta") == "in"
        status = client.flag_source_status
        assert status["cohorts_missing"] == ["big"]
        assert "larger than the maximum cohort size of 10" in status["cohorts"]["big"]["last_error"]
    assert len(stand_in.seen("/sdk/v1/cohort/big")) == 1  # 413 is final for this round
    assert any(r.levelno == logging.ERROR and "big" in r.getMessage() for r in caplog.records)


def test_an_unreachable_cohort_host_does_not_hang_start(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    config = LocalEvaluationConfig(
        server_url=stand_in.url, flag_source="poll", flag_config_poller_request_timeout_millis=1000,
        cohort_sync_config=CohortSyncConfig(API_KEY, SECRET, cohort_server_url="http://127.0.0.1:9"))
    with LocalEvaluationClient("server-key-123", config) as client:
        started = time.monotonic()
        client.start()
        assert time.monotonic() - started < 4
        assert client.flag_source_status["cohorts_missing"] == ["c1"]
        assert value(client, User(user_id="alice"), "beta") == "out"


def test_cohorts_no_flag_references_are_dropped_and_new_ones_loaded_before_the_flags(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]),
                    Answer(200, [cohort_flag("beta", ["c2"])]))
    serve_cohort(stand_in, "c1", ["alice"])
    serve_cohort(stand_in, "c2", ["bob"])
    with client_for(stand_in, interval_ms=100) as client:
        client.start()
        assert value(client, User(user_id="alice"), "beta") == "in"
        wait_until(lambda: list(client.flag_source_status["cohorts"]) == ["c2"], 10, "the second config")
        # The first evaluation with the new flags already sees c2 (downloaded before they were installed).
        assert value(client, User(user_id="bob"), "beta") == "in"
        assert client._source.cohorts.store.ids() == {"c2"}


def test_without_cohort_sync_the_callers_cohort_ids_are_used_and_nothing_is_downloaded(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    serve_cohort(stand_in, "c1", ["alice"])
    with client_for(stand_in, sync=False) as client:
        client.start()
        assert value(client, User(user_id="alice"), "beta") == "out"
        assert value(client, User(user_id="x", cohort_ids=["c1"]), "beta") == "in"
        assert client.flag_source_status["cohorts"] is None
    assert stand_in.seen("/sdk/v1/cohort/c1") == []


def test_eu_zone_switches_the_default_cohort_host():
    from amplitude_experiment import ServerZone

    sync = CohortSyncConfig(API_KEY, SECRET)
    LocalEvaluationConfig(server_zone=ServerZone.EU, cohort_sync_config=sync)
    assert sync.cohort_server_url == "https://cohort-v2.lab.eu.amplitude.com"


def test_cohorts_are_targeted_when_the_flags_come_from_the_stream(stand_in):
    """stream_updates=True: the streamed flags go through the same cohort sync as polled ones."""
    from stand_in import Answer as StreamAnswer

    body = "data: %s\n\n" % __import__("json").dumps([cohort_flag("beta", ["c1"])])
    stand_in.answer("GET", "/sdk/stream/v1/flags", StreamAnswer(200, body.encode(), headers={
        "Content-Type": "text/event-stream"}, declare_length=False))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    serve_cohort(stand_in, "c1", ["alice"])
    config = LocalEvaluationConfig(
        server_url=stand_in.url, stream_server_url=stand_in.url, stream_updates=True, flag_source="poll",
        flag_config_poller_request_timeout_millis=2000,
        cohort_sync_config=CohortSyncConfig(API_KEY, SECRET, cohort_server_url=stand_in.url))
    with LocalEvaluationClient("server-key-123", config) as client:
        client.start()
        assert value(client, User(user_id="alice"), "beta") == "in"
        assert value(client, User(user_id="bob"), "beta") == "out"
        assert client.flag_source_status["cohorts_missing"] == []


def test_a_client_started_before_fork_targets_cohorts_in_the_child(stand_in):
    """gunicorn preload_app: the child evaluates with the parent's cohorts and refreshes its own."""
    import os

    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    script = serve_cohort(stand_in, "c1", ["alice"])
    with client_for(stand_in) as client:
        client.start()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running the parent's cleanup
            try:
                ok = value(client, User(user_id="alice"), "beta") == "in"
                script.update(["zoe"], 2000)  # the stand-in lives in the parent; this only edits the copy
                client._source.cohorts.refresh()
                result = b"ok" if ok and client.flag_source_status["cohorts_missing"] == [] else b"bad"
            except BaseException as error:  # report anything to the parent
                result = repr(error).encode()
            os.write(write_end, result)
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            outcome = reader.read()
        os.waitpid(pid, 0)
        assert outcome == b"ok"
        assert len(stand_in.seen("/sdk/v1/cohort/c1")) == 2  # the child's refresh used its own connection


def test_a_rate_limited_cohort_is_asked_once_then_on_the_backoff(stand_in):
    """429 means "slow down": the download ends at once (the refresh thread's backoff asks again
    later), instead of asking ten times a second until the request timeout."""
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [cohort_flag("beta", ["c1"])]))
    stand_in.answer("GET", "/sdk/v1/cohort/c1", Answer(429, b"slow down"))
    with client_for(stand_in, timeout_ms=2000) as client:
        client.start()
        assert len(stand_in.seen("/sdk/v1/cohort/c1")) == 1
        status = client.flag_source_status
        assert status["cohorts_missing"] == ["c1"] and "429" in status["cohorts"]["c1"]["last_error"]


class _BlockingFetcher:
    """A cohort fetcher whose downloads wait until released; counts the downloads per cohort."""

    requests = 0

    def __init__(self):
        import threading

        self.release = threading.Event()
        self.calls = {}
        self.active = 0
        self._lock = threading.Lock()

    def download(self, cohort_id, last_modified=None):
        from amplitude_experiment._cohort_api import CohortDownloadError

        with self._lock:
            self.calls[cohort_id] = self.calls.get(cohort_id, 0) + 1
            self.active += 1
        try:
            self.release.wait(30)
            raise CohortDownloadError("transport", "no answer")
        finally:
            with self._lock:
                self.active -= 1

    def forget_sessions(self):
        pass


def test_a_round_that_runs_out_of_time_leaves_no_backlog(stand_in):
    """A cohort host that does not answer: each round waits its time limit and ends. Downloads
    it never started must not start later, and a cohort still in flight is not asked again beside
    it: otherwise every retry round queues another download per cohort, the queue grows while the
    host is down, and the process's exit waits for all of them."""
    from types import SimpleNamespace

    from amplitude_experiment.local import _cohort_sync

    fetcher = _BlockingFetcher()
    sync = _cohort_sync.CohortSync(CohortSyncConfig(API_KEY, SECRET), 0.1, logging.getLogger("test"), fetcher=fetcher)
    ids = ["c%02d" % i for i in range(_cohort_sync.DOWNLOAD_THREADS + 4)]
    flags = SimpleNamespace(cohort_refs={"User": tuple(ids)})
    try:
        sync.prepare(flags)  # the round ends at its time limit, every thread busy, 4 cohorts queued
        sync.installed(flags)
        sync.refresh(full=False)  # the backoff's retry round, while the first downloads still hang
        assert fetcher.calls and all(count == 1 for count in fetcher.calls.values()), fetcher.calls
    finally:
        fetcher.release.set()
        wait_until(lambda: fetcher.active == 0, 10, "the hanging downloads to end")
        sync.stop()
    assert all(count == 1 for count in fetcher.calls.values()), fetcher.calls


def test_a_download_that_ends_after_its_cohort_was_dropped_does_not_bring_it_back(stand_in):
    """A download still in flight when a new flag config stops naming its cohort: the cohort
    stays dropped (a million ids no flag needs are not held until the next config change)."""
    from types import SimpleNamespace

    from amplitude_experiment._cohort_api import Cohort
    from amplitude_experiment.local import _cohort_sync

    class SlowFetcher(_BlockingFetcher):
        def download(self, cohort_id, last_modified=None):
            with self._lock:
                self.active += 1
            try:
                self.release.wait(30)
                return Cohort(cohort_id, "User", 1, 1, frozenset(["alice"]))
            finally:
                with self._lock:
                    self.active -= 1

    fetcher = SlowFetcher()
    sync = _cohort_sync.CohortSync(CohortSyncConfig(API_KEY, SECRET), 0.1, logging.getLogger("test"), fetcher=fetcher)
    with_c1, without = SimpleNamespace(cohort_refs={"User": ("c1",)}), SimpleNamespace(cohort_refs={})
    try:
        sync.prepare(with_c1)  # the round ends at its time limit, the download still in flight
        sync.installed(with_c1)
        sync.prepare(without)
        sync.installed(without)
    finally:
        fetcher.release.set()
        wait_until(lambda: fetcher.active == 0, 10, "the download to end")
        sync.stop()
    assert sync.store.get("c1") is None
    assert sync.cohorts_containing("User", "alice", ["c1"]) == []


def test_a_retry_gets_only_the_time_left_of_the_download(stand_in):
    """A retry that starts just before the download's time limit is cut at the limit, instead of
    getting a whole request timeout of its own (a download could take twice the timeout)."""
    from amplitude_experiment._cohort_api import CohortDownloadError, CohortFetcher

    cohort = {"cohortId": "c1", "groupType": "User", "lastModified": 5, "size": 1, "memberIds": ["alice"]}
    stand_in.answer("GET", "/sdk/v1/cohort/c1", Answer(500, b"busy", delay=0.85), Answer(200, cohort, delay=0.5))
    fetcher = CohortFetcher(stand_in.url, API_KEY, SECRET, timeout_s=1.0)
    with pytest.raises(CohortDownloadError):
        fetcher.download("c1")  # the retry at about 0.95 s has 0.05 s left, the answer takes 0.5 s


def test_stop_drops_the_downloads_not_started(stand_in):
    """``client.stop()`` while a round waits on a cohort host that does not answer: the downloads
    queued behind the busy threads never start (the process's exit would wait for each)."""
    import threading
    from types import SimpleNamespace

    from amplitude_experiment.local import _cohort_sync

    fetcher = _BlockingFetcher()
    sync = _cohort_sync.CohortSync(CohortSyncConfig(API_KEY, SECRET), 5.0, logging.getLogger("test"), fetcher=fetcher)
    flags = SimpleNamespace(cohort_refs={"User": tuple("c%02d" % i for i in range(_cohort_sync.DOWNLOAD_THREADS + 4))})
    round_thread = threading.Thread(target=sync.prepare, args=(flags,), daemon=True)
    round_thread.start()
    try:
        wait_until(lambda: fetcher.active == _cohort_sync.DOWNLOAD_THREADS, 10, "every download thread busy")
        sync.stop()
    finally:
        fetcher.release.set()
        round_thread.join(10)
        wait_until(lambda: fetcher.active == 0, 10, "the downloads to end")
    assert sum(fetcher.calls.values()) == _cohort_sync.DOWNLOAD_THREADS
