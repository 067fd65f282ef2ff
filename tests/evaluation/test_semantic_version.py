"""Semantic versions as the reference reads them (docs/compatibility.md, 'Semantic versions'), quirk Q9 included."""

import pytest

from _flagkit import condition, holds

from amplitude_experiment import User
from amplitude_experiment.evaluation.semantic_version import parse_version

VALID = {
    "1.2.3": (1, 2, 3, None),
    "1.2": (1, 2, 0, None),
    "0.0.0": (0, 0, 0, None),
    "06.007.0008": (6, 7, 8, None),
    "1.2.3-": (1, 2, 3, "-"),
    "1.2.3--": (1, 2, 3, "--"),
    "1.2.3-a.": (1, 2, 3, "-a."),
    "1.2.3-alpha.1": (1, 2, 3, "-alpha.1"),
    "1.2.3-al_pha": (1, 2, 3, "-al_pha"),
    "1.2.3-\u00fcber": (1, 2, 3, "-\u00fcber"),
    "1.2.3\n": (1, 2, 3, None),
    "\u0661.\u0662.\u0663": (1, 2, 3, None),
    "10.20.30-rc.1.2": (10, 20, 30, "-rc.1.2"),
    "123456789012345678901234567890.0.0": (123456789012345678901234567890, 0, 0, None),
}
INVALID = ["10", "10.", "10.2.", "10..2.33", "2.3.4.567", "10.2.alpha", "10.2.3alpha", "-10.1", "v1.2.3", " 1.2.3",
           "1.2.3 ", "", None, "1.2-beta", "1.2.3-.a", "1.2.3-a..b", "1.2.3-a b", "1.2.3-alpha+1", "1.2.3\n\n",
           "1.2.3-" + "a." * 5000 + ".", "1." + "9" * 5000 + ".0"]


@pytest.mark.parametrize("text", sorted(VALID), ids=repr)
def test_valid_versions(text):
    major, minor, patch, pre = VALID[text]
    parsed = parse_version(text)
    assert parsed is not None
    assert parsed[:3] == (major, minor, patch)
    assert (parsed[4] or None) == pre


@pytest.mark.parametrize("text", INVALID, ids=lambda t: repr(t)[:40])
def test_invalid_versions(text):
    assert parse_version(text) is None


def test_hostile_pre_release_is_fast():
    """The reference's nested quantifier can backtrack; ours must answer a long near-miss at once."""
    import time

    text = "1.2.3-" + "a" * 50_000 + "!"
    started = time.perf_counter()
    assert parse_version(text) is None
    assert time.perf_counter() - started < 0.5


ORDERED = [  # each strictly less than the next
    "0.0.1", "1.0.0-Beta", "1.0.0-alpha", "1.0.0-alpha.10", "1.0.0-alpha.2", "1.0.0", "1.2.3-", "1.2.3-beta",
    "1.2.3", "1.9.0", "1.10.0", "2.0.0", "20.9.4-a1.23", "20.9.4-a1.5", "20.9.4",
]


@pytest.mark.parametrize("index", range(len(ORDERED) - 1))
def test_ordering(index):
    lower, higher = ORDERED[index], ORDERED[index + 1]
    assert parse_version(lower) < parse_version(higher)
    user = User(version=lower)
    selector = ["context", "user", "version"]
    assert holds(condition(selector, "version less", [higher]), user)
    assert holds(condition(selector, "version less or equal", [higher]), user)
    assert not holds(condition(selector, "version greater", [higher]), user)
    assert not holds(condition(selector, "version greater or equal", [higher]), user)


@pytest.mark.parametrize("left,right", [("1.2", "1.2.0"), ("01.2.3", "1.2.3"), ("1.2.3\n", "1.2.3"),
                                        ("1.2.3-a", "1.2.3-a")])
def test_equal_versions(left, right):
    assert parse_version(left) == parse_version(right)
    user = User(version=left)
    assert holds(condition(["context", "user", "version"], "version less or equal", [right]), user)
    assert holds(condition(["context", "user", "version"], "version greater or equal", [right]), user)
    assert not holds(condition(["context", "user", "version"], "version less", [right]), user)


@pytest.mark.parametrize("prop,op,values,expected", [
    ("10", "version less", ["2"], True),                 # neither parses: code-point order
    ("1.0.0", "version less", ["abc"], True),            # no filter parses: string order
    ("1.2.3.4", "version greater", ["1.2.3"], True),     # property does not parse: string order
    ("2.0.0", "version greater", ["abc", "1.0.0"], True),  # typed against the filters that parse
    ("2.0.0", "version less", ["abc", "1.0.0"], False),  # ... "2.0.0" < "abc" as strings is not consulted
])
def test_string_fallback(prop, op, values, expected):
    assert holds(condition(["context", "user", "version"], op, values), User(version=prop)) is expected
