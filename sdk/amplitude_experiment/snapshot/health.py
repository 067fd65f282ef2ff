"""The publisher's health in the index: its last error and when, and what is failing right now.

flagd writes these; ``amplitude-flagd status`` and every worker read them, so a worker can say
"flagd runs but its last 4 fetches failed: HTTP 503" instead of guessing "is flagd running?".
They live in words the index layout (layout.py) reserves, so readers that do not know them
read zeros and are unaffected::

    word  9  error_at_ns       when the last error happened (wall clock), 0 = never
         10  error_kind        index into ERROR_KINDS
         11  failures          consecutive failed polls; 0 = the last poll succeeded
         12  failing           bit set of what is failing now: 1 source, 2 publish, 4 state dir
         13  error_seq         odd while the error text is being rewritten (a seqlock)
         14  error_len         bytes of UTF-8 text at byte offset ERROR_TEXT_OFFSET
         15  config_problems   problems counted in configs from Amplitude's API since start
         128..255              the last error's text (at most ERROR_TEXT_MAX bytes, never the key)

Only the one writer stores; every store is an aligned 8-byte word. A reader that catches the
text mid-rewrite (seq odd or changed) retries a few times and otherwise reports no text.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from .index_text import read_text, rewriting, store_text

__all__ = [
    "ERROR_KINDS",
    "FAILING_PUBLISH",
    "FAILING_SOURCE",
    "FAILING_STATE_DIR",
    "PublisherHealth",
    "read_health",
    "record_error",
    "record_failing",
    "record_problems",
]

W_ERROR_AT, W_ERROR_KIND, W_FAILURES, W_FAILING, W_ERROR_SEQ, W_ERROR_LEN, W_CONFIG_PROBLEMS = range(9, 16)
ERROR_TEXT_OFFSET = 1024
ERROR_TEXT_MAX = 1024
_TEXT_WORD = ERROR_TEXT_OFFSET // 8

#: What went wrong, as flagd's log events name it; position 0 is "no error".
ERROR_KINDS = ("", "fetch_failed", "config_rejected", "publish_failed", "state_save_failed")
FAILING_SOURCE = 1
FAILING_PUBLISH = 2
FAILING_STATE_DIR = 4
_FAILING_NAMES = ((FAILING_SOURCE, "source"), (FAILING_PUBLISH, "publish"), (FAILING_STATE_DIR, "state_dir"))


@dataclass(frozen=True)
class PublisherHealth:
    """What the index says about flagd's own health.

    ``last_error`` is the text of the last error (None: none since flagd started, or being
    rewritten), ``last_error_kind`` one of :data:`ERROR_KINDS`, ``last_error_at_ns`` wall-clock
    ns (0: never). ``failing`` names what fails now: ``"source"`` (the last poll's fetch or
    config), ``"publish"`` (shared memory), ``"state_dir"`` (the last good copy cannot be saved).
    """

    last_error: Optional[str]
    last_error_kind: Optional[str]
    last_error_at_ns: int
    consecutive_failures: int
    failing: Tuple[str, ...]
    config_problems: int


def record_error(words: Any, kind: str, message: str, at_ns: int) -> None:
    """Store the last error (text truncated to :data:`ERROR_TEXT_MAX` bytes on a character boundary)."""
    with rewriting(words, W_ERROR_SEQ):
        store_text(words, W_ERROR_LEN, _TEXT_WORD, ERROR_TEXT_MAX, message)
        words[W_ERROR_KIND] = ERROR_KINDS.index(kind) if kind in ERROR_KINDS else 0
        words[W_ERROR_AT] = at_ns


def record_failing(words: Any, failing: int, failures: int) -> None:
    """Store what fails now (a bit set of FAILING_*) and the count of consecutive failed polls."""
    words[W_FAILING] = failing
    words[W_FAILURES] = failures


def record_problems(words: Any, count: int) -> None:
    """Store how many problems were found in configs from the API since flagd started."""
    words[W_CONFIG_PROBLEMS] = count


def read_health(words: Any) -> PublisherHealth:
    """The health words of a mapped index (all zeros, i.e. nothing known, before it is mapped)."""
    text = read_text(words, W_ERROR_SEQ, W_ERROR_LEN, _TEXT_WORD, ERROR_TEXT_MAX)
    kind_index = int(words[W_ERROR_KIND])
    kind = ERROR_KINDS[kind_index] if 0 < kind_index < len(ERROR_KINDS) else None
    failing_bits = int(words[W_FAILING])
    at_ns = int(words[W_ERROR_AT])
    return PublisherHealth(
        last_error=text if at_ns else None,
        last_error_kind=kind,
        last_error_at_ns=at_ns,
        consecutive_failures=int(words[W_FAILURES]),
        failing=tuple(name for bit, name in _FAILING_NAMES if failing_bits & bit),
        config_problems=int(words[W_CONFIG_PROBLEMS]),
    )

