"""Sources, backoff, the instance lock, the last-good file and the log format, in-process."""

import io
import json
import logging
import os

import pytest

from flagd_kit import marker_flags
from stand_in import Answer

from flagd.log import Quoted, setup_logging
from flagd.sources import ApiSource, Backoff, FileSource, SourceError
from flagd.state import AlreadyRunning, InstanceLock, LastGood


def test_backoff_doubles_caps_and_jitters():
    low = Backoff(1.0, 8.0, uniform=lambda a, b: a)
    high = Backoff(1.0, 8.0, uniform=lambda a, b: b)
    assert [low.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [high.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert high.delay(10_000) == 8.0  # no overflow on a long outage


def test_file_source(tmp_path):
    path = tmp_path / "flags.json"
    source = FileSource(str(path))
    assert source.name == "file:" + str(path) and not source.backs_off
    with pytest.raises(SourceError, match="cannot read"):
        source.fetch()
    path.write_bytes(b"[]")
    assert source.fetch() == b"[]"


def test_api_source_headers_and_errors(stand_in):
    source = ApiSource(stand_in.url + "/sdk/v2/flags?v=0", "server-K", 2.0, stand_in.url)
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, marker_flags("a")), Answer(429, b"slow down"))
    assert json.loads(source.fetch()) == marker_flags("a")
    with pytest.raises(SourceError, match="HTTP 429: slow down"):
        source.fetch()
    seen = stand_in.seen("/sdk/v2/flags")[0]
    assert seen.headers["Authorization"] == "Api-Key server-K"
    source.close()
    unreachable = ApiSource("http://127.0.0.1:9/sdk/v2/flags?v=0", "server-K", 1.0, "x")
    with pytest.raises(SourceError, match="request failed") as error:
        unreachable.fetch()
    assert "127.0.0.1:9/sdk" not in str(error.value)


def test_instance_lock_excludes_a_second_holder(tmp_path):
    path = str(tmp_path / "k.lock")
    with InstanceLock(path):
        with pytest.raises(AlreadyRunning) as running:
            InstanceLock(path).acquire()
        assert running.value.pid == os.getpid()
    with InstanceLock(path):  # released on exit
        pass


def test_last_good_round_trip_and_atomic_replace(tmp_path):
    store = LastGood(str(tmp_path / "state"), "abc123")
    assert store.load() is None
    store.save(marker_flags("a"), "http://x", 5)
    store.save(marker_flags("b"), "http://y", 6)
    assert store.load() == {"format": 1, "source": "http://y", "fetched_at_ns": 6, "flags": marker_flags("b")}
    assert sorted(os.listdir(str(tmp_path / "state"))) == ["abc123.last-good.json"]  # no temporary left
    with open(store.path, "w") as handle:
        handle.write("{broken")
    assert store.load() is None


def test_log_lines_are_key_value_and_redacted():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", secret="server-SECRET", stream=stream)
        logging.getLogger("flagd.test").info("event=published version=%d source=%s", 3, Quoted('a "b"'))
        logging.getLogger("urllib3").warning("header Api-Key server-SECRET")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = stream.getvalue().splitlines()
    assert first.startswith("ts=") and 'level=info logger=flagd.test event=published version=3 source="a \\"b\\""' in first
    assert 'msg="header Api-Key <redacted>"' in second and "server-SECRET" not in stream.getvalue()
