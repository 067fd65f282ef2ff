"""A short text in the index's words (flagd's last error, the stream's last error), kept under a
seqlock so readers in other processes never take a half-rewritten text for a whole one.

The one writer makes the sequence word odd, stores the text's length and bytes (aligned 8-byte
words) and whatever goes with it, and makes the sequence word even again. A reader that sees it
odd, or changed across its read, retries a few times and otherwise reports no text.
"""

import contextlib
from typing import Any, Iterator, Optional

__all__ = ["read_text", "rewriting", "store_text"]

_READ_ATTEMPTS = 3


@contextlib.contextmanager
def rewriting(words: Any, seq_word: int) -> Iterator[None]:
    """Hold the seqlock at ``seq_word`` while the body stores the text (and the words that go with it)."""
    seq = words[seq_word]
    words[seq_word] = seq + 1 if seq % 2 == 0 else seq + 2  # odd: text in flux
    try:
        yield
    finally:
        words[seq_word] = words[seq_word] + 1  # even again: text complete


def store_text(words: Any, len_word: int, text_word: int, max_bytes: int, message: str) -> None:
    """Store ``message`` as UTF-8 from word ``text_word`` on, cut to ``max_bytes`` on a character
    boundary; its length in ``len_word``. Call it inside :func:`rewriting`."""
    data = message.encode("utf-8", "replace")[:max_bytes].decode("utf-8", "ignore").encode("utf-8")
    padded = data + b"\0" * (-len(data) % 8)
    if padded:
        words[text_word:text_word + len(padded) // 8] = memoryview(padded).cast("Q")
    words[len_word] = len(data)


def read_text(words: Any, seq_word: int, len_word: int, text_word: int, max_bytes: int) -> Optional[str]:
    """The stored text; None when there is none or it stayed in flux over a few attempts."""
    for _ in range(_READ_ATTEMPTS):
        seq = words[seq_word]
        if seq % 2:
            continue
        length = min(int(words[len_word]), max_bytes)
        raw = _text_bytes(words, text_word, length)
        if words[seq_word] == seq:
            return raw.decode("utf-8", "replace") if length else None
    return None


def _text_bytes(words: Any, text_word: int, length: int) -> bytes:
    if not length:
        return b""
    count = (length + 7) // 8
    if isinstance(words, memoryview):
        return words[text_word:text_word + count].tobytes()[:length]
    return b"".join(int(word).to_bytes(8, "little") for word in words[text_word:text_word + count])[:length]
