import random

import pytest

from amplitude_experiment.tracking.hash_code import hash_code, hash_code_concat


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", 0),
        ("a", 97),
        ("abc", 96354),
        ("hello world", 1794106052),
        ("😀", 128512),  # one code point, not a UTF-16 pair
        ("polygenelubricants", 2147483648),  # unsigned, where Java gives -2147483648
    ],
)
def test_reference_vectors(text, expected):
    assert hash_code(text) == expected


def test_concat_equals_hash_of_concatenation():
    rng = random.Random(5)
    for _ in range(200):
        a = "".join(chr(rng.randint(32, 0x3000)) for _ in range(rng.randint(0, 20)))
        b = "".join(chr(rng.randint(32, 0x3000)) for _ in range(rng.randint(0, 400)))
        assert hash_code_concat(hash_code(a), hash_code(b), len(b)) == hash_code(a + b)
