"""Semantic versions as the reference reads them (docs/compatibility.md, 'Semantic versions'), quirks included.

A version is ``MAJOR.MINOR[.PATCH[-PRE]]``; ``PRE`` keeps its leading hyphen, so ``1.2.3-`` is a
pre-release (quirk Q9), and pre-releases compare as plain strings. The pattern is the reference's
language written without nested quantifiers, so a long hostile string cannot make it backtrack
exponentially.
"""

import re
from typing import Optional, Tuple

# PRE is "-" followed by zero or more ([-\w]+ "."?) runs: word runs separated by single dots,
# optionally ending in one dot. Same language, unambiguous form. `$` also matches before a final
# newline, as in the reference ("1.2.3\n" parses).
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+)(-(?:[-\w]+(?:\.[-\w]+)*\.?)?)?)?$")

#: (major, minor, patch, 0 for a pre-release else 1, pre-release text) orders like the reference.
Version = Tuple[int, int, int, int, str]


def parse_version(text: Optional[str]) -> Optional[Version]:
    """The comparable form of ``text``, or ``None`` when it is not a version."""
    if not text:
        return None
    match = _VERSION.match(text)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    try:
        numbers = int(major), int(minor), int(patch) if patch else 0
    except ValueError:  # more digits than int() accepts
        return None
    if pre:
        return numbers + (0, pre)
    return numbers + (1, "")
