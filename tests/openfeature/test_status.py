"""Provider status and events: READY, STALE, READY again, CONFIGURATION_CHANGED; poll mode against
the stand-in, shared mode against SnapshotWriter and a real flagd process; a pre-fork set-up."""

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

import pytest
from forking import reap, run_in_child
from openfeature_kit import FLAGS_PATH, KEY, all_users, set_provider_and_wait, typed_flags
from openfeature import api
from openfeature.event import ProviderEvent
from openfeature.provider import ProviderStatus
from stand_in import Answer

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig
from amplitude_experiment.openfeature import AmplitudeProvider
from amplitude_experiment.snapshot import SnapshotWriter
from waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOGGER = logging.getLogger("test.openfeature")
READY, STALE, CHANGED, ERROR = (ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_STALE,
                                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ProviderEvent.PROVIDER_ERROR)


def marker(value: str) -> Dict[str, Any]:
    return all_users("marker", {"key": value, "value": value})


def document(*flags: Dict[str, Any], interval_ms: int = 1000) -> Dict[str, Any]:
    return {"flags": list(flags), "source": "test", "fetched_at_ns": time.time_ns(), "flag_count": len(flags),
            "poll_interval_ms": interval_ms}


def shared_client(shm_prefix: str, key: str = KEY) -> LocalEvaluationClient:
    return LocalEvaluationClient(key, LocalEvaluationConfig(
        flag_source="flagd", shm_prefix=shm_prefix, server_url="http://127.0.0.1:9",
        flag_config_poller_request_timeout_millis=5000, logger=LOGGER))


def status_after_resolving(of: Any) -> ProviderStatus:
    """Status is found on the evaluation path: resolve once, then read it."""
    of.get_string_value("marker", "none")
    return of.get_provider_status()


class WallClock:
    """The writer's clock: real time plus an offset the test moves to age the heartbeat."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def __call__(self) -> int:
        return time.time_ns() + self.offset_ns


# --- poll mode --------------------------------------------------------------------------------


def test_poll_mode_ready_stale_ready_and_configuration_changed(stand_in, events):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("a")]))
    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(
        flag_source="poll", server_url=stand_in.url, flag_config_polling_interval_millis=50,
        flag_config_poller_request_timeout_millis=2000, logger=LOGGER))
    # Only the failure count decides here: the age rule is the next test's.
    set_provider_and_wait(AmplitudeProvider(client, status_check_seconds=0, stale_intervals=1000))
    of = api.get_client()
    assert of.get_provider_status() == ProviderStatus.READY
    events.wait_for(READY)

    polls = len(stand_in.wait_for(4, FLAGS_PATH))  # the same body again: not a new configuration
    stand_in.wait_for(polls + 2, FLAGS_PATH)
    assert of.get_string_value("marker", "none") == "a" and CHANGED not in events.kinds()

    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("b"), all_users("new", {"key": "on"})]))
    wait_until(lambda: of.get_string_value("marker", "none") == "b", 10, "the new config")
    changed = events.wait_for(CHANGED)
    assert changed.flags_changed == ["marker", "new"]

    stand_in.answer("GET", FLAGS_PATH, Answer(503, b"down"))  # polling keeps failing
    wait_until(lambda: status_after_resolving(of) == ProviderStatus.STALE, 10, "STALE")
    failures, _, rest = events.wait_for(STALE).message.partition(" ")
    assert int(failures) >= 3 and rest.startswith("flag config polls in a row failed")
    assert of.get_string_details("marker", "none").value == "b"  # the last good flags keep serving

    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("b"), all_users("new", {"key": "on"})]))
    wait_until(lambda: status_after_resolving(of) == ProviderStatus.READY, 10, "READY again")
    events.wait_for(READY, 2)
    assert events.kinds() == [READY, CHANGED, STALE, READY]


def test_poll_mode_goes_stale_when_no_poll_succeeds_for_three_intervals(stand_in, events):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("a")]))
    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(
        flag_source="poll", server_url=stand_in.url, flag_config_polling_interval_millis=50,
        flag_config_poller_request_timeout_millis=2000, logger=LOGGER))
    set_provider_and_wait(AmplitudeProvider(client, status_check_seconds=0))
    of = api.get_client()
    client.stop()  # the poller stops; the client keeps serving its flags
    wait_until(lambda: status_after_resolving(of) == ProviderStatus.STALE, 10, "STALE")
    assert events.wait_for(STALE).message.startswith("the last successful flag config poll was")
    assert of.get_string_value("marker", "none") == "a"


# --- shared mode: SnapshotWriter --------------------------------------------------------------


def test_shared_mode_stale_heartbeat_recovery_and_new_versions(shm_prefix, events):
    clock = WallClock()
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000, clock_ns=clock) as writer:
        writer.publish(document(marker("a")))
        provider = AmplitudeProvider(shared_client(shm_prefix), status_check_seconds=0)
        set_provider_and_wait(provider)
        of = api.get_client()
        assert status_after_resolving(of) == ProviderStatus.READY
        threads = set(threading.enumerate())

        clock.offset_ns = -10 * 10**9  # the last heartbeat was 10 s ago: more than 3 intervals of 1 s
        writer.heartbeat()
        assert status_after_resolving(of) == ProviderStatus.STALE
        assert "heartbeat is 10." in events.wait_for(STALE).message
        assert of.get_string_value("marker", "none") == "a"

        clock.offset_ns = 0
        writer.heartbeat()
        assert status_after_resolving(of) == ProviderStatus.READY

        writer.publish(document(marker("b"), all_users("other", {"key": "on"})))
        assert of.get_string_value("marker", "none") == "b"  # the very next resolution
        assert events.wait_for(CHANGED).flags_changed == ["marker", "other"]
        writer.publish(document(marker("b"), all_users("other", {"key": "on"})))  # a version, same flags
        assert of.get_string_value("marker", "none") == "b"
        assert events.wait_for(CHANGED, 2).flags_changed == []
        events.wait_for(READY, 2)
        assert events.kinds() == [READY, STALE, READY, CHANGED, CHANGED]
        # No thread of the provider's own (OpenFeature runs event handlers on its own pool).
        assert {t for t in threading.enumerate() if not t.name.startswith("openfeature")} <= threads


def test_status_is_read_at_most_once_per_check_interval(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as writer:
        writer.publish(document(marker("a")))
        client = shared_client(shm_prefix)
        provider = AmplitudeProvider(client, status_check_seconds=60)
        set_provider_and_wait(provider)
        reads: List[int] = []
        real = type(client).flag_source_status

        class Counting(type(client)):
            @property
            def flag_source_status(self) -> Dict[str, Any]:
                reads.append(1)
                return real.fget(self)

        client.__class__ = Counting
        of = api.get_client()
        for _ in range(1000):
            of.get_string_value("marker", "none")
        assert len(reads) <= 1


# --- shared mode: a real flagd ----------------------------------------------------------------


class FlagdProcess:
    def __init__(self, prefix: str, key: str, flags_file: str, log_path: str):
        self.args = [sys.executable, "-m", "flagd", "run", "--shm-prefix", prefix, "--flags-file", flags_file,
                     "--poll-interval-ms", "100"]
        self.env = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=key)
        self.log_path = log_path
        self.process: Any = None

    def start(self) -> "FlagdProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=log)
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.mark.multiprocess
def test_flagd_killed_goes_stale_and_comes_back_ready(shm_prefix, tmp_path, events):
    key = KEY + "-flagd-" + shm_prefix
    flags_file = tmp_path / "flags.json"
    flags_file.write_text(json.dumps([marker("a")]))
    daemons = [FlagdProcess(shm_prefix, key, str(flags_file), str(tmp_path / "flagd.log")).start()]
    try:
        client = shared_client(shm_prefix, key)
        set_provider_and_wait(AmplitudeProvider(client, status_check_seconds=0))
        of = api.get_client()
        assert status_after_resolving(of) == ProviderStatus.READY

        daemons[0].kill()  # its heartbeat (every 100 ms) stops: stale after 3 intervals
        wait_until(lambda: status_after_resolving(of) == ProviderStatus.STALE, 10, "STALE after flagd died")
        assert "is flagd running?" in events.wait_for(STALE).message
        assert of.get_string_value("marker", "none") == "a"

        daemons.append(FlagdProcess(shm_prefix, key, str(flags_file), str(tmp_path / "flagd.log")).start())
        wait_until(lambda: status_after_resolving(of) == ProviderStatus.READY, 20, "READY after flagd restarted")

        flags_file.write_text(json.dumps([marker("b")]))
        wait_until(lambda: of.get_string_value("marker", "none") == "b", 20, "the edited flags file")
        try:
            changed = events.wait_for(CHANGED, timeout=10)
        except AssertionError as error:  # say what flagd did, should this ever fail
            raise AssertionError("%s; events %s; flagd log:\n%s" % (
                error, [(k, d.message, d.flags_changed) for k, d in events.seen],
                (tmp_path / "flagd.log").read_text()[-3000:])) from None
        assert changed.flags_changed[-1:] == ["marker"]
        kinds = events.kinds()
        assert kinds[:3] == [READY, STALE, READY] and kinds[-1] == CHANGED
    finally:
        for daemon in daemons:
            daemon.cleanup()


# --- pre-fork ---------------------------------------------------------------------------------


def child_resolves(go: Any) -> Any:
    """The body of a forked worker: resolve, wait for the parent's change (a message on ``go``, a pipe
    of this child's own), resolve until it shows."""

    def body(send: Any) -> None:
        of = api.get_client()
        first = of.get_string_details("marker", "none")
        send.send(("first", first.value, first.reason, str(of.get_provider_status())))
        assert go.poll(15)
        go.recv()
        deadline = time.monotonic() + 10
        while of.get_string_value("marker", "none") != "b" and time.monotonic() < deadline:
            time.sleep(0.005)
        send.send(("after", of.get_string_value("marker", "none"), str(of.get_provider_status())))

    return body


@pytest.mark.multiprocess
def test_provider_set_up_before_fork_resolves_in_children_shared_mode(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as writer:
        writer.publish(document(marker("a")))
        set_provider_and_wait(AmplitudeProvider(shared_client(shm_prefix)))  # the preloading master
        assert api.get_client().get_string_value("marker", "none") == "a"
        pipes = [multiprocessing.Pipe(duplex=False) for _ in range(2)]
        children = [run_in_child(child_resolves(go_recv)) for go_recv, _ in pipes]
        for recv, _ in children:
            assert recv.poll(15)
            assert recv.recv() == ("first", "a", "TARGETING_MATCH", "ProviderStatus.READY")
        writer.publish(document(marker("b")))  # after the fork, in the parent
        for _, go_send in pipes:
            go_send.send("published")
        for recv, pid in children:
            assert recv.poll(15)
            assert recv.recv() == ("after", "b", "ProviderStatus.READY")
            assert reap(pid) == 0


@pytest.mark.multiprocess
def test_provider_set_up_before_fork_resolves_in_children_poll_mode(stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("a")] + typed_flags()))
    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(
        flag_source="poll", server_url=stand_in.url, flag_config_polling_interval_millis=200,
        flag_config_poller_request_timeout_millis=2000, logger=LOGGER))
    # Not a staleness test: a child's poller first polls one interval after its first resolution,
    # which on a loaded machine could exceed three short intervals.
    set_provider_and_wait(AmplitudeProvider(client, stale_intervals=50))
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(2)]
    children = [run_in_child(child_resolves(go_recv)) for go_recv, _ in pipes]
    for recv, _ in children:
        assert recv.poll(15)
        assert recv.recv() == ("first", "a", "TARGETING_MATCH", "ProviderStatus.READY")
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("b")] + typed_flags()))
    for _, go_send in pipes:
        go_send.send("changed")
    for recv, pid in children:
        assert recv.poll(15)
        assert recv.recv() == ("after", "b", "ProviderStatus.READY")  # each child polls for itself
        assert reap(pid) == 0


def test_flagd_mode_without_a_snapshot_is_an_error_until_one_is_published(shm_prefix, events):
    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(
        flag_source="flagd", shm_prefix=shm_prefix, flag_config_poller_request_timeout_millis=100, logger=LOGGER))
    set_provider_and_wait(AmplitudeProvider(client, status_check_seconds=0))
    of = api.get_client()
    assert of.get_provider_status() == ProviderStatus.ERROR
    assert "no flagd snapshot" in events.wait_for(ERROR).message
    assert of.get_string_details("marker", "none").error_code == "PROVIDER_NOT_READY"
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as writer:
        writer.publish(document(marker("a")))
        # The client looks for the snapshot about once a second, on the evaluation path.
        wait_until(lambda: of.get_string_value("marker", "none") == "a", 10, "the late snapshot")
        assert of.get_provider_status() == ProviderStatus.READY
        events.wait_for(READY)
        assert events.kinds() == [ERROR, READY]


def test_threads_resolving_during_new_versions_see_one_event_per_version(shm_prefix, events):
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as writer:
        writer.publish(document(marker("v0")))
        set_provider_and_wait(AmplitudeProvider(shared_client(shm_prefix)))
        of = api.get_client()
        stop = threading.Event()
        failures: List[Any] = []

        def resolve_until_stopped() -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                details = of.get_string_details("marker", "none")
                if details.error_code is not None:
                    failures.append(details)

        threads = [threading.Thread(target=resolve_until_stopped) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for version in range(1, 6):
                writer.publish(document(marker("v%d" % version)))
                wait_until(lambda: of.get_string_value("marker", "none") == "v%d" % version, 3, "v%d" % version)
                events.wait_for(CHANGED, version)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert failures == []
        assert events.kinds().count(CHANGED) == 5
        assert of.get_provider_status() == ProviderStatus.READY


def test_auto_mode_switching_from_polling_to_the_snapshot_is_a_configuration_change(shm_prefix, stand_in, events):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [marker("polled")]))
    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(
        flag_source="auto", shm_prefix=shm_prefix, server_url=stand_in.url,
        flag_config_poller_request_timeout_millis=2000, logger=LOGGER))
    set_provider_and_wait(AmplitudeProvider(client, status_check_seconds=0))
    of = api.get_client()
    assert of.get_string_value("marker", "none") == "polled"
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as writer:
        writer.publish(document(marker("shared")))
        # The auto source looks for a snapshot about once a second, on the evaluation path.
        wait_until(lambda: of.get_string_value("marker", "none") == "shared", 10, "the switch to the snapshot")
        assert events.wait_for(CHANGED).flags_changed == ["marker"]
        assert client.flag_source_status["source"] == "flagd"
        assert status_after_resolving(of) == ProviderStatus.READY
        assert events.kinds() == [READY, CHANGED]
