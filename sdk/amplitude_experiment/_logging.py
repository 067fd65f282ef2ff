"""The SDK's one logger rule (docs/compatibility.md, "Logging"), and what keeps secrets out of messages."""

import logging
import sys
from typing import Any, List, Optional, Tuple

SDK_LOGGER_NAME = "Amplitude"
#: A run of this many consecutive characters of a secret is treated as the secret itself.
SECRET_RUN = 8
REDACTED = "<redacted>"


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


def redact(text: str, secret: str) -> str:
    """``text`` with every run of ``SECRET_RUN`` or more consecutive characters of ``secret`` replaced.

    A whole secret, a secret cut short by truncation, or a piece of one echoed back by a server all
    become ``<redacted>``. A secret shorter than ``SECRET_RUN`` is matched whole only.
    """
    if not secret or not text:
        return text
    run = min(SECRET_RUN, len(secret))
    pieces = {secret[i:i + run] for i in range(len(secret) - run + 1)}
    spans: List[Tuple[int, int]] = []
    for start in range(len(text) - run + 1):
        if text[start:start + run] in pieces:
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], start + run)
            else:
                spans.append((start, start + run))
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(REDACTED)
        last = end
    out.append(text[last:])
    return "".join(out)


def report_problems(logger: logging.Logger, flags: Any, origin: str) -> None:
    """Log what is wrong with a newly loaded flag set (a ``FlagSet``: its ``problems``), once per version."""
    for problem in flags.problems:
        logger.error("[Experiment] %s: %s", origin, problem)
