"""The SDK's shared mode: flag_source "flagd" and "auto" against segments published by SnapshotWriter."""

import logging
import multiprocessing
import os
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from forking import reap, run_in_child
from stand_in import Answer

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.local import _shared_source
from amplitude_experiment.local._poller import PollingFlagSource
from amplitude_experiment.local._shared_source import AutoFlagSource, FlagdUnavailableError, SharedSnapshotSource
from amplitude_experiment.local._sources import build_flag_source
from amplitude_experiment.snapshot import SnapshotWriter, index_name, remove_all
from waiting import wait_until  # noqa: E402

KEY = "server-shared-mode-test-key-0001"
FLAGS_PATH = "/sdk/v2/flags"
USER = User(user_id="user-1")


def flag(key: str, variant: str) -> Dict[str, Any]:
    return {
        "key": key,
        "metadata": {"deployed": True, "evaluationMode": "local", "flagType": "release", "flagVersion": 1},
        "segments": [{"metadata": {"segmentName": "All Other Users"}, "variant": variant}],
        "variants": {"off": {"key": "off", "metadata": {"default": True}},
                     "on": {"key": "on", "value": "on"}, "b": {"key": "b", "value": "b"}},
    }


def document(variant: str, **extra: Any) -> Dict[str, Any]:
    doc = {"flags": [flag("f1", variant)], "source": "file:/etc/flags.json", "fetched_at_ns": time.time_ns(),
           "flag_count": 1, "poll_interval_ms": 1000}
    doc.update(extra)
    return doc


def value(client: LocalEvaluationClient) -> Optional[str]:
    variant = client.evaluate_v2(USER).get("f1")
    return variant.value if variant is not None else None


def config(shm_prefix: str, mode: str, server_url: str = "http://127.0.0.1:9", **extra: Any) -> LocalEvaluationConfig:
    extra.setdefault("logger", logging.getLogger("test.shared_mode"))
    return LocalEvaluationConfig(flag_source=mode, shm_prefix=shm_prefix, server_url=server_url,
                                 flag_config_poller_request_timeout_millis=extra.pop("timeout_ms", 300), **extra)


def poller_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "amplitude_experiment.flag_poller"]


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def writer(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as w:
        yield w


# --- choosing the source ---------------------------------------------------------------------


def test_build_flag_source_follows_the_config(shm_prefix):
    logger = logging.getLogger("test")
    assert isinstance(build_flag_source(KEY, config(shm_prefix, "poll"), logger), PollingFlagSource)
    assert isinstance(build_flag_source(KEY, config(shm_prefix, "flagd"), logger), SharedSnapshotSource)
    assert isinstance(build_flag_source(KEY, config(shm_prefix, "auto"), logger), AutoFlagSource)
    assert LocalEvaluationConfig().flag_source == "auto"


def test_nothing_is_opened_before_use(shm_prefix, writer):
    writer.publish(document("on"))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd"))
    assert not client._source._follower.reader.attached


# --- flagd mode -------------------------------------------------------------------------------


def test_flagd_mode_serves_the_snapshot_and_follows_new_versions(shm_prefix, writer, stand_in):
    writer.publish(document("on"))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd", stand_in.url))
    threads_before = set(threading.enumerate())
    client.start()
    assert value(client) == "on"
    writer.publish(document("b"))
    assert value(client) == "b"  # the very next evaluation: no thread, no delay
    assert set(threading.enumerate()) == threads_before
    assert stand_in.seen() == []
    client.stop()
    assert value(client) == "b"


def test_flagd_mode_without_a_daemon_raises_naming_the_segment(shm_prefix):
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd", timeout_ms=200))
    started = time.monotonic()
    with pytest.raises(FlagdUnavailableError) as raised:
        client.start()
    assert time.monotonic() - started < 3
    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    assert index_name(shm_prefix, KEY) in message and "amplitude-flagd" in message and KEY not in message
    assert client.evaluate_v2(USER) == {}


def test_flagd_mode_start_waits_for_a_late_daemon(shm_prefix):
    sleeps: List[float] = []
    source = SharedSnapshotSource(KEY, config(shm_prefix, "flagd", timeout_ms=10_000), logging.getLogger("t"),
                                  sleep=lambda s: sleeps.append(s) or (len(sleeps) == 3 and publish_late()))
    holder: List[SnapshotWriter] = []

    def publish_late() -> None:
        holder.append(SnapshotWriter(shm_prefix, KEY))
        holder[0].publish(document("on"))

    try:
        source.start()
        assert len(sleeps) == 3 and len(source.current()) == 1
    finally:
        for w in holder:
            w.close()


def compiles(client: LocalEvaluationClient) -> int:
    return client.flag_source_status["flags_compiled"]


def test_a_flag_is_compiled_once_until_its_content_changes(shm_prefix, writer):
    writer.publish(document("on"))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd"))
    client.start()
    assert compiles(client) == 0  # mapping a version compiles nothing
    first = client._source.current()
    for _ in range(200):
        assert client._source.current() is first
        client.evaluate_v2(USER)
    assert compiles(client) == 1
    writer.publish(document("on", source="file:/elsewhere"))  # a new version, the same flag content
    assert value(client) == "on" and client._source.current() is not first
    assert compiles(client) == 1
    writer.publish(document("b"))
    for _ in range(200):
        client.evaluate_v2(USER)
    assert compiles(client) == 2


def test_a_worker_compiles_only_the_flags_it_evaluates(shm_prefix, writer):
    flags = [flag("f%d" % n, "on") for n in range(50)]
    writer.publish({"flags": flags, "poll_interval_ms": 1000})
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd"))
    client.start()
    for _ in range(20):
        assert client.evaluate_v2(USER, ["f7"])["f7"].value == "on"
        assert client.evaluate_v2(USER, {"f9"})["f9"].value == "on"
    assert compiles(client) == 2
    flags[7] = flag("f7", "b")  # one flag changes, 49 do not
    writer.publish({"flags": flags, "poll_interval_ms": 1000})
    assert client.evaluate_v2(USER, ("f7",))["f7"].value == "b"
    assert client.evaluate_v2(USER, frozenset(["f9"]))["f9"].value == "on"
    assert compiles(client) == 3
    assert len(client.evaluate_v2(USER)) == 50  # all flags: the 48 never used are compiled now
    assert compiles(client) == 51


def publish_unvalidated(writer: SnapshotWriter, flags: List[Any]) -> int:
    """What a foreign or buggy writer could publish: flags this SDK's parser was never asked about."""
    from amplitude_experiment.evaluation.catalog import PlannedCatalog, encode_flag, flag_digest

    records = {f["key"]: encode_flag(f) for f in flags}
    catalog = PlannedCatalog(list(records), records, {k: flag_digest(r) for k, r in records.items()},
                             {k: () for k in records}, [], False)
    return writer.publish({"poll_interval_ms": 1000}, catalog=catalog)


def test_a_flag_this_sdk_cannot_compile_is_left_out_and_logged_once(shm_prefix, writer, caplog):
    writer.publish({"flags": [flag("f1", "on"), flag("f2", "on")], "poll_interval_ms": 1000})
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd"))
    client.start()
    assert value(client) == "on"
    publish_unvalidated(writer, [dict(flag("f1", "on"), variants=[]), flag("f2", "b")])
    with caplog.at_level(logging.ERROR, logger="test.shared_mode"):
        for _ in range(100):
            variants = client.evaluate_v2(USER)
            assert "f1" not in variants and variants["f2"].value == "b"
    errors = [r.getMessage() for r in caplog.records if "cannot be compiled" in r.getMessage()]
    assert len(errors) == 1 and "'f1'" in errors[0] and "variants must be an object" in errors[0]
    assert "f1" in client.flag_source_status["last_error"]
    writer.publish(document("b"))
    assert value(client) == "b"


@pytest.mark.parametrize("mode", [0o660, 0o666])
def test_flagd_mode_refuses_a_writable_segment(shm_prefix, writer, mode):
    writer.publish(document("on"))
    os.chmod("/dev/shm" + index_name(shm_prefix, KEY), mode)
    with pytest.raises(FlagdUnavailableError, match="group or others can write"):
        LocalEvaluationClient(KEY, config(shm_prefix, "flagd", timeout_ms=100)).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_flagd_mode_refuses_another_owner(shm_prefix, writer):
    writer.publish(document("on"))
    for name in os.listdir("/dev/shm"):
        if name.startswith(shm_prefix):
            os.chown("/dev/shm/" + name, 65534, -1)  # as if another local user had made them
    with pytest.raises(FlagdUnavailableError, match="owned by uid 65534.*flagd_owner"):
        LocalEvaluationClient(KEY, config(shm_prefix, "flagd", timeout_ms=100)).start()
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd", flagd_owner=65534))
    client.start()
    assert value(client) == "on"


def test_removed_segments_are_found_again_by_name(shm_prefix, writer):
    writer.publish(document("on"))
    clock = Clock()
    source = SharedSnapshotSource(KEY, config(shm_prefix, "flagd"), logging.getLogger("t"), monotonic=clock)
    source.start()
    writer.close()
    remove_all(shm_prefix, KEY)
    assert source.current() is not None  # keeps serving what it has
    with SnapshotWriter(shm_prefix, KEY) as again:
        again.publish(document("b"))  # a new index, numbering from 1 again
        clock.now += 2
        for _ in range(_shared_source.CHECK_EVERY + 2):
            flags = source.current()
    assert flags.raw[0]["segments"][0]["variant"] == "b"


# --- status and staleness ---------------------------------------------------------------------


def test_status_reports_version_age_and_publisher(shm_prefix, writer):
    writer.publish(document("on"))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd"))
    client.start()
    status = client.flag_source_status
    assert status["source"] == "flagd" and status["version"] == 1 and status["flags"] == 1
    assert status["publisher_pid"] == os.getpid() and status["publisher_alive"] is True
    assert 0 <= status["age_seconds"] < 60 and 0 <= status["heartbeat_age_seconds"] < 60
    assert status["index"] == index_name(shm_prefix, KEY) and status["upstream"] == "file:/etc/flags.json"
    assert status["poll_interval_seconds"] == 1.0
    writer.close()
    assert client.flag_source_status["publisher_alive"] is False


def test_stale_heartbeat_warns_once(shm_prefix, writer, caplog):
    writer.publish(document("on"))  # poll_interval_ms=1000 in the index
    wall = [time.time_ns()]
    clock = Clock()
    source = SharedSnapshotSource(KEY, config(shm_prefix, "flagd"), logging.getLogger("test.shared_mode"),
                                  monotonic=clock, wall_clock_ns=lambda: wall[0])
    source.start()
    with caplog.at_level(logging.INFO, logger="test.shared_mode"):
        wall[0] += 2_900_000_000  # 2.9 intervals: not yet
        clock.now += 2
        for _ in range(200):
            source.current()
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]
        wall[0] += 1_000_000_000
        for step in range(5):
            clock.now += 2
            for _ in range(200):
                source.current()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "heartbeat" in warnings[0].getMessage() and KEY not in warnings[0].getMessage()
        writer.heartbeat()
        wall[0] = time.time_ns()
        source.status()
        assert any("fresh again" in r.getMessage() for r in caplog.records)


# --- auto mode --------------------------------------------------------------------------------


def test_auto_mode_uses_a_published_snapshot_without_polling(shm_prefix, writer, stand_in):
    writer.publish(document("on"))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "auto", stand_in.url))
    client.start()
    assert value(client) == "on"
    assert poller_threads() == [] and stand_in.seen() == []
    assert client.flag_source_status["source"] == "flagd"
    assert client.flag_source_status["flag_source"] == "auto"


class FakePoller:
    def __init__(self, flags: Any = None):
        self.flags = flags
        self.started = self.stopped = 0

    def start(self) -> None:
        self.started += 1

    def current(self) -> Any:
        return self.flags

    def stop(self) -> None:
        self.stopped += 1

    def status(self) -> Dict[str, Any]:
        return {"source": "poll"}


def test_auto_mode_probes_at_most_once_a_second(shm_prefix, monkeypatch):
    clock = Clock()
    logger = logging.getLogger("t")
    shared = SharedSnapshotSource(KEY, config(shm_prefix, "auto"), logger)
    probes = []
    real = shared.try_attach
    monkeypatch.setattr(shared, "try_attach", lambda: probes.append(clock.now) or real())
    poller = FakePoller("polled")
    source = AutoFlagSource(KEY, config(shm_prefix, "auto"), logger, shared=shared, poller=poller, monotonic=clock)
    source.start()
    assert poller.started == 1 and source.mode == "poll"
    for _ in range(1000):
        assert source.current() == "polled"
    clock.now += 0.5
    source.current()
    assert len(probes) == 1  # the one in start()
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document("on"))
        clock.now += 0.6
        flags = source.current()
    assert len(probes) == 2 and source.mode == "flagd" and len(flags) == 1
    assert source.current == shared.current  # the hot path is shared mode's own
    wait_until(lambda: poller.stopped == 1)


def test_auto_mode_switches_from_polling_when_flagd_appears(shm_prefix, stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("f1", "on")]))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "auto", stand_in.url, timeout_ms=2000))
    client.start()
    assert value(client) == "on" and len(poller_threads()) == 1
    assert client.flag_source_status["source"] == "poll"
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document("b"))
        wait_until(lambda: value(client) == "b", 5)
    assert client.flag_source_status["source"] == "flagd"
    wait_until(lambda: not poller_threads(), 5)
    client.stop()


def test_auto_mode_falls_back_to_polling_when_the_segment_is_refused(shm_prefix, writer, stand_in, caplog):
    writer.publish(document("b"))
    os.chmod("/dev/shm" + index_name(shm_prefix, KEY), 0o666)
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("f1", "on")]))
    with caplog.at_level(logging.ERROR, logger="test.shared_mode"):
        client = LocalEvaluationClient(KEY, config(shm_prefix, "auto", stand_in.url, timeout_ms=2000))
        client.start()
        assert value(client) == "on"
    assert sum("group or others can write" in r.getMessage() for r in caplog.records) == 1
    client.stop()


# --- fork -------------------------------------------------------------------------------------


@pytest.mark.multiprocess
@pytest.mark.parametrize("mode", ["flagd", "auto"])
def test_client_created_before_fork_works_in_the_child(shm_prefix, writer, mode):
    writer.publish(document("on"))
    client = LocalEvaluationClient(KEY, config(shm_prefix, mode))
    client.start()
    assert value(client) == "on"
    go_recv, go_send = multiprocessing.Pipe(duplex=False)

    def child(send: Any) -> None:
        send.send(("first", value(client), threading.active_count()))
        assert go_recv.poll(15)
        go_recv.recv()
        deadline = time.monotonic() + 10
        while value(client) != "b" and time.monotonic() < deadline:
            pass
        send.send(("after publish", value(client), [t.name for t in threading.enumerate()]))

    recv, pid = run_in_child(child)
    assert recv.poll(15)
    assert recv.recv() == ("first", "on", 1)
    writer.publish(document("b"))  # after the fork, in the parent
    go_send.send("published")
    assert recv.poll(15)
    assert recv.recv() == ("after publish", "b", ["MainThread"])
    assert reap(pid) == 0


@pytest.mark.multiprocess
def test_auto_client_polling_before_fork_switches_in_the_child(shm_prefix, stand_in):
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("f1", "on")]))
    client = LocalEvaluationClient(KEY, config(shm_prefix, "auto", stand_in.url, timeout_ms=2000))
    client.start()
    assert value(client) == "on"

    def child(send: Any) -> None:
        send.send(("polling", value(client)))
        deadline = time.monotonic() + 10
        while value(client) != "b" and time.monotonic() < deadline:
            time.sleep(0.01)
        send.send(("switched", value(client), client.flag_source_status["source"]))

    with SnapshotWriter(shm_prefix, KEY) as writer:
        recv, pid = run_in_child(child)
        assert recv.poll(15) and recv.recv() == ("polling", "on")
        writer.publish(document("b"))
        assert recv.poll(15)
        assert recv.recv() == ("switched", "b", "flagd")
        assert reap(pid) == 0
    client.stop()


def mapped_versions(shm_prefix: str) -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if shm_prefix in line and ".v" in line)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps to count mappings")
def test_memory_stays_bounded_across_2000_versions(shm_prefix, writer):
    flags = [flag("f%d" % n, "on") for n in range(20)]
    writer.publish({"flags": flags, "poll_interval_ms": 1000})
    client = LocalEvaluationClient(KEY, config(shm_prefix, "flagd"))
    client.start()
    cache = client._source._compiled
    for version in range(2, 2002):
        changed = version % 20
        flags[changed] = flag("f%d" % changed, "on" if version % 2 else "b")
        flags[changed]["metadata"]["flagVersion"] = version  # new content every version
        writer.publish({"flags": flags, "poll_interval_ms": 1000})
        variants = client.evaluate_v2(USER)
        assert variants["f%d" % changed].metadata["flagVersion"] == version
        assert len(cache) <= 20  # only what the current version references
    assert client.flag_source_status["version"] == 2001
    # v1 is never evaluated; v2 compiles its 20 flags, each later version only its changed one.
    assert client.flag_source_status["flags_compiled"] == 20 + 1999
    assert mapped_versions(shm_prefix) <= 2  # old versions are unmapped once nothing uses them
