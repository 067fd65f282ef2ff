"""The worker's end of the host event channel: the routing rule, the message, every fallback, the
queue's permissions (issue 14). The queue and index are real; flagd's decoding is flagd's own."""

import datetime
import gc
import logging
import os

import posix_ipc
import pytest
from amplitude import IngestionMetadata, Plan
from event_sink import Sink
from other_user import NOBODY, as_user, require_root

from amplitude_experiment import AssignmentConfig, User, Variant
from amplitude_experiment.exposure import ExposureConfig
from amplitude_experiment.snapshot import SnapshotWriter, key_hash
from amplitude_experiment.snapshot.layout import (
    W_ANALYTICS_ENDPOINT,
    W_ANALYTICS_KEY,
    analytics_endpoint_hash,
    analytics_key_hash,
    queue_name,
)
from amplitude_experiment.tracking import EvaluationTracker, canonicalize
from amplitude_experiment.tracking.host_channel import KIND_ASSIGNMENT, KIND_EXPOSURE
from flagd.event_counters import remove_queue
from flagd.events import _decode, _header, open_queue

KEY = "server-channel-test"
ANALYTICS = "analytics-key-0123456789"
URL = "http://127.0.0.1:9/2/httpapi"
#: A uid whose gid (the same number) is the queue's group: a worker of another user in flagd's group.
GROUP_MEMBER = 47115


@pytest.fixture
def host(shm_prefix):
    """An index advertising ANALYTICS at URL and flagd's queue (group GROUP_MEMBER), as flagd leaves them."""
    writer = SnapshotWriter(shm_prefix, KEY)
    queue = open_queue(queue_name(shm_prefix, KEY), GROUP_MEMBER)
    writer.words[W_ANALYTICS_ENDPOINT] = analytics_endpoint_hash(URL)
    writer.words[W_ANALYTICS_KEY] = analytics_key_hash(ANALYTICS)
    yield writer, queue
    queue.close()
    remove_queue(shm_prefix, key_hash(KEY))
    writer.close()


def tracker(shm_prefix, sink, exposure=None, assignment=None):
    logger = logging.getLogger("tests.tracking.channel")
    made = EvaluationTracker(logger, assignment, exposure, sink_factory=lambda config: sink)
    made.route_to_host(shm_prefix, KEY)
    return made


def received(queue):
    messages = []
    for _ in range(20):  # bounded: the queue holds at most 10
        try:
            fields = _header(queue.receive(0)[0])
            user, variants, props = _decode(fields)
            messages.append((fields[1], user, variants, fields[3], fields[7], props))
        except posix_ipc.BusyError:
            return messages
    return messages


VARIANTS = {"exp": Variant("on", key="on", metadata={"flagType": "experiment", "flagVersion": 3, "tags": [1, None]}),
            "rel": Variant("blue", key=None, metadata={})}


def test_a_matching_key_and_endpoint_route_to_flagd(host, shm_prefix):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    user = User(user_id="u1", device_id="d1", groups={"org": ["o"]}, user_properties={"plan": "pro"})
    made.track(user, VARIANTS, True)
    made.track(user, VARIANTS, True)  # this process's own dedup: sent once
    [(kind, sent_user, variants, timestamp, fallbacks, props)] = received(queue)
    assert kind == KIND_EXPOSURE and fallbacks == 0 and props is False
    assert (sent_user.user_id, sent_user.device_id, sent_user.groups) == ("u1", "d1", {"org": ["o"]})
    assert sent_user.user_properties is None  # exposures need no user properties
    assert {key: (v.key, v.value, v.metadata) for key, v in variants.items()} == {
        key: (v.key, v.value, v.metadata) for key, v in VARIANTS.items()}
    assert timestamp > 1.7e12
    assert canonicalize("u1", "d1", VARIANTS) == "u1 d1 exp on "  # what flagd deduplicates by
    made.flush(1)
    assert sink.events == []
    status = made.host_status()
    assert (status["sent_to_flagd"], status["delivered_here"], status["flagd_delivers"]) == (1, 0, True)


@pytest.mark.parametrize("config", [
    ExposureConfig(api_key="another-analytics-key", server_url=URL),   # another key
    ExposureConfig(api_key=ANALYTICS, server_zone="EU"),              # another endpoint
    ExposureConfig(0, api_key=ANALYTICS, server_url=URL),             # dedup turned off by the worker
    # What the worker's analytics client would add to its events or requests, or do with them:
    ExposureConfig(api_key=ANALYTICS, server_url=URL, plan=Plan(branch="main", version="3")),
    ExposureConfig(api_key=ANALYTICS, server_url=URL, ingestion_metadata=IngestionMetadata(source_name="web")),
    ExposureConfig(api_key=ANALYTICS, server_url=URL, min_id_length=1),  # user ids shorter than 5 accepted
    ExposureConfig(api_key=ANALYTICS, server_url=URL, callback=lambda event, code, message: None),
], ids=["key", "endpoint", "no-dedup", "plan", "ingestion-metadata", "min-id-length", "callback"])
def test_anything_else_stays_in_the_process(host, shm_prefix, config):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=config)
    made.track(User(user_id="u1"), VARIANTS, True)
    made.flush(5)
    assert received(queue) == []
    assert [event.event_type for event in sink.events] == ["[Experiment] Exposure"] * 2
    assert made.host_status()["not_advertised"] == 1


def test_no_key_advertised_means_no_routing(host, shm_prefix):
    writer, queue = host
    writer.words[W_ANALYTICS_KEY] = 0  # a flagd without an analytics key, or one that stopped
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made.track(User(user_id="u1"), VARIANTS, True)
    made.flush(5)
    assert received(queue) == [] and len(sink.events) == 2


def test_assignments_carry_the_evaluated_properties_only_when_sent(host, shm_prefix):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, assignment=AssignmentConfig(api_key=ANALYTICS, server_url=URL,
                                                                 send_evaluated_props=True))
    made.track(User(user_id="u1", country="DE", user_properties={"plan": "pro"}), VARIANTS, False)
    [(kind, user, _, _, _, props)] = received(queue)
    assert kind == KIND_ASSIGNMENT and props is True
    assert (user.country, user.user_properties, user.city) == ("DE", {"plan": "pro"}, None)


@pytest.mark.parametrize("user, reason", [
    (User(user_id="u1", groups={"when": [datetime.date(2026, 1, 1)]}), "unencodable"),
    (User(user_id="u\ud800"), "unencodable"),
    (User(user_id="u1", groups={"org": ["x" * 9000]}), "too_large"),
])
def test_what_a_message_cannot_carry_is_delivered_here(host, shm_prefix, user, reason):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made.track(user, VARIANTS, True)
    made.flush(5)
    assert received(queue) == []
    assert len(sink.events) == 2  # one exposure per flag
    status = made.host_status()
    assert status["fallbacks"][reason] == 1 and status["delivered_here"] == 1 and status["last_problem"] == reason


def test_a_missing_queue_is_a_counted_fallback(host, shm_prefix):
    remove_queue(shm_prefix, key_hash(KEY))
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made.track(User(user_id="u1"), VARIANTS, True)
    made.flush(5)
    assert made.host_status()["fallbacks"]["queue_missing"] == 1 and len(sink.events) == 2


def test_the_next_message_tells_flagd_of_the_fallbacks(host, shm_prefix):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made._host.resend_wait = 0.01  # nobody reads the queue here: the pipeline thread falls back soon
    capacity = queue.max_messages
    for index in range(capacity + 3):
        made.track(User(user_id="u%d" % index), VARIANTS, True)
    made.flush(5)  # the pipeline thread offered the 3 results again, then delivered them
    assert made.host_status()["fallbacks"]["queue_full"] == 3
    assert len(sink.events) == 3 * 2
    assert len(received(queue)) == capacity
    made.track(User(user_id="after"), VARIANTS, True)
    [(_, user, _, _, fallbacks, _)] = received(queue)
    assert (user.user_id, fallbacks) == ("after", 3)


def fill(queue):
    sender = posix_ipc.MessageQueue(queue.name, flags=0, read=False, write=True)
    for index in range(queue.max_messages):
        sender.send(b"filler %d" % index)
    sender.close()


def test_a_result_that_finds_the_queue_full_goes_to_flagd_when_room_appears(host, shm_prefix):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made._host.resend_wait = 10.0  # the room appears at once below; the bound only ends a failing test
    fill(queue)
    made.track(User(user_id="burst"), VARIANTS, True)  # returns: the caller never waits for room
    assert queue.receive(0)[0] == b"filler 0"  # flagd reads one: the pipeline thread's send goes in
    made.flush(10)
    assert sink.events == []
    status = made.host_status()
    assert (status["sent_to_flagd"], status["sent_after_wait"], status["delivered_here"]) == (1, 1, 0)
    for index in range(1, queue.max_messages):
        assert queue.receive(0)[0] == b"filler %d" % index
    assert [message[1].user_id for message in received(queue)] == ["burst"]


def test_no_wait_while_flagd_does_not_read(host, shm_prefix):
    _, queue = host
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made._host.resend_wait = 0.01
    fill(queue)
    for index in range(3):
        made.track(User(user_id="u%d" % index), VARIANTS, True)
    made.flush(5)
    status = made.host_status()
    assert (status["fallbacks"]["queue_full"], status["sent_after_wait"]) == (3, 0) and len(sink.events) == 3 * 2


def test_a_full_queue_of_a_flagd_that_stopped_is_not_waited_for(host, shm_prefix):
    writer, queue = host
    made = tracker(shm_prefix, Sink(), exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    channel = made._host
    channel.resend_wait = 10.0
    fill(queue)
    message = channel.send(KIND_EXPOSURE, User(user_id="late"), VARIANTS, 1.7e12, "late None exp on ")
    assert isinstance(message, bytes)  # full: to be offered again from the pipeline thread
    writer.words[W_ANALYTICS_KEY] = 0  # flagd stops (SIGTERM) after reading one: room nobody will read
    queue.receive(0)
    assert channel.resend(KIND_EXPOSURE, message) is False
    assert queue.current_messages == queue.max_messages - 1 and channel.fallbacks["queue_full"] == 1


def test_a_result_sent_after_a_wait_does_not_report_the_fallbacks_twice(host, shm_prefix):
    _, queue = host
    channel = tracker(shm_prefix, Sink(), exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))._host
    channel.resend_wait = 0.0
    fill(queue)
    first = channel.send(KIND_EXPOSURE, User(user_id="a"), VARIANTS, 1.7e12, "a None exp on ")
    assert channel.resend(KIND_EXPOSURE, first) is False  # still full: one fallback, not yet told to flagd
    second = channel.send(KIND_EXPOSURE, User(user_id="b"), VARIANTS, 1.7e12, "b None exp on ")
    queue.receive(0), queue.receive(0)  # flagd reads two fillers
    assert channel.resend(KIND_EXPOSURE, second) is True
    assert channel.send(KIND_EXPOSURE, User(user_id="c"), VARIANTS, 1.7e12, "c None exp on ") is True
    for _ in range(queue.max_messages - 2):
        queue.receive(0)
    assert {message[1].user_id: message[4] for message in received(queue)} == {"b": 0, "c": 1}


def descriptors_of(name):
    """This process's open descriptors of the message queue ``name``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink("/proc/self/fd/" + fd) == name
        except OSError:  # the listing's own descriptor, gone already
            pass
    return count


def test_a_dropped_tracker_closes_its_queue(host, shm_prefix):
    made = tracker(shm_prefix, Sink(), exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made.track(User(user_id="u1"), VARIANTS, True)
    name = queue_name(shm_prefix, KEY)
    assert descriptors_of(name) == 2  # flagd's (the fixture's) and the worker's
    del made
    gc.collect()
    assert descriptors_of(name) == 1  # else the queue stays allocated (RLIMIT_MSGQUEUE) after flagd unlinks it


def test_the_queue_has_flagds_owner_group_and_mode(host):
    _, queue = host
    stat = os.fstat(queue.mqd)
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (os.geteuid(), GROUP_MEMBER, 0o620)


def _open(name, read, write):
    try:
        posix_ipc.MessageQueue(name, flags=0, read=read, write=write).close()
        return "opened"
    except posix_ipc.PermissionsError:
        return "refused"


def test_a_group_member_may_send_only_and_an_outsider_nothing(host, shm_prefix):
    require_root()
    name = queue_name(shm_prefix, KEY)
    assert as_user(GROUP_MEMBER, _open, name, False, True) == "opened"
    assert as_user(GROUP_MEMBER, _open, name, True, False) == "refused"
    assert as_user(NOBODY, _open, name, False, True) == "refused"
    assert as_user(NOBODY, _open, name, True, False) == "refused"


def test_flagd_refuses_a_queue_another_user_created(shm_prefix):
    require_root()
    name = queue_name(shm_prefix, "server-squatted")

    def squat():
        posix_ipc.MessageQueue(name, flags=posix_ipc.O_CREX, mode=0o666, max_messages=2, max_message_size=64).close()

    as_user(NOBODY, squat)
    try:
        with pytest.raises(PermissionError, match="owned by uid 65534"):
            open_queue(name, None)
    finally:
        posix_ipc.unlink_message_queue(name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_child_counts_its_own_results_and_still_sends(host, shm_prefix):
    _, queue = host
    made = tracker(shm_prefix, Sink(), exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made.track(User(user_id="parent"), VARIANTS, True)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its counts, never return into pytest
        try:
            made.track(User(user_id="child"), VARIANTS, True)
            os.write(write_fd, str(made.host_status()["sent_to_flagd"]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_fd, 100) == b"1"
    os.close(read_fd)
    assert sorted(message[1].user_id for message in received(queue)) == ["child", "parent"]
    assert made.host_status()["sent_to_flagd"] == 1


def test_no_flagd_on_the_host_means_no_routing(shm_prefix):
    sink = Sink()
    made = tracker(shm_prefix, sink, exposure=ExposureConfig(api_key=ANALYTICS, server_url=URL))
    made.track(User(user_id="u1"), VARIANTS, True)
    made.flush(5)
    assert len(sink.events) == 2
    status = made.host_status()
    assert (status["not_advertised"], status["sent_to_flagd"], status["flagd_delivers"]) == (1, 0, False)
