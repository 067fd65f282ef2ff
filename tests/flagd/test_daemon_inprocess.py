"""Daemon's publish rules in-process, with a scripted source and a recording notifier (real segments)."""

import json
import logging
from typing import List

from amplitude_experiment.snapshot import SnapshotReader
from flagd_kit import marker_flags

from flagd.config import Config, ExitCode
from flagd.daemon import Daemon
from flagd.sources import SourceError


class ScriptedSource:
    """Answers fetches from a list (bytes, or an exception to raise); stops the daemon at the end."""

    name = "scripted"
    backs_off = False

    def __init__(self, answers: List[object]):
        self.answers = list(answers)
        self.daemon = None
        self.fetches = 0

    def fetch(self) -> bytes:
        self.fetches += 1
        if len(self.answers) == 1:
            self.daemon._stop = True  # the last answer: finish this poll, then stop
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        pass


class RecordingNotifier:
    enabled = True
    watchdog_interval = 0.05

    def __init__(self):
        self.calls = []

    def ready(self, status):
        self.calls.append("READY " + status)

    def status(self, text):
        self.calls.append("STATUS " + text)

    def watchdog(self):
        self.calls.append("WATCHDOG")

    def extend_timeout(self, seconds):
        self.calls.append("EXTEND")

    def stopping(self):
        self.calls.append("STOPPING")


def body(flags) -> bytes:
    return json.dumps(flags).encode()


def make(shm_prefix, key, answers, **options):
    source = ScriptedSource(answers)
    notifier = RecordingNotifier()
    config = Config(deployment_key=key, shm_prefix=shm_prefix, poll_interval_ms=1, **options)
    daemon = Daemon(config, source=source, notifier=notifier)
    source.daemon = daemon
    return daemon, source, notifier


def test_publishes_only_changes_and_keeps_last_good(shm_prefix, caplog):
    key = "server-inprocess-1"
    a, b = body(marker_flags("a")), body(marker_flags("b"))
    same_content_other_bytes = json.dumps(marker_flags("a"), indent=2).encode()
    daemon, source, notifier = make(shm_prefix, key, [
        a, a, same_content_other_bytes, b"garbage", b"garbage", SourceError("down"), b, b])
    with caplog.at_level(logging.INFO, logger="flagd"):
        assert daemon.run() == ExitCode.OK
    snapshot = SnapshotReader(shm_prefix, key).load()
    assert snapshot.version == 2 and snapshot.document["flags"] == marker_flags("b")
    assert [r.getMessage().split()[0] for r in caplog.records if "event=published" in r.getMessage()] == \
        ["event=published"] * 2
    assert len([r for r in caplog.records if "event=config_rejected" in r.getMessage()]) == 1  # reported once
    assert notifier.calls.count("STOPPING") == 1
    readies = [call for call in notifier.calls if call.startswith("READY")]
    assert len(readies) == 1 and readies[0].startswith("READY v1 flags=1 age=")
    assert notifier.calls.count("WATCHDOG") >= source.fetches - 1


def test_a_bug_is_logged_and_exits_with_error_leaving_the_snapshot(shm_prefix, caplog):
    key = "server-inprocess-2"
    daemon, _, _ = make(shm_prefix, key, [body(marker_flags("a")), RuntimeError("bug"), b""])
    assert daemon.run() == ExitCode.ERROR
    assert any("event=crashed" in record.getMessage() for record in caplog.records)
    assert SnapshotReader(shm_prefix, key).load().version == 1
