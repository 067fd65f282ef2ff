"""Amplitude Experiment's Python server SDK API, with shared-memory flags from a per-host flagd.

Usage::

    >>> from amplitude_experiment import Experiment, User
    >>> experiment = Experiment.initialize_local("<DEPLOYMENT_KEY>")
    >>> experiment.start()
    >>> variants = experiment.evaluate_v2(User(user_id="u1"))

The public names are imported on first use (PEP 562 ``__getattr__``), so a program that needs only
a subpackage (flagd: the parser and the segment code) does not load the clients, tracking,
``amplitude-analytics`` and ``requests`` with it.
"""

import importlib
from typing import Any, List

from .version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "AssignmentConfig": ".assignment",
    "CohortSyncConfig": ".cohort.cohort_sync_config",
    "AmplitudeCookie": ".cookie",
    "Experiment": ".factory",
    "LocalEvaluationClient": ".local.client",
    "LocalEvaluationConfig": ".local.config",
    "FlagdUnavailableError": ".local._shared_source",
    "RemoteEvaluationClient": ".remote.client",
    "RemoteEvaluationConfig": ".remote.config",
    "ServerZone": ".server_zone",
    "User": ".user",
    "Variant": ".variant",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
