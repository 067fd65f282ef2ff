"""flagd's event relay in this process, against a real queue and index: whatever a member of the
workers' group sends, and whatever signal reaches the receive thread, the relay keeps reading, or
stops advertising so workers deliver their own (issue 14)."""

import platform
import signal
import threading

import msgpack
import posix_ipc
import pytest
from event_sink import Sink
from waiting import wait_until

from amplitude_experiment.snapshot import SnapshotWriter, key_hash
from amplitude_experiment.snapshot.layout import queue_name
from amplitude_experiment.tracking.host_channel import KIND_EXPOSURE, MESSAGE_FORMAT
from flagd.event_counters import remove_queue
from flagd.events import EventRelay, analytics_config

KEY = "server-relay-test"
#: mq_timedreceive's system call number, by machine.
MQ_TIMEDRECEIVE = {"x86_64": "243", "aarch64": "183"}


@pytest.fixture
def relay(shm_prefix):
    writer = SnapshotWriter(shm_prefix, KEY)
    sink = Sink()
    made = EventRelay(shm_prefix, KEY, writer.words, analytics_config("relay-analytics-key", "http://127.0.0.1:9/2/httpapi",
                                                                      200, 100, 0),
                      cache_capacity=100, sink_factory=lambda config: sink)
    made.start()
    made.sink = sink
    sender = posix_ipc.MessageQueue(queue_name(shm_prefix, KEY), flags=0, read=False, write=True)
    made.send = sender.send
    yield made
    sender.close()
    made.stop(1)
    remove_queue(shm_prefix, key_hash(KEY))
    writer.close()


def message(user_id, fallbacks=0):
    return msgpack.packb([MESSAGE_FORMAT, KIND_EXPOSURE, "%s None on on " % user_id, 1.7e12, user_id, None, None,
                          fallbacks, None, "on", "on", "on", {}])


def received(relay, count):
    return wait_until(lambda: relay.counters()["received"] >= count, 10, "%d messages received" % count)


@pytest.mark.parametrize("fallbacks", [-1, 2 ** 64 - 1], ids=["negative", "u64-max"])
def test_a_bad_fallback_count_is_rejected_and_the_relay_reads_on(relay, fallbacks):
    relay.send(message("bad-count", fallbacks))
    relay.send(message("after"))
    received(relay, 1)
    assert relay.counters()["rejected"] == 1
    relay.stop(1)
    assert [event.user_id for event in relay.sink.events] == ["after"]


def in_receive(thread):
    with open("/proc/self/task/%d/syscall" % thread.native_id) as status:
        return status.read().split()[0] == MQ_TIMEDRECEIVE[platform.machine()]


@pytest.mark.skipif(platform.machine() not in MQ_TIMEDRECEIVE, reason="reads the thread's system call number")
def test_a_signal_on_the_receive_thread_does_not_end_it(relay):
    handled = threading.Event()
    previous = signal.signal(signal.SIGHUP, lambda *_: handled.set())  # as flagd's reload handler
    try:
        [receiver] = [thread for thread in threading.enumerate() if thread.name == "flagd.events"]
        wait_until(lambda: in_receive(receiver), 10, "the relay waiting in mq_timedreceive")
        signal.pthread_kill(receiver.ident, signal.SIGHUP)  # its C handler runs there: the receive fails with EINTR
        wait_until(handled.is_set, 10, "the signal handled")  # delivered: the default action is no longer a risk
    finally:
        signal.signal(signal.SIGHUP, previous)
    relay.send(message("after-signal"))
    received(relay, 1)
    assert relay.counters()["delivers"]


def test_a_relay_that_can_no_longer_read_stops_advertising(relay):
    queue, relay._queue = relay._queue, None
    queue.close()  # the next receive fails: nobody would read what workers send
    wait_until(lambda: not relay.counters()["delivers"], 10, "the analytics key withdrawn")


def test_a_result_the_delivery_cannot_take_is_counted_as_dropped(shm_prefix):
    writer = SnapshotWriter(shm_prefix, KEY)

    def broken(config):
        raise RuntimeError("the analytics client cannot start")

    made = EventRelay(shm_prefix, KEY, writer.words, analytics_config("relay-analytics-key", "http://127.0.0.1:9/x",
                                                                      200, 100, 0), 100, sink_factory=broken)
    made.start()
    sender = posix_ipc.MessageQueue(queue_name(shm_prefix, KEY), flags=0, read=False, write=True)
    try:
        sender.send(message("lost"))
        received(made, 1)
        wait_until(lambda: made.counters()["dropped"] == 1, 10, "the result counted as dropped")
    finally:
        sender.close()
        made.stop(1)
        remove_queue(shm_prefix, key_hash(KEY))
        writer.close()


@pytest.mark.parametrize("analytics_key, endpoint", [("another-analytics-key", "http://127.0.0.1:9/2/httpapi"),
                                                     ("relay-analytics-key", "http://127.0.0.1:9/eu/httpapi")],
                         ids=["key", "endpoint"])
def test_messages_left_for_another_key_or_endpoint_are_not_delivered_with_ours(shm_prefix, analytics_key, endpoint):
    writer = SnapshotWriter(shm_prefix, KEY)
    killed = EventRelay(shm_prefix, KEY, writer.words, analytics_config(analytics_key, endpoint, 200, 100, 0), 100,
                        sink_factory=lambda config: Sink())
    killed.start()  # advertises its route; stopped below without reading what is sent after
    killed._stopping = True
    killed._thread.join(5)
    sender = posix_ipc.MessageQueue(queue_name(shm_prefix, KEY), flags=0, read=False, write=True)
    sender.send(message("for-them-1"))
    sender.send(message("for-them-2"))
    sink = Sink()
    relay = EventRelay(shm_prefix, KEY, writer.words, analytics_config("relay-analytics-key",
                                                                       "http://127.0.0.1:9/2/httpapi", 200, 100, 0),
                       100, sink_factory=lambda config: sink)
    try:
        relay.start()
        sender.send(message("for-us"))
        received(relay, 1)
        relay.stop(1)
        assert [event.user_id for event in sink.events] == ["for-us"]
        assert relay.counters()["rejected"] == 2
    finally:
        sender.close()
        killed._queue.close()
        remove_queue(shm_prefix, key_hash(KEY))
        writer.close()


def test_messages_left_for_our_key_and_endpoint_are_delivered(shm_prefix):
    writer = SnapshotWriter(shm_prefix, KEY)
    config = analytics_config("relay-analytics-key", "http://127.0.0.1:9/2/httpapi", 200, 100, 0)
    killed = EventRelay(shm_prefix, KEY, writer.words, config, 100, sink_factory=lambda config: Sink())
    killed.start()
    killed._stopping = True
    killed._thread.join(5)
    sender = posix_ipc.MessageQueue(queue_name(shm_prefix, KEY), flags=0, read=False, write=True)
    sender.send(message("left"))
    sink = Sink()
    relay = EventRelay(shm_prefix, KEY, writer.words, config, 100, sink_factory=lambda config: sink)
    try:
        relay.start()
        received(relay, 1)
        relay.stop(1)
        assert [event.user_id for event in sink.events] == ["left"] and relay.counters()["rejected"] == 0
    finally:
        sender.close()
        killed._queue.close()
        remove_queue(shm_prefix, key_hash(KEY))
        writer.close()
