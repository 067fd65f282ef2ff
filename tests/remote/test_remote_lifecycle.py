"""Connections, concurrency, ``close()``, the context manager and ``fork()`` (docs/compatibility.md, 'Public API', 'Connection pool')."""

import os
import threading

import pytest

from amplitude_experiment import Experiment, RemoteEvaluationClient, RemoteEvaluationConfig, User
from amplitude_experiment._fork import notice_fork
from amplitude_experiment.remote.client import ClientClosedError
from amplitude_experiment.remote.config import DEFAULT_CONNECTION_POOL_MAX_SIZE
from remote_support import KEY, VARDATA, VARIANTS, ok


def fetch_from_threads(client, count):
    """``count`` fetches started together; returns their results."""
    results = [None] * count
    barrier = threading.Barrier(count)

    def run(index):
        barrier.wait(timeout=10)
        results[index] = client.fetch_v2(User(user_id="u%d" % index))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return results


def test_the_default_pool_fetches_eight_threads_at_once(roomy_stand_in, make_client):
    stand_in = roomy_stand_in
    stand_in.answer("POST", VARDATA, ok(delay=1.0))
    client = make_client()
    assert client.config.connection_pool_max_size == DEFAULT_CONNECTION_POOL_MAX_SIZE >= 8

    results = fetch_from_threads(client, 8)

    assert all(set(result) == set(VARIANTS) for result in results)
    arrivals = sorted(seen.at for seen in stand_in.seen(VARDATA))
    assert arrivals[-1] - arrivals[0] < 1.0  # all eight were on the wire before the first answer


def test_an_explicit_pool_size_caps_concurrent_fetches(roomy_stand_in, make_client):
    stand_in = roomy_stand_in
    stand_in.answer("POST", VARDATA, ok(delay=0.4))
    client = make_client(connection_pool_max_size=2)

    results = fetch_from_threads(client, 6)

    assert all(set(result) == set(VARIANTS) for result in results)
    arrivals = sorted(seen.at for seen in stand_in.seen(VARDATA))
    assert arrivals[1] - arrivals[0] < 0.4  # two at once...
    assert arrivals[2] - arrivals[0] >= 0.39 and arrivals[4] - arrivals[2] >= 0.39  # ...and no more


def test_a_pool_of_one_serialises_fetches_like_the_reference(roomy_stand_in, make_client):
    stand_in = roomy_stand_in
    stand_in.answer("POST", VARDATA, ok(delay=0.1))
    client = make_client(connection_pool_max_size=1)

    fetch_from_threads(client, 3)

    arrivals = sorted(seen.at for seen in stand_in.seen(VARDATA))
    assert arrivals[1] - arrivals[0] >= 0.09 and arrivals[2] - arrivals[1] >= 0.09


def test_close_is_idempotent_and_later_fetches_send_nothing(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    client = make_client()
    assert client.fetch_v2(User(user_id="u1"))

    client.close()
    client.close()

    assert client.fetch_v2(User(user_id="u1")) == {}  # a retryable failure with no retries, as in the reference
    assert client.fetch_async_v2(User(user_id="u1")).result(timeout=5) == {}
    assert len(stand_in.seen(VARDATA)) == 1


def test_a_closed_client_with_retries_raises_at_once(stand_in, make_client):
    client = make_client(fetch_retries=3, fetch_retry_backoff_min_millis=5000)
    client.close()

    with pytest.raises(ClientClosedError):
        client.fetch_v2(User(user_id="u1"))  # without sleeping through the 5 s backoff
    assert stand_in.seen() == []


def test_close_interrupts_a_retry_backoff(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok(delay=0.2), ok())
    client = make_client(fetch_timeout_millis=50, fetch_retries=1, fetch_retry_backoff_min_millis=60000)
    future = client.fetch_async_v2(User(user_id="u1"))
    stand_in.wait_for(1, VARDATA)

    closer = threading.Thread(target=client.close)
    closer.start()
    closer.join(timeout=10)

    assert not closer.is_alive()
    assert isinstance(future.exception(timeout=5), ClientClosedError)
    assert len(stand_in.seen(VARDATA)) == 1


def test_close_lets_running_async_fetches_finish(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok(delay=0.2))
    client = make_client()
    calls = []
    future = client.fetch_async_v2(User(user_id="u1"), lambda user, variants: calls.append(variants))
    stand_in.wait_for(1, VARDATA)

    client.close()

    assert future.done() and set(future.result()) == set(VARIANTS)
    assert len(calls) == 1


def test_a_callback_may_close_the_client(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    client = make_client()

    future = client.fetch_async_v2(User(user_id="u1"), lambda user, variants: client.close())

    assert set(future.result(timeout=10)) == set(VARIANTS)
    assert client.fetch_v2(User(user_id="u1")) == {}


def test_the_context_manager_closes_the_client(stand_in):
    stand_in.answer("POST", VARDATA, ok())

    with RemoteEvaluationClient(KEY, RemoteEvaluationConfig(server_url=stand_in.url)) as client:
        assert set(client.fetch_v2(User(user_id="u1"))) == set(VARIANTS)

    assert client.fetch_v2(User(user_id="u1")) == {}
    assert len(stand_in.seen(VARDATA)) == 1


def test_initialize_remote_returns_one_client_per_key(stand_in):
    first = Experiment.initialize_remote(KEY, RemoteEvaluationConfig(server_url=stand_in.url))

    assert Experiment.initialize_remote(KEY) is first
    assert Experiment.initialize_remote(KEY + "-other") is not first


# --- fork ---------------------------------------------------------------------------------------


def test_a_fork_child_builds_its_own_session_and_executor(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    client = make_client()
    client.fetch_async_v2(User(user_id="parent")).result(timeout=10)
    parent_session, parent_executor = client._session, client._executor

    notice_fork()  # what os.register_at_fork does in a child

    assert set(client.fetch_v2(User(user_id="child"))) == set(VARIANTS)
    assert client._session is not parent_session
    assert set(client.fetch_async_v2(User(user_id="child")).result(timeout=10)) == set(VARIANTS)
    assert client._executor is not parent_executor
    parent_executor.shutdown()
    parent_session.close()


@pytest.mark.multiprocess
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_real_fork_child_fetches_on_its_own_connection(stand_in, make_client):
    stand_in.answer("POST", VARDATA, ok())
    client = make_client()
    assert client.fetch_v2(User(user_id="parent"))  # leaves a pooled keep-alive connection behind
    parent_session = client._session
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        status = 1
        try:
            variants = client.fetch_v2(User(user_id="child"))
            ok_ = set(variants) == set(VARIANTS) and client._session is not parent_session
            os.write(write_end, b"ok" if ok_ else b"bad")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)

    assert report == b"ok" and os.WEXITSTATUS(status) == 0
    assert set(client.fetch_v2(User(user_id="parent-again"))) == set(VARIANTS)  # the parent's pool is intact
    assert [seen.json()["user_id"] for seen in stand_in.seen(VARDATA)] == ["parent", "child", "parent-again"]
