"""Health that tells the truth: flagd's last error and when, in status, status --json, the index and the workers."""

import json
import logging
import os
import signal
import time

from amplitude_experiment import LocalEvaluationConfig
from amplitude_experiment.local._shared_source import SharedSnapshotSource
from amplitude_experiment.snapshot.health import read_health, record_error, record_failing
from amplitude_experiment.snapshot import SnapshotReader, SnapshotWriter
from flagd_kit import marker_flags, run_cli
from waiting import wait_until

from flagd.config import ExitCode


def typo_flags():
    flags = marker_flags("b")
    flags[0]["segments"][0]["variant"] = "bb"
    return flags


def status_json(shm_prefix, key, *extra):
    result = run_cli("status", "--shm-prefix", shm_prefix, "--json", *extra, key=key)
    return result.returncode, json.loads(result.stdout)


def test_a_rejected_file_shows_at_once_in_status_and_in_the_workers(flagd, shm_prefix, deployment_key, tmp_path,
                                                                     caplog):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("a")))
    daemon = flagd("--flags-file", str(path), "--poll-interval-ms", "200").start()
    daemon.wait_version(1)
    code, report = status_json(shm_prefix, deployment_key)
    assert code == ExitCode.OK and report["state"] == "ok" and report["last_error"] is None

    path.write_text(json.dumps(typo_flags()))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("event=config_rejected")
    code, report = status_json(shm_prefix, deployment_key, "--max-age-ms", "600000")
    # Well inside the age limit, yet not "ok": the reason is named, with when it happened.
    assert code == ExitCode.DEGRADED and report["state"] == "degraded", report
    assert report["last_error_kind"] == "config_rejected" and "segments[0].variant" in report["last_error"]
    assert report["consecutive_failures"] >= 1 and report["failing"] == ["source"]
    assert report["last_error_age_s"] < 60 and report["last_error_at"].endswith("Z")
    assert "segments[0].variant" in report["problems"][0] and report["version"] == 1
    text = run_cli("status", "--shm-prefix", shm_prefix, "--max-age-ms", "600000", key=deployment_key).stdout
    assert "degraded" in text and "config_rejected" in text

    # A worker reads the same from the index, and its stale warning says flagd runs and fails.
    logger = logging.getLogger("test.health")
    source = SharedSnapshotSource(deployment_key, LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix),
                                  logger)
    source.start()
    status = source.status()
    assert status["publisher_alive"] is True and status["healthy"] is False
    assert "segments[0].variant" in status["publisher_last_error"] and status["publisher_failing"] == ["source"]
    assert status["publisher_consecutive_failures"] >= 1 and status["publisher_last_error_at"] <= time.time()
    with caplog.at_level(logging.WARNING, logger="test.health"):
        wait_until(lambda: source.status() and any("heartbeat" in r.getMessage() for r in caplog.records), 10,
                   "stale warning")
    warning = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()][0]
    assert "runs but its last" in warning and "is flagd running" not in warning, warning
    assert "pid %d" % daemon.pid in warning

    path.write_text(json.dumps(marker_flags("c")))
    daemon.wait_version(2)
    code, report = wait_until(lambda: (lambda r: r[0] == ExitCode.OK and r)(status_json(shm_prefix, deployment_key)),
                              10, "ok again")
    assert report["failing"] == [] and report["consecutive_failures"] == 0
    assert report["last_error_kind"] == "config_rejected"  # the last error stays, with its time
    assert report["publisher_pid"] == daemon.pid == source.status()["publisher_pid"]
    assert daemon.terminate() == ExitCode.OK
    # No publisher: the same None from the CLI and the SDK (the CLI said 0).
    code, report = status_json(shm_prefix, deployment_key)
    assert code == ExitCode.STALE and report["publisher_pid"] is None and source.status()["publisher_pid"] is None


def test_an_unwritable_state_dir_is_degraded_not_ok(flagd, shm_prefix, deployment_key, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("a")))
    daemon = flagd("--flags-file", str(path), "--state-dir", str(blocker / "state")).start()
    daemon.wait_version(1)
    daemon.wait_log("event=state_dir_unwritable")
    code, report = status_json(shm_prefix, deployment_key)
    assert code == ExitCode.DEGRADED and report["failing"] == ["state_dir"], report
    assert "state dir is failing" in report["problems"][0] and "not-a-dir" in report["problems"][0]
    assert report["last_error_kind"] == "state_save_failed"
    assert daemon.terminate() == ExitCode.OK


def test_error_text_round_trips_and_is_bounded(shm_prefix):
    key = "server-health-words"
    with SnapshotWriter(shm_prefix, key) as writer:
        record_error(writer.words, "fetch_failed", "HTTP 503: é" * 200, 1234)
        record_failing(writer.words, 1, 3)
        reader = SnapshotReader(shm_prefix, key)
        reader.attach()
        health = read_health(reader.words)
        assert health.last_error_kind == "fetch_failed" and health.last_error_at_ns == 1234
        assert health.last_error.startswith("HTTP 503: é") and len(health.last_error.encode()) <= 1024
        assert health.consecutive_failures == 3 and health.failing == ("source",)
        record_error(writer.words, "config_rejected", "short", 5678)
        assert read_health(reader.words).last_error == "short"
    assert read_health((0,) * 512).last_error is None  # an unmapped index: nothing known


def test_an_idle_worker_reports_the_version_published_now(shm_prefix):
    key = "server-health-idle"
    with SnapshotWriter(shm_prefix, key, poll_interval_ms=1000) as writer:
        doc = {"flags": marker_flags("a"), "source": "file:/x", "fetched_at_ns": time.time_ns(), "flag_count": 1}
        writer.publish(doc)
        source = SharedSnapshotSource(key, LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix),
                                      logging.getLogger("test.health"))
        source.start()
        assert source.status()["version"] == 1
        writer.publish(dict(doc, flags=marker_flags("b")))
        status = source.status()  # no evaluation in between
        assert status["version"] == 2 and status["published_version"] == 2 and status["healthy"] is True
        assert status["publisher_pid"] == os.getpid()
