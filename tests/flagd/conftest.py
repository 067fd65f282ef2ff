"""Fixtures of tests/flagd: they live in flagd_kit.py, which the tests import by that unique name
(two folders' "conftest" modules would shadow each other in one run)."""

from flagd_kit import *  # noqa: F401,F403
