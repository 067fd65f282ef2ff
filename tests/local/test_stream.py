"""stream_updates=True: flag lists over Server-Sent Events, polling as the fallback, against the
stand-in's stream endpoint (tests/stand_in.py, EventStream)."""

import threading
import time

import pytest

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment._flag_api import stream_retry_delay
from amplitude_experiment.local._poller import PollingFlagSource
from amplitude_experiment.local._streamer import StreamingFlagSource
from forking import reap, run_in_child
from stand_in import Answer, EventStream
from test_poller import flag
from waiting import wait_until

FLAGS_PATH = "/sdk/v2/flags"
STREAM_PATH = "/sdk/stream/v1/flags"
#: What Amplitude's SDK 1.13.0 sends on the stream request (seen by the stand-in from the reference).
REFERENCE_STREAM_HEADERS = {
    "Authorization": "Api-Key server-key-123",
    "Content-Type": "application/json;charset=utf-8",
    "X-Amp-Exp-Library": "experiment-python-server/1.13.0",
    "Accept-Encoding": "identity",
}


def streaming_client(server, keep_alive_s=5.0, retry_s=0.2, conn_timeout_ms=2000, interval_ms=60000,
                     flag_source="poll", poller_class=PollingFlagSource, **poller_options):
    """A client streaming from ``server``, with the watchdog and retry intervals shortened; its
    fallback poller is a ``poller_class`` built with ``poller_options`` (a wall clock, say)."""
    config = LocalEvaluationConfig(server_url=server.url, stream_server_url=server.url, stream_updates=True,
                                   stream_flag_conn_timeout=conn_timeout_ms, flag_source=flag_source,
                                   flag_config_polling_interval_millis=interval_ms,
                                   flag_config_poller_request_timeout_millis=2000)
    client = LocalEvaluationClient("server-key-123", config)
    poller = poller_class("server-key-123", config, client.logger, **poller_options)
    source = StreamingFlagSource("server-key-123", config, client.logger, poller=poller, keep_alive_s=keep_alive_s,
                                 retry_s=retry_s, retry_jitter_s=retry_s / 10, max_retry_s=retry_s * 4)
    client._source = source
    return client


def value(client, key="a"):
    variant = client.evaluate_v2(User(user_id="u1")).get(key)
    return variant.value if variant is not None else None


def polls(server):
    return len(server.seen(FLAGS_PATH))


def stream_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("amplitude_experiment.")]


def test_first_message_is_applied_before_start_returns_and_no_poll_is_made(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "polled")]))
    with streaming_client(stand_in) as client:
        client.start()
        assert value(client) == "v1"
        status = client.flag_source_status
        assert status["transport"] == "stream"
        assert status["stream_messages"] == 1
    assert polls(stand_in) == 0


def test_the_stream_request_carries_the_reference_headers(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a")]))
    with streaming_client(stand_in) as client:
        client.start()
    request = stand_in.seen(STREAM_PATH)[0]
    assert request.method == "GET" and request.query == ""
    headers = {name: text for name, text in request.headers.items() if name != "Host"}
    assert headers == REFERENCE_STREAM_HEADERS


def test_a_pushed_change_is_applied_in_storage_order(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1"), flag("b"), flag("c")]))
    with streaming_client(stand_in) as client:
        client.start()
        stand_in.push([flag("d"), flag("c"), flag("a", "v2")])
        wait_until(lambda: value(client) == "v2", what="the pushed flag list")
        # A replaced key keeps its place, new keys are appended: a poll result's storage order.
        assert list(client.evaluate_v2(User(user_id="u1"))) == ["a", "c", "d"]
    assert polls(stand_in) == 0


def test_keep_alives_keep_the_stream_alive(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")], keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "polled")]))
    with streaming_client(stand_in, keep_alive_s=0.8) as client:
        client.start()
        watched_until = time.monotonic() + 2.4  # three watchdog periods of keep-alives only
        while time.monotonic() < watched_until:
            assert client.flag_source_status["transport"] == "stream"
            time.sleep(0.05)
        stand_in.push([flag("a", "v2")])
        wait_until(lambda: value(client) == "v2", what="a push on the same connection")
    assert stand_in.streams_opened == 1
    assert polls(stand_in) == 0


def test_silence_trips_the_watchdog_and_polling_takes_over(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]), Answer(503, "down"))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "polled")]))
    with streaming_client(stand_in, keep_alive_s=0.3, retry_s=0.2, interval_ms=50) as client:
        client.start()
        assert value(client) == "v1"
        wait_until(lambda: value(client) == "polled", what="polling after the watchdog")
        status = client.flag_source_status
        assert status["transport"] == "poll"
        assert "keep-alive timed out" in status["stream_last_error"]
        stand_in.wait_for(3, FLAGS_PATH)  # and it goes on polling while the stream is down


def test_a_stream_that_stalls_then_answers_still_delivers_later_updates(stand_in):
    # Quirk Q5 of the reference: after a slow connect it polls once and then gets nothing more.
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "streamed")], delay=0.6))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "polled")]))
    with streaming_client(stand_in, conn_timeout_ms=100, interval_ms=50) as client:
        client.start()
        assert value(client) == "polled"  # start() did not wait for the slow stream
        assert client.flag_source_status["transport"] == "poll"
        stand_in.wait_for(3, FLAGS_PATH)  # and polls meanwhile
        wait_until(lambda: value(client) == "streamed", what="the slow stream's first message")
        stand_in.push([flag("a", "pushed")])
        wait_until(lambda: value(client) == "pushed", what="a later push")
        assert client.flag_source_status["transport"] == "stream"


def test_500_falls_back_to_polling_then_the_stream_returns_and_polling_stops(stand_in):
    stand_in.answer("GET", STREAM_PATH, Answer(500, "oops"), Answer(500, "oops"),
                    EventStream(initial=[flag("a", "streamed")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "polled")]))
    with streaming_client(stand_in, retry_s=0.15, interval_ms=30) as client:
        client.start()
        assert value(client) == "polled"  # the fallback's first poll ran inside start()
        assert "HTTP 500" in client.flag_source_status["stream_last_error"]
        stand_in.wait_for(4, FLAGS_PATH)
        wait_until(lambda: value(client) == "streamed", what="the stream coming back")
        polls_when_back = polls(stand_in)
        for index in range(5):  # five pushes, each applied, each taking at least a poll interval
            stand_in.push([flag("a", "push-%d" % index)])
            wait_until(lambda: value(client) == "push-%d" % index, what="push %d" % index)
            time.sleep(0.03)
        # At most one poll that was already under way when the stream came back.
        assert polls(stand_in) <= polls_when_back + 1
        assert client.flag_source_status["transport"] == "stream"
    attempts = [request.at for request in stand_in.seen(STREAM_PATH)]
    assert len(attempts) == 3
    assert attempts[2] - attempts[1] > attempts[1] - attempts[0]  # retries back off


def test_a_stream_the_server_ends_is_reopened(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]), EventStream(initial=[flag("a", "v2")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    with streaming_client(stand_in, retry_s=0.1) as client:
        client.start()
        assert stand_in.disconnect() == 1
        wait_until(lambda: value(client) == "v2", what="the second connection's flags")
        assert "ended the stream" in client.flag_source_status["stream_last_error"]


def test_stop_ends_every_thread_within_a_second(stand_in):
    stand_in.answer("GET", STREAM_PATH, Answer(500, "down"), EventStream(initial=[flag("a")], keep_alive_every=0.05))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a")]))
    before = set(stream_threads())
    client = streaming_client(stand_in, retry_s=0.05, interval_ms=50)
    client.start()  # the poller runs (500), then the stream comes back
    wait_until(lambda: client.flag_source_status["transport"] == "stream", what="the stream")
    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 1.0
    assert set(stream_threads()) - before == set()
    assert stand_in.open_streams() == 0 or wait_until(lambda: stand_in.open_streams() == 0, 2.0, "the server side")


def test_a_stream_that_never_connects_stops_promptly(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a")], delay=5.0))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a")]))
    before = set(stream_threads())
    client = streaming_client(stand_in, conn_timeout_ms=50)
    client.start()
    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 1.0
    assert set(stream_threads()) - before == set()


def test_retry_delays_back_off_with_jitter():
    assert stream_retry_delay(1, 15.0, 1.0, 120.0, uniform=lambda low, high: 0.0) == 15.0
    assert stream_retry_delay(2, 15.0, 1.0, 120.0, uniform=lambda low, high: 0.0) == 30.0
    assert stream_retry_delay(10, 15.0, 1.0, 120.0, uniform=lambda low, high: 0.0) == 120.0
    assert stream_retry_delay(1, 15.0, 1.0, 120.0, uniform=lambda low, high: high) == 16.0
    assert stream_retry_delay(1, 15.0, 1.0, 120.0, uniform=lambda low, high: low) == 14.0


def test_the_default_client_streams_when_asked(stand_in):
    """Through the public config only: no warning, the stream serves the flags."""
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    config = LocalEvaluationConfig(server_url=stand_in.url, stream_server_url=stand_in.url, stream_updates=True,
                                   flag_source="poll")
    with LocalEvaluationClient("server-key-123", config) as client:
        client.start()
        assert value(client) == "v1"
        assert client.flag_source_status["transport"] == "stream"


def test_auto_mode_with_flagd_present_opens_no_stream(stand_in, shm_prefix):
    from amplitude_experiment.evaluation import plan_flags
    from amplitude_experiment.snapshot import SnapshotWriter

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "streamed")]))
    writer = SnapshotWriter(shm_prefix, "server-key-123")
    try:
        writer.publish({"source": "test"}, catalog=plan_flags([flag("a", "published")], ()))
        config = LocalEvaluationConfig(server_url=stand_in.url, stream_server_url=stand_in.url, stream_updates=True,
                                       flag_source="auto", shm_prefix=shm_prefix)
        with LocalEvaluationClient("server-key-123", config) as client:
            client.start()
            assert value(client) == "published"
            assert client.flag_source_status["source"] == "flagd"
    finally:
        writer.close()
    assert stand_in.seen() == []


@pytest.mark.multiprocess
def test_a_client_started_before_fork_streams_in_the_child(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    with streaming_client(stand_in) as client:
        client.start()

        def child(send):  # its own stream delivers the next push
            send.send(wait_until(lambda: value(client) == "v2" and "v2", 10, "v2 in the child"))

        recv, pid = run_in_child(child)
        stand_in.wait_streams(2)  # the parent's and the child's own
        stand_in.push([flag("a", "v2")])
        assert recv.poll(15) and recv.recv() == "v2"
        assert reap(pid) == 0
        assert value(client) == "v2"


def test_a_rejected_message_keeps_the_last_flags_and_the_stream_and_polls_until_a_good_one(stand_in):
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    with streaming_client(stand_in, interval_ms=50) as client:
        client.start()
        assert polls(stand_in) == 0
        stand_in.push("[{not json")
        wait_until(lambda: client.flag_source_status["stream_messages"] == 2, what="the bad message")
        assert value(client) == "v1"
        stand_in.wait_for(2, FLAGS_PATH)  # the stream does not deliver flags now: polling stands in
        status = client.flag_source_status
        assert status["transport"] == "poll"
        assert "not JSON" in status["stream_last_error"]
        stand_in.push([flag("a", "v2")])
        wait_until(lambda: value(client) == "v2", what="the next good message")
        assert client.flag_source_status["transport"] == "stream"
    assert stand_in.streams_opened == 1


def test_a_connection_is_renewed_quietly_at_its_maximum_age(stand_in):
    from amplitude_experiment._flag_stream import FlagStream

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a")], keep_alive_every=0.05))
    stream = FlagStream(stand_in.url + STREAM_PATH, "server-key-123", keep_alive_s=5.0, max_connection_s=0.3,
                        max_connection_jitter_s=0.0)
    messages = []
    stream.run_once(messages.append)  # returns, no StreamError
    assert len(messages) == 1
    wait_until(lambda: stand_in.open_streams() == 0, 5, "the server side closed")


def test_an_event_over_the_size_cap_ends_the_connection(stand_in):
    from amplitude_experiment._flag_stream import FlagStream, StreamError

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a-%d" % index) for index in range(50)]))
    stream = FlagStream(stand_in.url + STREAM_PATH, "server-key-123", keep_alive_s=5.0, max_bytes=1000)
    with pytest.raises(StreamError, match="larger than the 1000 bytes"):
        stream.run_once(lambda data: None)


@pytest.mark.parametrize("first", ['{"error": "not a flag list"}', "<html>proxy login</html>"])
def test_a_first_message_that_is_not_a_flag_list_does_not_stop_polling(stand_in, first):
    # Only a flag list this SDK applies counts as the stream delivering: a client must not be left
    # without flags, polling paused, behind a stream that sends something else.
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=first))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "polled")]))
    with streaming_client(stand_in, interval_ms=50) as client:
        client.start()
        assert value(client) == "polled"
        assert client.flag_source_status["transport"] == "poll"
        stand_in.wait_for(3, FLAGS_PATH)  # polling goes on
        stand_in.push([flag("a", "pushed")])
        wait_until(lambda: value(client) == "pushed", what="the next good message")
        assert client.flag_source_status["transport"] == "stream"



class SteppedClock:
    """A monotonic clock the test moves on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_the_server_ends_mid_event_delivers_no_part_of_it(stand_in):
    from amplitude_experiment._flag_stream import FlagStream, StreamError

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    stream = FlagStream(stand_in.url + STREAM_PATH, "server-key-123", keep_alive_s=5.0)
    messages = []

    def on_message(data):
        messages.append(data)
        if len(messages) == 1:
            stand_in.send_raw(b'data: [{"key": "a", "variants": ')  # the first part of an event
            stand_in.disconnect()  # and the server hangs up

    with pytest.raises(StreamError, match="ended the stream"):
        stream.run_once(on_message)
    assert len(messages) == 1


def test_a_connection_is_renewed_only_between_events(stand_in):
    from amplitude_experiment._flag_stream import FlagStream

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a")]))
    clock = SteppedClock()
    stream = FlagStream(stand_in.url + STREAM_PATH, "server-key-123", keep_alive_s=100.0, max_connection_s=60.0,
                        max_connection_jitter_s=0.0, monotonic=clock)
    last = '[{"key": "c"}]'
    messages = []

    def on_message(data):
        messages.append(data)
        if len(messages) == 1:
            # One write: a whole event and the first bytes of the next, as a server's buffer may send them.
            stand_in.send_raw(b'data: [{"key": "b"}]\n\ndata: ' + last[:5].encode())
        elif len(messages) == 2:
            clock.now += 61.0  # the connection's maximum age is reached in the middle of the next event
            stand_in.send_raw(last[5:].encode() + b"\n\n")  # the rest of it

    stream.run_once(on_message)  # renewed: returns
    assert messages[1:] == ['[{"key": "b"}]', last]


def test_a_long_line_reaches_the_event_parser_in_one_piece():
    # sseclient joins the pieces of a line by bytes concatenation, which copies the whole line per
    # piece: a 32 MB flag list in 64 KB reads took 6 s of CPU. Whole lines keep it to one copy.
    from amplitude_experiment._flag_stream import FlagStream

    line = b"data: [" + b"x" * 100_000 + b"]\n"
    body = [line[:30_000], line[30_000:70_000], line[70_000:] + b"\ndata: [1]", b"\n\n"]

    class Response:
        class raw:
            read1 = staticmethod(lambda size, pieces=iter(body + [b""]): next(pieces))

    stream = FlagStream("http://127.0.0.1:1/sdk/stream/v1/flags", "server-key-123", monotonic=lambda: 0.0)
    pieces = list(stream._chunks(Response(), renew_at=float("inf")))
    assert pieces == [line + b"\n", b"data: [1]\n\n"]


def test_stop_while_the_fallback_poll_stalls_ends_every_thread_within_a_second(stand_in):
    # The stream fails; its thread polls the API, which stalls (the poll timeout is 2 s).
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a")], delay=5.0))
    before = set(stream_threads())
    client = streaming_client(stand_in, retry_s=60.0)
    client.start()
    stand_in.disconnect()
    stand_in.wait_for(1, FLAGS_PATH)  # the fallback poll is under way
    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 1.0
    assert set(stream_threads()) - before == set()


def test_a_poll_that_starts_after_a_stream_message_does_not_replace_it(stand_in):
    # The API may lag behind the stream (a cached answer): a timed poll that begins once the
    # stream has delivered must not install its older list over the stream's, then stay paused on it.
    stand_in.answer("GET", STREAM_PATH, EventStream())  # connects, sends nothing until the push
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "older")]))
    timed_polls = []

    class PollerWithALateTimedPoll(PollingFlagSource):
        def _poll_once(self):
            if threading.current_thread().name != "amplitude_experiment.flag_poller":
                return super()._poll_once()  # start()'s first poll
            if not timed_polls:  # the timer decided to poll; the stream delivers first
                stand_in.push([flag("a", "streamed")])
                wait_until(lambda: client._source.transport == "stream", what="the stream's message installed")
            result = super()._poll_once()
            timed_polls.append(result)
            return result

    client = streaming_client(stand_in, conn_timeout_ms=50, interval_ms=50, poller_class=PollerWithALateTimedPoll)
    with client:
        client.start()
        wait_until(lambda: timed_polls, what="the timed poll")
        assert value(client) == "streamed"
        assert client.flag_source_status["transport"] == "stream"


def test_a_message_the_json_parser_cannot_nest_that_deep_does_not_end_the_stream(stand_in):
    # json raises RecursionError (not ValueError) for deep nesting: the stream thread must survive it.
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    with streaming_client(stand_in) as client:
        client.start()
        stand_in.push("[" * 100_000 + "]" * 100_000)
        stand_in.push([flag("a", "v2")])
        wait_until(lambda: value(client) == "v2", what="the message after the deep one")
        assert "recursion" in client.flag_source_status["stream_last_error"]


@pytest.mark.multiprocess
def test_two_threads_that_first_evaluate_in_a_child_open_one_stream(stand_in):
    # A threaded worker's first requests may evaluate at once: one restart after fork, not two
    # (two left a second stream thread and connection that stop() did not know of).
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    with streaming_client(stand_in) as client:
        client.start()

        def child(send):
            source = client._source
            both_restarting = threading.Barrier(2, timeout=2.0)
            abandon = source._stream.abandon

            def abandon_when_both_are_here():
                try:
                    if both_restarting.wait() == 1:  # the second goes on once the first restarted
                        wait_until(lambda: source._thread is not None and source._thread.is_alive(), 5,
                                   "the first thread's restart")
                except threading.BrokenBarrierError:
                    pass  # the other thread is not restarting too
                abandon()

            source._stream.abandon = abandon_when_both_are_here
            evaluating = [threading.Thread(target=value, args=(client,)) for _ in range(2)]
            for thread in evaluating:
                thread.start()
            for thread in evaluating:
                thread.join(10)
            wait_until(lambda: source.transport == "stream", what="the child's stream")
            names = [thread.name for thread in threading.enumerate()]
            send.send((names.count("amplitude_experiment.flag_stream"), names.count("amplitude_experiment.flag_poller")))
            client.stop()

        recv, pid = run_in_child(child)
        assert recv.poll(20)
        assert recv.recv() == (1, 1)
        assert reap(pid) == 0


def test_keep_alives_keep_the_status_age_fresh_while_the_stream_delivers(stand_in):
    # A quiet stream is a current one: age_seconds must not grow as if polling had stopped working.
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]))
    clock = SteppedClock()
    with streaming_client(stand_in, wall_clock=clock) as client:
        client.start()
        assert client.flag_source_status["age_seconds"] == 0
        clock.now += 600.0  # ten minutes of keep-alives only
        stand_in.keep_alive()
        wait_until(lambda: client.flag_source_status["age_seconds"] == 0, what="the keep-alive confirming the flags")


def test_a_stream_that_fails_right_after_its_first_message_during_start_falls_back(stand_in):
    # The failure comes before start() looks at the transport: start() must poll, not trust it.
    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "v1")]), Answer(500, "down"))
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag("a", "v1")]))
    client = streaming_client(stand_in, retry_s=60.0, interval_ms=50)
    source = client._source

    class FailingRightAfterTheFirstMessage(threading.Event):
        def wait(self, timeout=None):
            delivered = super().wait(timeout)
            stand_in.disconnect()
            wait_until(lambda: source._stream_failures, what="the failure after the first message")
            return delivered

    source._first_outcome = FailingRightAfterTheFirstMessage()
    with client:
        client.start()
        assert client.flag_source_status["transport"] == "poll"
        stand_in.wait_for(2, FLAGS_PATH)  # and it polls while the stream waits for its retry


def test_a_close_while_a_connection_is_being_set_up_sends_no_request(stand_in):
    # stop() may land after run_once() checked for it but before the request: the request must not
    # go out (it would hold the thread until the server answers, up to the keep-alive time).
    import requests

    from amplitude_experiment._flag_stream import FlagStream

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a")], delay=3.0))
    holder = {}

    def session_closed_meanwhile():
        holder["stream"].close()  # as stop() on another thread, at this moment
        return requests.Session()

    stream = holder["stream"] = FlagStream(stand_in.url + STREAM_PATH, "server-key-123",
                                           session_factory=session_closed_meanwhile)
    stream.run_once(lambda data: None)
    assert stand_in.seen(STREAM_PATH) == []


def test_a_process_that_streams_and_never_evaluates_switches_when_flagd_appears(stand_in, shm_prefix):
    # A preloading master streams from start() and never evaluates: when flagd comes up later, its
    # stream must close like its poller would, so the host keeps one connection (flagd's).
    from amplitude_experiment.evaluation import plan_flags
    from amplitude_experiment.snapshot import SnapshotWriter

    stand_in.answer("GET", STREAM_PATH, EventStream(initial=[flag("a", "streamed")], keep_alive_every=0.05))
    config = LocalEvaluationConfig(server_url=stand_in.url, stream_server_url=stand_in.url, stream_updates=True,
                                   flag_source="auto", shm_prefix=shm_prefix,
                                   flag_config_polling_interval_millis=100)
    with LocalEvaluationClient("server-key-123", config) as client:
        client.start()
        assert client.flag_source_status["transport"] == "stream"
        writer = SnapshotWriter(shm_prefix, "server-key-123")
        try:
            writer.publish({"source": "test"}, catalog=plan_flags([flag("a", "published")], ()))
            wait_until(lambda: stand_in.open_streams() == 0, what="the stream closed for flagd's snapshot")
            assert client._source.mode == "flagd"
        finally:
            writer.close()
