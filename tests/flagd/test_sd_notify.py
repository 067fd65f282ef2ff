"""sd_notify against a real AF_UNIX datagram socket (path and abstract), and flagd's use of it."""

import os
import signal
import socket
import uuid

import pytest

from flagd_kit import marker_flags, wait_until
from stand_in import Answer

from flagd.config import ExitCode
from flagd.sd_notify import Notifier, notify


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: collects datagrams."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.address = address
        self.messages = []

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return self.messages

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        def found():
            self.drain()
            return next((message for message in self.messages if text in message), None)
        return wait_until(found, timeout, "notification %r (got %s)" % (text, self.messages[-5:]))

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request, tmp_path):
    address = str(tmp_path / "notify.sock") if request.param == "path" else "@flagd-test-" + uuid.uuid4().hex
    fake = FakeSystemd(address)
    yield fake
    fake.close()


def test_notify_sends_one_datagram(systemd):
    assert notify("READY=1\nSTATUS=v1", {"NOTIFY_SOCKET": systemd.address})
    assert systemd.drain() == ["READY=1\nSTATUS=v1"]


def test_not_under_systemd_is_a_no_op():
    assert notify("READY=1", {}) is False
    notifier = Notifier(environ={})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.ready("v1") is False


def test_missing_socket_does_not_raise(tmp_path):
    assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_notifier_messages(systemd):
    notifier = Notifier(environ={"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "3000000"})
    assert notifier.watchdog_interval == 1.5
    notifier.ready("v3 flags=2 age=0")
    notifier.ready("v4 flags=2 age=0")  # READY=1 only once
    notifier.watchdog()
    notifier.stopping()
    messages = systemd.drain()
    assert messages[0].startswith("READY=1\nSTATUS=v3 flags=2 age=0\nMAINPID=%d" % os.getpid())
    assert messages[1:] == ["STATUS=v4 flags=2 age=0", "WATCHDOG=1", "STOPPING=1"]


def test_watchdog_pid_must_be_ours():
    environ = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(environ=environ, getpid=lambda: 4242).watchdog_interval is None
    assert Notifier(environ=environ, getpid=lambda: 1).watchdog_interval == 0.5


@pytest.mark.multiprocess
def test_flagd_ready_watchdog_status_stopping(systemd, stand_in, flagd):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, marker_flags("a", extra=1)))
    # A poll interval far longer than the watchdog: pings must come from the loop's own wake-ups.
    daemon = flagd("--server-url", stand_in.url, "--poll-interval-ms", "60000",
                   env={"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "400000"}).start()
    ready = systemd.wait_for("READY=1")
    assert "STATUS=v1 flags=2 age=" in ready and "MAINPID=%d" % daemon.pid in ready
    pings_before = len([m for m in systemd.drain() if m == "WATCHDOG=1"])
    wait_until(lambda: len([m for m in systemd.drain() if m == "WATCHDOG=1"]) >= pings_before + 4, 5,
               "watchdog pings every WATCHDOG_USEC/2")
    assert any(message.startswith("STATUS=v1 flags=2 age=") for message in systemd.messages)
    assert len(stand_in.seen("/sdk/v2/flags")) == 1
    daemon.signal(signal.SIGTERM)
    systemd.wait_for("STOPPING=1")
    assert daemon.wait() == ExitCode.OK


@pytest.mark.multiprocess
def test_flagd_not_ready_without_a_snapshot(systemd, stand_in, flagd):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(503, b"down"))
    daemon = flagd("--server-url", stand_in.url, "--poll-interval-ms", "200", "--backoff-min-ms", "50",
                   env={"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "400000"}).start()
    stand_in.wait_for(3, "/sdk/v2/flags")
    systemd.wait_for("WATCHDOG=1")
    assert systemd.wait_for("EXTEND_TIMEOUT_USEC=")
    assert not any("READY=1" in message for message in systemd.drain())
    daemon.wait_log("event=not_ready")
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, marker_flags("late")))
    systemd.wait_for("READY=1")
    assert daemon.terminate() == ExitCode.OK
