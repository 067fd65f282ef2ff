"""A stand-in for systemd's notification socket: a real AF_UNIX datagram socket that records messages.

Point a process's ``NOTIFY_SOCKET`` at :attr:`FakeSystemd.address` and read what it sent with
:meth:`messages` or :meth:`wait_for`. A background thread receives, so the process never blocks on a
full socket buffer; each message keeps the monotonic time it arrived.
"""

import os
import socket
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional


class Notification:
    """One datagram: its raw text, its ``KEY=value`` fields, and when it arrived (``time.monotonic()``)."""

    def __init__(self, text: str, at: float):
        self.text = text
        self.at = at
        self.fields: Dict[str, str] = {}
        for line in text.split("\n"):
            key, sep, value = line.partition("=")
            if sep:
                self.fields[key] = value

    def __repr__(self) -> str:
        return "Notification(%r)" % self.text


class FakeSystemd:
    """``with FakeSystemd() as systemd:`` listens at ``systemd.address`` until the block ends.

    :param abstract: listen on an abstract address (``@name``) instead of a path in a temporary folder.
    """

    def __init__(self, abstract: bool = False):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._dir: Optional[str] = None
        if abstract:
            name = "fake-systemd-%d-%s" % (os.getpid(), os.urandom(6).hex())
            self._sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="fake-systemd-")
            self.address = os.path.join(self._dir, "notify")
            self._sock.bind(self.address)
        self._sock.settimeout(0.2)
        self._lock = threading.Condition()
        self._messages: List[Notification] = []
        self._running = True
        self._thread = threading.Thread(target=self._receive, name="fake-systemd", daemon=True)

    def __enter__(self) -> "FakeSystemd":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self._sock.close()
        if self._dir:
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass
            os.rmdir(self._dir)

    def _receive(self) -> None:
        while self._running:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(Notification(data.decode("utf-8", "replace"), time.monotonic()))
                self._lock.notify_all()

    def messages(self, key: Optional[str] = None) -> List[Notification]:
        """Everything received so far (only messages carrying ``key``, when given), oldest first."""
        with self._lock:
            return [m for m in self._messages if key is None or key in m.fields]

    def wait_for(self, predicate: Callable[[List[Notification]], bool], timeout: float, what: str = "") -> List[Notification]:
        """Block until ``predicate(all messages)`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(list(self._messages)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("fake systemd: timed out waiting for %s; got %r" % (what or "a message", self._messages))
                self._lock.wait(remaining)
            return list(self._messages)

    def wait_for_key(self, key: str, count: int = 1, timeout: float = 20.0) -> List[Notification]:
        """Block until ``count`` messages carrying ``key`` arrived; returns those messages."""
        self.wait_for(lambda ms: sum(key in m.fields for m in ms) >= count, timeout, "%d x %s" % (count, key))
        return self.messages(key)
