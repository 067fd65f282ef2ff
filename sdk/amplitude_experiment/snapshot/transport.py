"""How flags reach flagd now (poll, stream or file) and the stream's health, in the index.

flagd writes these (from its publish loop only); ``amplitude-flagd status`` and the workers read
them. Words 24..31 and bytes 2048..2559 of the index (layout.py)::

    word 24  transport           TRANSPORT_NONE / POLL / STREAM / FILE (layout.py)
         25  transport_since_ns  when that transport took over (wall clock), 0 = unknown
         26  stream_error_at_ns  when the stream last failed, 0 = never
         27  stream_failures     failed stream attempts in a row; 0 = the last one delivers
         28  stream_error_seq    odd while the error text is being rewritten (a seqlock, as health.py)
         29  stream_error_len    bytes of UTF-8 text at byte offset STREAM_ERROR_TEXT_OFFSET
         30  stream_event_ns     the stream's last event, keep-alives included (0 = none yet)
         31  stream_connects     stream connection attempts since flagd started
         256..319                the stream's last error text (at most STREAM_ERROR_TEXT_MAX bytes)
"""

from dataclasses import dataclass
from typing import Any, Optional

from .index_text import read_text, rewriting, store_text
from .layout import TRANSPORT_FILE, TRANSPORT_NONE, TRANSPORT_POLL, TRANSPORT_STREAM, W_TRANSPORT, W_TRANSPORT_SINCE

__all__ = ["TRANSPORT_NAMES", "TransportHealth", "read_transport", "record_stream", "record_stream_error",
           "record_transport"]

W_STREAM_ERROR_AT, W_STREAM_FAILURES, W_STREAM_ERROR_SEQ, W_STREAM_ERROR_LEN, W_STREAM_EVENT, W_STREAM_CONNECTS = \
    range(26, 32)
STREAM_ERROR_TEXT_OFFSET = 2048
STREAM_ERROR_TEXT_MAX = 512
_TEXT_WORD = STREAM_ERROR_TEXT_OFFSET // 8

#: Index word 24's values by name, as status reports say them.
TRANSPORT_NAMES = {TRANSPORT_NONE: None, TRANSPORT_POLL: "poll", TRANSPORT_STREAM: "stream", TRANSPORT_FILE: "file"}


@dataclass(frozen=True)
class TransportHealth:
    """What the index says about how flags arrive. ``transport`` is ``"poll"``, ``"stream"``,
    ``"file"`` or None (unknown: a flagd that does not record it); times are wall-clock ns, 0 = never."""

    transport: Optional[str]
    transport_since_ns: int
    stream_last_error: Optional[str]
    stream_last_error_at_ns: int
    stream_failures: int
    stream_last_event_ns: int
    stream_connects: int


def record_transport(words: Any, transport: int, since_ns: int) -> None:
    """Store the transport (a TRANSPORT_* value) and since when."""
    words[W_TRANSPORT_SINCE] = since_ns
    words[W_TRANSPORT] = transport


def record_stream(words: Any, failures: int, last_event_ns: int, connects: int) -> None:
    """Store the stream's counters: failed attempts in a row, its last event, connections opened."""
    words[W_STREAM_FAILURES] = failures
    words[W_STREAM_EVENT] = last_event_ns
    words[W_STREAM_CONNECTS] = connects


def record_stream_error(words: Any, message: str, at_ns: int) -> None:
    """Store the stream's last error (truncated to STREAM_ERROR_TEXT_MAX bytes on a character boundary)."""
    with rewriting(words, W_STREAM_ERROR_SEQ):
        store_text(words, W_STREAM_ERROR_LEN, _TEXT_WORD, STREAM_ERROR_TEXT_MAX, message)
        words[W_STREAM_ERROR_AT] = at_ns


def read_transport(words: Any) -> TransportHealth:
    """The transport words of a mapped index (all zeros before flagd wrote them)."""
    text = read_text(words, W_STREAM_ERROR_SEQ, W_STREAM_ERROR_LEN, _TEXT_WORD, STREAM_ERROR_TEXT_MAX)
    at_ns = int(words[W_STREAM_ERROR_AT])
    return TransportHealth(
        transport=TRANSPORT_NAMES.get(int(words[W_TRANSPORT])),
        transport_since_ns=int(words[W_TRANSPORT_SINCE]),
        stream_last_error=text if at_ns else None,
        stream_last_error_at_ns=at_ns,
        stream_failures=int(words[W_STREAM_FAILURES]),
        stream_last_event_ns=int(words[W_STREAM_EVENT]),
        stream_connects=int(words[W_STREAM_CONNECTS]),
    )

