"""flagd as a real process against the stand-in flags server or a flags file.

Every wait is on a real condition (the index version, a log line, a request count) with a deadline.
"""

import json
import os
import signal
import time

import pytest

from amplitude_experiment.snapshot import SnapshotReader, remove_all
from flagd_kit import marker_flags, run_cli, wait_until
from stand_in import Answer

from flagd.config import ExitCode

pytestmark = pytest.mark.multiprocess

FLAGS = "/sdk/v2/flags"


def api_args(stand_in, *extra):
    return ["--server-url", stand_in.url, "--poll-interval-ms", "200", "--backoff-min-ms", "100",
            "--backoff-max-ms", "400"] + list(extra)


def load_document(prefix, key):
    snapshot = SnapshotReader(prefix, key).load()
    assert snapshot is not None
    return snapshot


def test_polls_api_with_reference_headers_and_publishes_once_per_change(stand_in, flagd, shm_prefix, deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")))
    daemon = flagd(*api_args(stand_in)).start()
    daemon.wait_version(1)
    request = stand_in.seen(FLAGS)[0]
    assert request.query == "v=0"
    assert request.headers["Authorization"] == "Api-Key " + deployment_key
    assert request.headers["Content-Type"] == "application/json;charset=utf-8"
    assert request.headers["X-Amp-Exp-Library"] == "experiment-python-server/1.13.0"

    # Unchanged content: more fetches, heartbeat and last fetch move, no new version.
    before = SnapshotReader(shm_prefix, deployment_key).state()
    stand_in.wait_for(len(stand_in.seen(FLAGS)) + 3, FLAGS)
    after = SnapshotReader(shm_prefix, deployment_key).state()
    assert after.version == 1
    assert after.last_fetch_ns > before.last_fetch_ns and after.heartbeat_ns > before.heartbeat_ns

    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("b", extra=2)))
    daemon.wait_version(2)
    snapshot = load_document(shm_prefix, deployment_key)
    document = snapshot.document
    assert [flag["key"] for flag in document["flags"]] == ["marker", "extra-0", "extra-1"]
    assert document["flag_count"] == 3
    assert document["source"] == stand_in.url
    assert document["poll_interval_ms"] == 200
    assert document["fetched_at_ns"] > 0
    stand_in.wait_for(len(stand_in.seen(FLAGS)) + 3, FLAGS)
    assert daemon.version() == 2
    assert daemon.terminate() == ExitCode.OK


def test_storage_order_is_stable_across_updates(stand_in, flagd, shm_prefix, deployment_key):
    """Existing flags keep their position and new ones are appended (docs/compatibility.md, 'Storage order')."""
    first = marker_flags("a", extra=2)  # marker, extra-0, extra-1
    stand_in.answer("GET", FLAGS, Answer(200, first))
    daemon = flagd(*api_args(stand_in)).start()
    daemon.wait_version(1)
    new = {"key": "new", "variants": {"on": {"key": "on"}}, "segments": [{"variant": "on"}]}
    stand_in.answer("GET", FLAGS, Answer(200, [new, first[2], first[0]]))
    daemon.wait_version(2)
    keys = [flag["key"] for flag in load_document(shm_prefix, deployment_key).document["flags"]]
    assert keys == ["marker", "extra-1", "new"]


@pytest.mark.parametrize("garbage", [
    b"<html>502 Bad Gateway</html>",
    b'{"flags": []}',
    json.dumps([{"key": "broken", "variants": {}, "segments": None}]).encode(),
])
def test_garbage_from_api_keeps_last_good_and_logs(stand_in, flagd, shm_prefix, deployment_key, garbage):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("good")))
    daemon = flagd(*api_args(stand_in)).start()
    daemon.wait_version(1)
    stand_in.answer("GET", FLAGS, Answer(200, garbage))
    log = daemon.wait_log("event=config_rejected")
    stand_in.wait_for(len(stand_in.seen(FLAGS)) + 2, FLAGS)
    assert daemon.version() == 1
    assert load_document(shm_prefix, deployment_key).document["flags"][0]["variants"]["good"]
    line = [entry for entry in log.splitlines() if "event=config_rejected" in entry][0]
    assert "level=error" in line and "kept_version=1" in line
    if b"broken" in garbage:
        assert 'flag="broken"' in line
    # The upstream recovers: publishing resumes.
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("better")))
    daemon.wait_version(2)
    daemon.wait_log("event=recovered")


def test_http_errors_back_off_and_keep_last_good(stand_in, flagd, deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("good")), Answer(503, b"unavailable"))
    daemon = flagd("--server-url", stand_in.url, "--poll-interval-ms", "200", "--backoff-min-ms", "100",
                   "--backoff-max-ms", "800").start()
    daemon.wait_version(1)
    requests = stand_in.wait_for(6, FLAGS, timeout=15)
    log = daemon.wait_log("event=fetch_failed", count=4)
    assert "HTTP 503" in log and "kept_version=1" in log
    assert daemon.version() == 1
    # Failure n waits min(800, 100 * 2**(n-1)) ms, at least half of it (equal jitter): 50, 100, 200, 400 ms.
    gaps = [later.at - earlier.at for earlier, later in zip(requests[1:], requests[2:6])]
    for gap, floor in zip(gaps, [0.05, 0.1, 0.2, 0.4]):
        assert gap >= floor * 0.95, gaps
    assert gaps[0] < 1.0, gaps  # generous ceiling: the first retry is due after 50-100 ms


def test_segments_get_the_group(stand_in, flagd, shm_prefix):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")))
    daemon = flagd(*api_args(stand_in, "--group", str(os.getgid()))).start()
    daemon.wait_version(1)
    names = [name for name in os.listdir("/dev/shm") if name.startswith(shm_prefix) and not name.endswith(".lock")]
    for name in names:
        info = os.stat(os.path.join("/dev/shm", name))
        assert info.st_gid == os.getgid() and info.st_mode & 0o777 == 0o640, (name, oct(info.st_mode))


def test_sigkill_workers_keep_serving_and_restart_moves_them_on(stand_in, flagd, worker, shm_prefix, deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("one")))
    daemon = flagd(*api_args(stand_in)).start()
    daemon.wait_version(1)
    workers = [worker(), worker()]
    for each in workers:
        each.wait_value("one")

    daemon.kill()  # SIGKILL: no cleanup at all
    served = [each.evaluations() for each in workers]
    wait_until(lambda: all(each.evaluations() > count + 50 for each, count in zip(workers, served)), 15,
               "workers to keep evaluating after flagd died")
    status = run_cli("status", "--shm-prefix", shm_prefix, key=deployment_key)
    assert status.returncode == ExitCode.STALE, status.stdout + status.stderr
    assert "not running" in status.stdout

    # Restart: the same content is adopted, not re-published; new content moves the workers on.
    restarted = flagd(*api_args(stand_in)).start()
    restarted.wait_log("event=adopted version=1")
    restarted.wait_log("event=ready")
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("two")))
    restarted.wait_version(2)
    for each in workers:
        each.wait_value("two")
        summary = each.finish()
        assert summary["errors"] == 0, summary
        assert summary["last"] == "two"
    assert restarted.terminate() == ExitCode.OK


def test_sigterm_leaves_snapshot_in_place(stand_in, flagd, shm_prefix, deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("kept")))
    daemon = flagd(*api_args(stand_in)).start()
    daemon.wait_version(1)
    assert daemon.terminate() == ExitCode.OK
    assert "event=stopped version=1" in daemon.log()
    snapshot = load_document(shm_prefix, deployment_key)
    assert snapshot.version == 1 and snapshot.document["flags"][0]["key"] == "marker"
    dump = run_cli("dump", "--shm-prefix", shm_prefix, "--flags-only", key=deployment_key)
    assert dump.returncode == ExitCode.OK
    assert json.loads(dump.stdout) == marker_flags("kept")


def test_sigterm_interrupts_a_slow_request(stand_in, flagd):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("slow"), delay=8))
    daemon = flagd(*api_args(stand_in, "--request-timeout-ms", "20000")).start()
    stand_in.wait_for(1, FLAGS)
    assert daemon.terminate(timeout=5) == ExitCode.OK


def test_second_instance_exits_naming_the_running_pid(stand_in, flagd, shm_prefix, deployment_key, tmp_path):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")))
    first = flagd(*api_args(stand_in)).start()
    first.wait_version(1)
    second = run_cli("run", "--shm-prefix", shm_prefix, *api_args(stand_in), key=deployment_key)
    assert second.returncode == ExitCode.ALREADY_RUNNING
    assert "event=already_running" in second.stderr
    assert "pid=%d" % first.pid in second.stderr
    # A different state directory does not get around the lock: it guards the shared-memory files.
    third = run_cli("run", "--shm-prefix", shm_prefix, "--state-dir", str(tmp_path / "other"), *api_args(stand_in),
                    key=deployment_key)
    assert third.returncode == ExitCode.ALREADY_RUNNING
    assert first.process.poll() is None


def test_flags_file_republishes_on_change_and_keeps_last_good_on_garbage(flagd, tmp_path, shm_prefix, deployment_key):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("file-1")))
    daemon = flagd("--flags-file", str(path), "--poll-interval-ms", "100").start()
    daemon.wait_version(1)
    assert load_document(shm_prefix, deployment_key).document["source"] == "file:" + str(path)

    path.write_text("{ this is not json")
    daemon.wait_log("event=config_rejected")
    path.write_text(json.dumps([{"key": "x", "variants": {"a": {"key": "a"}}, "segments": [{"variant": 3}]}]))
    daemon.wait_log("event=config_rejected", count=2)
    assert daemon.version() == 1

    path.write_text(json.dumps(marker_flags("file-2")))
    daemon.wait_version(2)
    os.unlink(str(path))
    daemon.wait_log("event=fetch_failed")
    assert daemon.version() == 2


def test_sighup_rereads_the_file_at_once(flagd, tmp_path, shm_prefix, deployment_key):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("before")))
    daemon = flagd("--flags-file", str(path), "--poll-interval-ms", "600000").start()
    daemon.wait_version(1)
    daemon.wait_log("event=ready")
    path.write_text(json.dumps(marker_flags("after")))
    daemon.signal(signal.SIGHUP)
    daemon.wait_version(2, timeout=5)
    assert "event=reload" in daemon.log()
    # SIGHUP with unchanged content: re-validated, nothing re-published.
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("event=reload", count=2)
    assert daemon.version() == 2
    assert daemon.terminate() == ExitCode.OK


def test_last_good_snapshot_is_published_at_start_when_upstream_is_down(stand_in, flagd, shm_prefix,
                                                                        deployment_key, tmp_path):
    state_dir = tmp_path / "state"
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("remembered")))
    first = flagd(*api_args(stand_in, "--state-dir", str(state_dir))).start()
    first.wait_version(1)
    first.wait_log("event=ready")
    assert first.terminate() == ExitCode.OK
    stored = os.listdir(str(state_dir))
    assert len(stored) == 1 and stored[0].endswith(".last-good.json")

    remove_all(shm_prefix, deployment_key)  # a reboot: /dev/shm is empty
    stand_in.answer("GET", FLAGS, Answer(500, b"down"))
    second = flagd(*api_args(stand_in, "--state-dir", str(state_dir))).start()
    second.wait_log("event=restored_last_good")
    second.wait_log("event=ready")
    snapshot = load_document(shm_prefix, deployment_key)
    assert snapshot.document["flags"] == marker_flags("remembered")
    assert snapshot.document["source"] == stand_in.url
    status = run_cli("status", "--shm-prefix", shm_prefix, "--json", "--max-age-ms", "600000", key=deployment_key)
    # Served from disk while the source fails: not "ok", and the report says why.
    assert status.returncode == ExitCode.DEGRADED, status.stdout
    report = json.loads(status.stdout)
    assert report["flag_count"] == 1 and report["state"] == "degraded"
    assert report["last_error_kind"] == "fetch_failed" and "HTTP 500" in report["last_error"]
    assert report["failing"] == ["source"] and "source is failing" in report["problems"][0]


def test_status_and_dump(stand_in, flagd, shm_prefix, deployment_key):
    absent = run_cli("status", "--shm-prefix", shm_prefix, key=deployment_key)
    assert absent.returncode == ExitCode.ABSENT
    assert run_cli("dump", "--shm-prefix", shm_prefix, key=deployment_key).returncode == ExitCode.ABSENT

    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("s", extra=3)))
    daemon = flagd(*api_args(stand_in)).start()
    daemon.wait_version(1)
    status = run_cli("status", "--shm-prefix", shm_prefix, "--json", key=deployment_key)
    assert status.returncode == ExitCode.OK, status.stdout
    report = json.loads(status.stdout)
    assert report["version"] == 1 and report["flag_count"] == 4
    assert report["publisher_pid"] == daemon.pid and report["publisher_alive"] is True
    assert report["source"] == stand_in.url and report["state"] == "ok"
    assert report["last_fetch_age_s"] < 5

    dump = run_cli("dump", "--shm-prefix", shm_prefix, key=deployment_key)
    assert dump.returncode == ExitCode.OK
    snapshot = json.loads(dump.stdout)
    assert snapshot["version"] == 1 and len(snapshot["flags"]) == 4

    # The upstream fails: the heartbeat ages past --max-age-ms and status says stale.
    stand_in.answer("GET", FLAGS, Answer(500, b"down"))
    daemon.wait_log("event=fetch_failed")
    stale = wait_until(lambda: (lambda r: r.returncode == ExitCode.STALE and r)(
        run_cli("status", "--shm-prefix", shm_prefix, "--max-age-ms", "300", key=deployment_key)), 10, "stale status")
    assert "older than" in stale.stdout


def test_key_never_in_logs_segment_names_or_contents(stand_in, flagd, shm_prefix, deployment_key, tmp_path):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")), Answer(401, b"bad key " + deployment_key.encode()),
                    Answer(200, marker_flags("b")))
    state_dir = tmp_path / "state"
    daemon = flagd(*api_args(stand_in, "--state-dir", str(state_dir), "--log-level", "debug")).start()
    daemon.wait_version(2)
    daemon.wait_log("event=fetch_failed")
    assert daemon.terminate() == ExitCode.OK
    log = daemon.log()
    assert "HTTP 401" in log and "<redacted>" in log
    assert deployment_key not in log
    names = [name for name in os.listdir("/dev/shm") if name.startswith(shm_prefix)]
    assert names
    for name in names:
        assert deployment_key not in name
        with open(os.path.join("/dev/shm", name), "rb") as handle:
            assert deployment_key.encode() not in handle.read()
    for name in os.listdir(str(state_dir)):
        assert deployment_key not in name
        with open(os.path.join(str(state_dir), name), "rb") as handle:
            assert deployment_key.encode() not in handle.read()


def test_key_from_file_and_credentials_directory(stand_in, flagd, shm_prefix, deployment_key, tmp_path):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")))
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "deployment-key").write_text(deployment_key + "\n")
    daemon = flagd(*api_args(stand_in), env={"AMPLITUDE_DEPLOYMENT_KEY": "", "CREDENTIALS_DIRECTORY": str(credentials)})
    daemon.start().wait_version(1)
    assert stand_in.seen(FLAGS)[0].headers["Authorization"] == "Api-Key " + deployment_key
    key_file = tmp_path / "key"
    key_file.write_text(deployment_key)
    status = run_cli("status", "--shm-prefix", shm_prefix, "--deployment-key-file", str(key_file), key="")
    assert status.returncode == ExitCode.OK, status.stdout + status.stderr


def test_a_changed_flags_file_is_published_without_waiting_for_the_interval(flagd, tmp_path):
    """A 10-minute interval: only the file watch can publish these changes in time."""
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("first")))
    daemon = flagd("--flags-file", str(path), "--poll-interval-ms", "600000").start()
    daemon.wait_version(1)
    daemon.wait_log("event=ready")
    latencies = []
    for version, value in ((2, "second"), (3, "third")):
        written = time.monotonic()
        path.write_text(json.dumps(marker_flags(value)))  # in place
        daemon.wait_version(version, timeout=10)
        latencies.append(time.monotonic() - written)
    replacement = tmp_path / "flags.json.new"
    replacement.write_text(json.dumps(marker_flags("fourth")))
    written = time.monotonic()
    os.replace(str(replacement), str(path))  # renamed into place, as deploy tools do
    daemon.wait_version(4, timeout=10)
    latencies.append(time.monotonic() - written)
    print("file change -> published: %s s" % ", ".join("%.2f" % latency for latency in latencies))
    assert load_document(daemon.prefix, daemon.key).document["flags"] == marker_flags("fourth")
    assert daemon.terminate() == ExitCode.OK
