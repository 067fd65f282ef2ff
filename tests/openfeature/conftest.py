"""Fixtures of tests/openfeature: they live in openfeature_kit.py, which the tests import by that unique name
(two folders' "conftest" modules would shadow each other in one run)."""

from openfeature_kit import *  # noqa: F401,F403
from openfeature_kit import _fresh_openfeature  # noqa: F401 (an autouse fixture: import * skips it)
