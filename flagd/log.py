"""Structured ``key=value`` log lines on stderr, and the guard that keeps the deployment key out of them.

flagd's messages are written as ``event=<name> field=%s ...`` with %-style arguments; the formatter
puts ``ts=``, ``level=`` and ``logger=`` in front, so journald, grep and log shippers all read one
format. Values that may hold spaces go through :class:`Quoted`, which quotes lazily.
"""

import logging
import sys
import time
from typing import Any, Optional, TextIO, Tuple

from amplitude_experiment._logging import redact

__all__ = ["Quoted", "setup_logging"]


class Quoted:
    """A log argument rendered as a double-quoted value (only when the record is formatted)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __str__(self) -> str:
        text = str(self.value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return '"%s"' % text


class KeyValueFormatter(logging.Formatter):
    """``ts=2026-01-01T00:00:00.123Z level=info logger=flagd.daemon event=... k=v``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.startswith("event="):
            message = "msg=%s" % Quoted(message)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = "ts=%s.%03dZ level=%s logger=%s %s" % (
            stamp, int(record.msecs), record.levelname.lower(), record.name, message)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += " traceback=%s" % Quoted(record.exc_text)
        return line


class RedactFilter(logging.Filter):
    """Redacts a secret in the formatted message and traceback: the last line of defence for the deployment key.

    flagd never logs the key on purpose; this catches a library or an error message that echoes it,
    whole or any run of 8+ of its characters (a cut-off echo, a body excerpt).
    """

    def __init__(self, secret: str):
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secret:
            message = record.getMessage()
            cleaned = redact(message, self._secret)
            if cleaned != message:
                record.msg = cleaned
                record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text, self._secret)
        return True


def setup_logging(level: str = "info", secret: str = "", stream: Optional[TextIO] = None,
                  more_secrets: Tuple[str, ...] = ()) -> logging.Handler:
    """Send every logger's records (flagd's, urllib3's) to ``stream`` in key=value form, with
    ``secret`` and each of ``more_secrets`` (the analytics API key) redacted.

    Called by ``cli.py`` once per process, never on import.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(RedactFilter(secret))
    for other in more_secrets:
        if other:
            handler.addFilter(RedactFilter(other))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level.lower() != "debug":
        logging.getLogger("urllib3").setLevel(logging.WARNING)
    return handler
