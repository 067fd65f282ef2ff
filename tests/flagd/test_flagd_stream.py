"""``amplitude-flagd run --stream``: one stream per host, polling as the fallback, versions only on
change, the transport and the stream's health in the index and in ``status``."""

import json
import threading

import pytest

from amplitude_experiment.snapshot import SnapshotReader
from amplitude_experiment.snapshot.transport import read_transport
from flagd_kit import marker_flags, run_cli
from stand_in import Answer, EventStream
from waiting import wait_until

from flagd.config import Config, ConfigError, ExitCode
from flagd.daemon import Daemon
from flagd.sources import ApiSource
from flagd.stream import StreamingSource

FLAGS = "/sdk/v2/flags"
STREAM = "/sdk/stream/v1/flags"


def test_stream_url_switches_to_the_eu_host_with_the_default_url():
    def config(**options):
        return Config(deployment_key="k", **options)

    assert config().stream_url == "https://stream.lab.amplitude.com/sdk/stream/v1/flags"
    assert config(server_zone="eu").stream_url == "https://stream.lab.eu.amplitude.com/sdk/stream/v1/flags"
    assert config(server_zone="eu", stream_server_url="https://api.lab.amplitude.com").stream_url == \
        "https://stream.lab.eu.amplitude.com/sdk/stream/v1/flags"
    assert config(server_zone="eu", stream_server_url="http://proxy:8080/").stream_url == \
        "http://proxy:8080/sdk/stream/v1/flags"
    with pytest.raises(ConfigError, match="--flags-file"):
        config(stream=True, flags_file="/tmp/flags.json")
    with pytest.raises(ConfigError, match="--stream-server-url"):
        config(stream_server_url="stream.example.com")


class InProcessFlagd:
    """A Daemon on a thread, streaming from the stand-in with short watchdog and retry intervals."""

    def __init__(self, stand_in, shm_prefix, key, keep_alive_s=5.0, retry_s=0.2, poll_interval_ms=60000,
                 conn_timeout_ms=2000, backoff_min_ms=50):
        self.config = Config(deployment_key=key, shm_prefix=shm_prefix, server_url=stand_in.url,
                             stream_server_url=stand_in.url, stream=True, poll_interval_ms=poll_interval_ms,
                             stream_conn_timeout_ms=conn_timeout_ms, backoff_min_ms=backoff_min_ms,
                             request_timeout_ms=2000)
        api = ApiSource(self.config.flags_url, key, 2.0, self.config.source_name)
        self.source = StreamingSource(api, self.config.stream_url, key, keep_alive_s=keep_alive_s, retry_s=retry_s,
                                      retry_jitter_s=retry_s / 10, max_retry_s=retry_s * 4)
        self.daemon = Daemon(self.config, source=self.source)
        self.reader = SnapshotReader(shm_prefix, key)
        self.thread = threading.Thread(target=self.daemon.run, name="test-flagd", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.daemon._stop = True
        self.daemon._nudge()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def marker(self):
        snapshot = self.reader.load()
        return None if snapshot is None else snapshot.config("marker")["segments"][0]["variant"]

    def wait_marker(self, value):
        return wait_until(lambda: self.marker() == value, 10, "marker %r published" % value)

    def transport(self):
        self.reader.state()
        return read_transport(self.reader.words)


def test_pushes_are_published_as_versions_only_when_they_change(stand_in, shm_prefix, deployment_key):
    stand_in.answer("GET", STREAM, EventStream(initial=marker_flags("a"), keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("polled")))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key) as flagd:
        flagd.wait_marker("a")
        assert flagd.reader.current_version() == 1
        stand_in.push(marker_flags("b"))
        flagd.wait_marker("b")
        stand_in.push(marker_flags("b"))  # the same list again: no new version
        stand_in.push(marker_flags("c"))
        flagd.wait_marker("c")
        assert flagd.reader.current_version() == 3
        health = flagd.transport()
        assert health.transport == "stream" and health.transport_since_ns > 0
        assert health.stream_connects == 1 and health.stream_failures == 0
        # A worker in shared mode says how flagd gets the flags.
        from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig

        worker = LocalEvaluationClient(deployment_key, LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix))
        worker.start()
        assert worker.flag_source_status["transport"] == "stream"
        worker.stop()
    assert len(stand_in.seen(FLAGS)) == 0
    assert len(stand_in.seen(STREAM)) == 1


def test_a_quiet_stream_with_keep_alives_keeps_the_heartbeat_fresh(stand_in, shm_prefix, deployment_key):
    stand_in.answer("GET", STREAM, EventStream(initial=marker_flags("a"), keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("polled")))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key, keep_alive_s=1.0, poll_interval_ms=100) as flagd:
        flagd.wait_marker("a")
        first = flagd.reader.state().heartbeat_ns
        # Many poll intervals and watchdog periods with keep-alives only: the heartbeat moves on.
        wait_until(lambda: flagd.reader.state().heartbeat_ns > first + 1_000_000_000, 10, "a heartbeat 1 s later")
        assert flagd.reader.current_version() == 1
        assert flagd.transport().transport == "stream"
        assert flagd.transport().stream_last_event_ns > first
    assert stand_in.seen(FLAGS) == []
    assert len(stand_in.seen(STREAM)) == 1


def test_a_silent_stream_falls_back_to_polling_and_the_stream_comes_back(stand_in, shm_prefix, deployment_key):
    stand_in.answer("GET", STREAM, EventStream(initial=marker_flags("a")), Answer(500, "stream down"),
                    EventStream(initial=marker_flags("back"), keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("polled")))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key, keep_alive_s=0.3, retry_s=0.3,
                        poll_interval_ms=50) as flagd:
        flagd.wait_marker("a")
        flagd.wait_marker("polled")  # the watchdog ended the silent stream; polling took over
        health = wait_until(lambda: flagd.transport().stream_failures and flagd.transport(), 5, "the failure noted")
        assert health.transport == "poll"
        assert "keep-alive timed out" in health.stream_last_error or "HTTP 500" in health.stream_last_error
        flagd.wait_marker("back")
        wait_until(lambda: flagd.transport().transport == "stream", 5, "the stream noted as the transport")
        polls_when_back = len(stand_in.seen(FLAGS))
        for index in range(3):
            stand_in.push(marker_flags("push-%d" % index))
            flagd.wait_marker("push-%d" % index)
        assert len(stand_in.seen(FLAGS)) <= polls_when_back + 1  # polling stopped
        assert flagd.transport().stream_last_error  # the last error stays for status


def test_a_stream_that_stalls_at_start_polls_until_it_delivers(stand_in, shm_prefix, deployment_key):
    stand_in.answer("GET", STREAM, EventStream(initial=marker_flags("streamed"), delay=0.6))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("polled")))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key, conn_timeout_ms=100, poll_interval_ms=50) as flagd:
        flagd.wait_marker("polled")
        flagd.wait_marker("streamed")
        stand_in.push(marker_flags("later"))
        flagd.wait_marker("later")


@pytest.mark.multiprocess
def test_run_stream_as_a_process_reports_the_transport_in_status(stand_in, flagd, shm_prefix, deployment_key):
    stand_in.answer("GET", STREAM, EventStream(initial=marker_flags("a"), keep_alive_every=0.2))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("polled")))
    process = flagd("--stream", "--server-url", stand_in.url, "--stream-server-url", stand_in.url).start()
    process.wait_version(1)
    process.wait_log("event=stream_connected")
    stand_in.push(marker_flags("b"))
    process.wait_version(2)
    result = run_cli("status", "--shm-prefix", shm_prefix, "--json", key=deployment_key)
    report = json.loads(result.stdout)
    assert result.returncode == ExitCode.OK, report
    assert report["transport"] == "stream"
    assert report["transport_since"] is not None
    assert report["stream_connects"] == 1 and report["stream_failures"] == 0
    assert report["stream_last_error"] is None
    assert process.terminate() == 0
    assert stand_in.seen(FLAGS) == []
    assert deployment_key not in process.log()


@pytest.mark.multiprocess
def test_without_stream_status_names_the_poll_or_the_file(stand_in, flagd, shm_prefix, deployment_key, tmp_path):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")))
    process = flagd("--server-url", stand_in.url).start()
    process.wait_version(1)
    report = json.loads(run_cli("status", "--shm-prefix", shm_prefix, "--json", key=deployment_key).stdout)
    assert report["transport"] == "poll" and report["stream_connects"] == 0
    assert process.terminate() == 0
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("b")))
    process = flagd("--flags-file", str(path)).start()
    process.wait_version(2)
    report = json.loads(run_cli("status", "--shm-prefix", shm_prefix, "--json", key=deployment_key).stdout)
    assert report["transport"] == "file"
    assert process.terminate() == 0


def test_a_first_message_that_is_not_a_flag_list_is_not_taken_for_the_stream(stand_in, shm_prefix, deployment_key):
    # flagd rejects it; the API has good flags: they must be published, not wait for the next push.
    stand_in.answer("GET", STREAM, EventStream(initial='{"error": "not a flag list"}', keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("polled")))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key, poll_interval_ms=50) as flagd:
        flagd.wait_marker("polled")
        assert flagd.transport().transport == "poll"
        stand_in.push(marker_flags("pushed"))
        flagd.wait_marker("pushed")
        wait_until(lambda: flagd.transport().transport == "stream", 5, "the stream noted as the transport")
    assert len(stand_in.seen(STREAM)) == 1


def test_an_empty_poll_after_streamed_flags_must_be_confirmed(stand_in, shm_prefix, deployment_key):
    # One empty answer of the API must not empty every worker: that guard must hold when the
    # flags it would replace came by stream, after an empty config that polls had confirmed.
    import time

    from amplitude_experiment.snapshot.health import read_health

    stream_up = threading.Event()
    stand_in.answer("GET", STREAM, lambda seen: EventStream(initial=marker_flags("a"), keep_alive_every=0.05)
                    if stream_up.is_set() else Answer(500, "stream down"))
    stand_in.answer("GET", FLAGS, Answer(200, []))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key, retry_s=0.1, poll_interval_ms=50,
                        backoff_min_ms=200) as flagd:
        wait_until(lambda: flagd.reader.current_version() == 1, 10, "the confirmed empty config")
        stream_up.set()
        wait_until(lambda: flagd.reader.current_version() == 2, 10, "the streamed flags")
        assert flagd.marker() == "a"
        stream_up.clear()
        failed_at = time.time_ns()
        stand_in.disconnect()  # polling takes over and the API answers [] again
        wait_until(lambda: flagd.reader.current_version() == 3, 10, "the empty config, once confirmed")
        flagd.reader.state()
        health = read_health(flagd.reader.words)
        assert health.last_error_at_ns > failed_at and "empty flag list" in health.last_error


def test_a_rejected_message_is_the_streams_last_error(stand_in, shm_prefix, deployment_key):
    """With --stream on and transport "poll", status must say why: a message flagd refused is the
    stream's last error (docs/streaming.md), not only flagd's last_error, whose source names the API."""
    stand_in.answer("GET", STREAM, EventStream(initial=marker_flags("a"), keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")))
    with InProcessFlagd(stand_in, shm_prefix, deployment_key, poll_interval_ms=50) as flagd:
        flagd.wait_marker("a")
        wait_until(lambda: flagd.transport().transport == "stream", 5, "the stream noted as the transport")
        stand_in.push("not json")
        wait_until(lambda: flagd.transport().transport == "poll", 5, "polling after the rejected message")
        wait_until(lambda: flagd.transport().stream_last_error is not None, 5, "the rejection noted")
        assert "rejected" in flagd.transport().stream_last_error
        assert "not JSON" in flagd.transport().stream_last_error
