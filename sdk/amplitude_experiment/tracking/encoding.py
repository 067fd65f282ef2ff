"""Event values that Amplitude's analytics SDK can send: JSON as it is, or converted, or left out.

Two traps sit between an event and Amplitude. The analytics SDK validates properties passed to
the ``BaseEvent`` constructor and silently leaves out a whole ``user_properties`` (``$set`` and
``$unset`` included) or ``event_properties`` when any value in it is not a string, number, bool,
flat list or dict of those; the reference avoids that for assignment properties by assigning them
after construction, and we assign every property dict that way. And the SDK encodes each batch
with ``json.dumps(..., sort_keys=True)``: one value JSON cannot encode (a ``datetime``, a
``Decimal``, a ``set``, ``bytes``, a ``UUID``, a key of another type among string keys) makes the
whole batch fail, every user's events in it lost, on a thread nobody watches.

:func:`encodable` returns a copy that ``json.dumps`` encodes exactly as it would have encoded the
original wherever that worked (tuples become lists, integer keys their JSON text), with each other
value converted (dates and times to ISO 8601 text, ``Decimal`` and ``UUID`` to text, sets to
lists, enums to their value) or, when no faithful text exists (``bytes``, NaN and infinities, which
strict JSON has no word for, arbitrary objects, nesting deeper than :data:`MAX_DEPTH`), left out.
Each conversion or omission is reported once per kind to the caller's :class:`Reporter`.
"""

import datetime
import decimal
import enum
import logging
import threading
import uuid
from typing import Any, Callable, Optional, Set, Tuple

#: Deeper containers than this are left out (a cycle is one): JSON of them would fail or be useless.
MAX_DEPTH = 32

_LEFT_OUT = object()

#: ``report(where, type_name, outcome)``: ``where`` names the field (``user_properties.plan``),
#: ``outcome`` says what was sent instead ("sent as text", "left out").
Report = Callable[[str, str, str], None]


class Reporter:
    """Logs each (field, type, outcome) once: a bad property type on every user must not flood the log.

    Values are never logged: they are user data.
    """

    def __init__(self, logger: logging.Logger):
        self._logger = logger
        self._seen: Set[Tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, where: str, type_name: str, outcome: str) -> None:
        marker = (where, type_name, outcome)
        with self._lock:
            if marker in self._seen:
                return
            self._seen.add(marker)
        self._logger.warning(
            "[Experiment] event field %s holds a %s, which JSON cannot encode: %s (logged once)",
            where, type_name, outcome)


_default_reporter: Optional[Reporter] = None


def default_reporter() -> Reporter:
    """The reporter of the module-level event builders: the ``Amplitude`` logger, once per process."""
    global _default_reporter
    if _default_reporter is None:
        from .._logging import SDK_LOGGER_NAME

        _default_reporter = Reporter(logging.getLogger(SDK_LOGGER_NAME))
    return _default_reporter


def encodable(value: Any, where: str, report: Report) -> Any:
    """``value`` as strict JSON can carry it; ``None`` when nothing of it can be sent (and reported)."""
    converted = _encodable(value, where, report, 0)
    return None if converted is _LEFT_OUT else converted


def encodable_properties(properties: Any, where: str, report: Report) -> dict:
    """A property dict (``user_properties``, ``event_properties``, ``groups``) as strict JSON can carry it."""
    if not isinstance(properties, dict):
        if properties is not None:
            report(where, type(properties).__name__, "left out (not a dict)")
        return {}
    converted = _encodable(properties, where, report, 0)
    return converted if isinstance(converted, dict) else {}


def _encodable(value: Any, where: str, report: Report, depth: int) -> Any:
    cls = value.__class__
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        if value != value or value in (float("inf"), float("-inf")):
            report(where, "non-finite float", "left out")
            return _LEFT_OUT
        return value
    if depth >= MAX_DEPTH:
        report(where, "container nested deeper than %d" % MAX_DEPTH, "left out")
        return _LEFT_OUT
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = _key_text(key)
            if name is None:
                report(where, "key of type %s" % type(key).__name__, "entry left out")
                continue
            converted = _encodable(item, _child(where, name), report, depth + 1)
            if converted is not _LEFT_OUT:
                out[name] = converted
        return out
    if isinstance(value, (list, tuple)):
        items = (_encodable(item, where + "[]", report, depth + 1) for item in value)
        return [item for item in items if item is not _LEFT_OUT]
    if isinstance(value, enum.Enum):
        return _encodable(value.value, where, report, depth + 1)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, (str, int)):
        return value  # subclasses: json encodes them as the base type
    if isinstance(value, float):
        return _encodable(float(value), where, report, depth)
    if isinstance(value, (set, frozenset)):
        report(where, type(value).__name__, "sent as a list")
        try:
            members = sorted(value)
        except TypeError:  # mixed types: any order is as good
            members = list(value)
        items = (_encodable(item, where + "[]", report, depth + 1) for item in members)
        return [item for item in items if item is not _LEFT_OUT]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        report(where, type(value).__name__, "sent as ISO 8601 text")
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        report(where, type(value).__name__, "sent as text")
        return str(value)
    report(where, type(value).__name__, "left out")
    return _LEFT_OUT


def _key_text(key: Any) -> Optional[str]:
    """A dict key as ``json.dumps`` writes it, or None when it refuses the key type."""
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if key != key or key in (float("inf"), float("-inf")):
            return None
        return float.__repr__(key)
    return None


def _child(where: str, name: str) -> str:
    # Only the first level is named: deeper names could be user data in bulk.
    return where + "." + name if "." not in where else where
