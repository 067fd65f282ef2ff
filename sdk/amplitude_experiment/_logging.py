"""The SDK's one logger rule, shared by every config (reference-sdk.md §6.1)."""

import logging
import sys
from typing import Optional

SDK_LOGGER_NAME = "Amplitude"


def resolve_logger(debug: bool, logger: Optional[logging.Logger]) -> logging.Logger:
    """Return the caller's logger untouched, or the shared ``Amplitude`` logger set for ``debug``.

    Like the reference, the shared logger gets one stderr handler if it has none, and its level is
    set by the config built last in the process.
    """
    if logger is not None:
        return logger
    shared = logging.getLogger(SDK_LOGGER_NAME)
    if not shared.handlers:
        shared.addHandler(logging.StreamHandler(sys.stderr))
    shared.setLevel(logging.DEBUG if debug else logging.WARNING)
    return shared


def redact_key(key: Optional[str]) -> str:
    """A deployment key shortened for logs: enough to tell keys apart, never enough to use one."""
    if not key:
        return "<empty>"
    return key[:4] + "…" if len(key) > 8 else "…"
