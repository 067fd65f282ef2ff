"""The 32-bit string hash inside assignment and exposure insert ids (docs/compatibility.md, 'Tracking events').

Java's ``String.hashCode`` recurrence ``h = 31*h + c``, but over Python code points and kept
unsigned, so ``"polygenelubricants"`` hashes to 2147483648 where Java gives -2147483648. Amplitude
deduplicates events by insert id, so ours must equal the reference's bit for bit.
"""

_MASK = 0xFFFFFFFF


def hash_code(text: str) -> int:
    """Hash ``text`` the way the reference does; ``""`` hashes to 0.

    :param text: any string; each code point counts once (no UTF-16 surrogate pairs).
    :return: an int in ``[0, 2**32)``.
    """
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & _MASK
    return value


def hash_code_concat(prefix_hash: int, suffix_hash: int, suffix_length: int) -> int:
    """``hash_code(a + b)`` from ``hash_code(a)``, ``hash_code(b)`` and ``len(b)``.

    The recurrence is linear modulo 2**32, so an exposure's one-hash-per-flag insert ids cost one
    pass over the long shared suffix instead of one pass per flag.
    """
    return (prefix_hash * pow(31, suffix_length, 1 << 32) + suffix_hash) & _MASK
