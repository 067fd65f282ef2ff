"""The SDK's one logger rule, shared by every config (reference-sdk.md §6.1)."""

import logging
import sys
from typing import Any, Optional

SDK_LOGGER_NAME = "Amplitude"


class FallbackStderrHandler(logging.StreamHandler):
    """Writes to stderr only while the application has configured no logging of its own.

    The reference gives its logger a stderr handler unconditionally, so once the application calls
    ``logging.basicConfig()`` (or installs any root handler) every SDK line is printed twice: once
    here, once by the root handler it propagates to. This handler steps aside as soon as a record
    would reach another handler, whenever the application configured it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if _reaches_another_handler(logging.getLogger(record.name), self):
            return
        super().emit(record)


def _reaches_another_handler(logger: Any, own: logging.Handler) -> bool:
    while logger is not None:
        if any(handler is not own for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def resolve_logger(debug: bool, logger: Optional[logging.Logger]) -> logging.Logger:
    """Return the caller's logger untouched, or the shared ``Amplitude`` logger set for ``debug``.

    Like the reference, the shared logger gets one stderr handler if it has none, and its level is
    set by the config built last in the process. Unlike it, that handler is silent once the
    application's own logging would show the line (docs/compatibility.md).
    """
    if logger is not None:
        return logger
    shared = logging.getLogger(SDK_LOGGER_NAME)
    if not shared.handlers:
        shared.addHandler(FallbackStderrHandler(sys.stderr))
    shared.setLevel(logging.DEBUG if debug else logging.WARNING)
    return shared


def redact_key(key: Optional[str]) -> str:
    """A deployment key shortened for logs: enough to tell keys apart, never enough to use one."""
    if not key:
        return "<empty>"
    return key[:4] + "…" if len(key) > 8 else "…"
