"""Fixtures for the remote client tests: clients pointed at the stand-in, closed after each test."""

import socket
from typing import List

import pytest

from amplitude_experiment import RemoteEvaluationClient, RemoteEvaluationConfig

from remote_support import KEY


@pytest.fixture
def make_client(stand_in):
    """``make_client(**config)`` builds a client for the stand-in (or ``server_url=``), closed at teardown."""
    clients: List[RemoteEvaluationClient] = []

    def make(**options):
        options.setdefault("server_url", stand_in.url)
        client = RemoteEvaluationClient(KEY, RemoteEvaluationConfig(**options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def refused_url():
    """A 127.0.0.1 URL where nothing listens: the port was bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return "http://127.0.0.1:%d" % port


@pytest.fixture
def roomy_stand_in(stand_in):
    """The stand-in, able to queue many simultaneous connects.

    http.server listens with a backlog of 5: a 6th connect arriving at once waits for a SYN
    retransmit (1 s), which would look like a client that does not fetch concurrently. Calling
    listen() again on Linux only raises the backlog.
    """
    stand_in._server.socket.listen(64)
    return stand_in
