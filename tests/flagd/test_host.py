"""See and tidy the host: status --all and --key-hash without the key, clean, and a worker with the wrong key."""

import json
import logging
import os

import pytest

from amplitude_experiment import FlagdUnavailableError, LocalEvaluationConfig
from amplitude_experiment.local._shared_source import AutoFlagSource, SharedSnapshotSource
from amplitude_experiment.snapshot import SnapshotReader, SnapshotWriter, key_hash
from flagd_kit import marker_flags, run_cli

from flagd.config import ExitCode

OTHER_KEY = "server-host-other-key-0001"


def publish(prefix, key, value="a"):
    writer = SnapshotWriter(prefix, key, poll_interval_ms=1000)
    writer.publish({"flags": marker_flags(value), "source": "file:/x", "fetched_at_ns": 1, "flag_count": 1,
                    "poll_interval_ms": 1000})
    return writer


def test_status_all_and_key_hash_need_no_key(flagd, shm_prefix, deployment_key, tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("a", extra=2)))
    daemon = flagd("--flags-file", str(path)).start()
    daemon.wait_version(1)
    stopped = publish(shm_prefix, OTHER_KEY)
    stopped.close()  # a second key whose publisher is gone


    result = run_cli("status", "--all", "--shm-prefix", shm_prefix, "--json", key="")
    reports = {report["key_hash"]: report for report in json.loads(result.stdout)}
    assert set(reports) == {key_hash(deployment_key), key_hash(OTHER_KEY)}
    assert reports[key_hash(deployment_key)]["state"] == "ok" and reports[key_hash(deployment_key)]["flag_count"] == 3
    assert reports[key_hash(deployment_key)]["publisher_pid"] == daemon.pid
    assert reports[key_hash(OTHER_KEY)]["state"] == "stale" and reports[key_hash(OTHER_KEY)]["publisher_pid"] is None
    assert result.returncode == ExitCode.STALE  # the worst of the keys
    table = run_cli("status", "--all", "--shm-prefix", shm_prefix, key="").stdout.splitlines()
    assert table[0].split()[:3] == ["shm_prefix", "key_hash", "state"] and len(table) == 3
    assert deployment_key not in result.stdout + "\n".join(table)

    one = run_cli("status", "--key-hash", key_hash(deployment_key), "--shm-prefix", shm_prefix, "--json", key="")
    assert one.returncode == ExitCode.OK and json.loads(one.stdout)["version"] == 1
    bad = run_cli("status", "--key-hash", "not-a-hash", key="")
    assert bad.returncode == ExitCode.USAGE and "16 hex digits" in bad.stderr
    assert daemon.terminate() == ExitCode.OK


def test_clean_refuses_while_flagd_runs_and_removes_a_dead_keys_segments(flagd, shm_prefix, deployment_key, tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("a")))
    daemon = flagd("--flags-file", str(path)).start()
    daemon.wait_version(1)
    refused = run_cli("clean", "--shm-prefix", shm_prefix, key=deployment_key)
    assert refused.returncode == ExitCode.ALREADY_RUNNING and "pid %d" % daemon.pid in refused.stderr
    assert SnapshotReader(shm_prefix, deployment_key).current_version() == 1
    assert daemon.terminate() == ExitCode.OK

    hashed = key_hash(deployment_key)
    cleaned = run_cli("clean", "--key-hash", hashed, "--shm-prefix", shm_prefix, key="")
    assert cleaned.returncode == ExitCode.OK, cleaned.stderr
    assert "removed /%s.%s.idx" % (shm_prefix, hashed) in cleaned.stdout
    assert [name for name in os.listdir("/dev/shm") if name.startswith("%s.%s." % (shm_prefix, hashed))
            and not name.endswith(".lock")] == []
    again = run_cli("clean", "--key-hash", hashed, "--shm-prefix", shm_prefix, key="")
    assert again.returncode == ExitCode.ABSENT


def test_a_worker_with_another_key_than_flagd_is_told_so(shm_prefix, caplog):
    writer = publish(shm_prefix, OTHER_KEY)
    try:
        mine = "server-host-my-key-0002"
        config = LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix,
                                       flag_config_poller_request_timeout_millis=100)
        shared = SharedSnapshotSource(mine, config, logging.getLogger("test.host"))
        with pytest.raises(FlagdUnavailableError) as error:
            shared.start()
        message = str(error.value)
        # flag_source_status's last_error: the reader's problem, then the hint, as two clauses
        assert "index does not exist; flagd publishes key hash" in shared.status()["last_error"]
        assert "flagd publishes key hash %s" % key_hash(OTHER_KEY) in message
        assert "hashes to %s" % key_hash(mine) in message and "different deployment keys" in message
        assert OTHER_KEY not in message and mine not in message

        auto_config = LocalEvaluationConfig(flag_source="auto", shm_prefix=shm_prefix, server_url="http://127.0.0.1:9",
                                            flag_config_poller_request_timeout_millis=100)
        source = AutoFlagSource(mine, auto_config, logging.getLogger("test.host"))
        with caplog.at_level(logging.WARNING, logger="test.host"):
            source.start()
        source.stop()
        assert any("different deployment keys" in r.getMessage() for r in caplog.records)
    finally:
        writer.close()
