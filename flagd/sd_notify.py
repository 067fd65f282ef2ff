"""systemd's readiness and watchdog protocol over ``$NOTIFY_SOCKET``, without a dependency.

The protocol is one datagram of ``KEY=value`` lines to an AF_UNIX socket whose address systemd
puts in ``NOTIFY_SOCKET`` (a path, or an abstract address written with a leading ``@``). Outside
systemd the variable is unset and every call is a cheap no-op, so the daemon calls it
unconditionally. Sending never raises: a lost notification must not take the publisher down.
"""

import logging
import os
import socket
from typing import Callable, Mapping, Optional

__all__ = ["Notifier", "notify"]

logger = logging.getLogger(__name__)


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (newline-separated ``KEY=value`` lines) to systemd.

    :return: ``True`` if a datagram was sent, ``False`` if not under systemd or the send failed.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # abstract namespace (sd_notify(3))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as error:
        logger.warning("event=sd_notify_failed error=%s", error)
        return False
    return True


class Notifier:
    """The daemon's view of systemd: readiness, watchdog pings, status text, stopping.

    ``WATCHDOG_USEC`` is read once; :attr:`watchdog_interval` is half of it (what sd_watchdog_enabled(3)
    recommends), or ``None`` when systemd runs no watchdog for this process. Not thread safe; the
    daemon calls it from its main loop only, so a hung loop stops the pings and systemd notices.
    """

    def __init__(self, environ: Optional[Mapping[str, str]] = None, getpid: Callable[[], int] = os.getpid):
        self._environ = dict(os.environ if environ is None else environ)
        self.enabled = bool(self._environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval = _watchdog_interval(self._environ, getpid())
        self._ready_sent = False

    def ready(self, status: str) -> bool:
        """Tell systemd the service is up (once; later calls only update the status)."""
        if self._ready_sent:
            return self.status(status)
        self._ready_sent = True
        return self._send("READY=1\nSTATUS=%s\nMAINPID=%d" % (status, os.getpid()))

    def watchdog(self) -> bool:
        """One watchdog ping; call it from the loop that does the work, never from a side thread."""
        return self._send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self._send("STATUS=" + text)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up time while the first fetch is slow (``EXTEND_TIMEOUT_USEC``)."""
        return self._send("EXTEND_TIMEOUT_USEC=%d" % int(seconds * 1_000_000))

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def _send(self, message: str) -> bool:
        if not self.enabled:
            return False
        return notify(message, self._environ)


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> Optional[float]:
    """Seconds between pings, or None. ``WATCHDOG_PID``, when set, must name this process."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid.strip() != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000.0 if value > 0 else None
