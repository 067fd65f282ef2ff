"""A variant as a typed OpenFeature value: which field each type reads and how it converts.

| type    | reads                                   | accepts                                        |
|---------|-----------------------------------------|------------------------------------------------|
| boolean | ``value``, else the variant key         | a bool; "on"/"true" -> True, "off"/"false" -> False (any case) |
| string  | ``value``, else the variant key         | a string                                       |
| integer | ``payload`` if a number, else ``value`` | a JSON integer, or a string ``int()`` parses   |
| float   | ``payload`` if a number, else ``value`` | a JSON number, or a string ``float()`` parses  |
| object  | ``payload``                             | a JSON object or array                         |

A variant that carries nothing for the type (no value and no payload: Amplitude's default "off"
variant) resolves to the caller's default value when it is the flag's default variant.
"""

from typing import Any, Callable

from openfeature.exception import ErrorCode

from ..variant import Variant

_BOOLEANS = {"on": True, "true": True, "off": False, "false": False}


class ResolutionError(Exception):
    """The variant cannot be read as the requested type: an OpenFeature error code and a message."""

    def __init__(self, error_code: ErrorCode, message: str):
        super().__init__(message)
        self.error_code = error_code
        self.message = message


#: Sentinel: the variant has nothing for this type; the caller's default applies.
ABSENT = object()


def to_boolean(variant: Variant) -> Any:
    value = variant.value
    if value is None:
        value = variant.key
    if value is None:
        return ABSENT
    if value.__class__ is bool:
        return value
    if isinstance(value, str):
        flag_value = _BOOLEANS.get(value.lower())
        if flag_value is not None:
            return flag_value
    raise ResolutionError(ErrorCode.TYPE_MISMATCH, "variant %r has value %r: a boolean flag needs on/off or "
                          "true/false" % (variant.key, value))


def to_string(variant: Variant) -> Any:
    value = variant.value
    if value is None:
        value = variant.key
    if value is None:
        return ABSENT
    if isinstance(value, str):
        return value
    raise ResolutionError(ErrorCode.TYPE_MISMATCH, "variant %r has value %r, not a string" % (variant.key, value))


def to_integer(variant: Variant) -> Any:
    return _number(variant, int, "an integer")


def to_float(variant: Variant) -> Any:
    return _number(variant, float, "a number")


def to_object(variant: Variant) -> Any:
    payload = variant.payload
    if payload is None:
        return ABSENT
    if isinstance(payload, (dict, list)):
        return payload
    raise ResolutionError(ErrorCode.TYPE_MISMATCH, "variant %r has payload %r: an object flag needs a JSON object "
                          "or array" % (variant.key, payload))


def _number(variant: Variant, kind: Callable[[Any], Any], what: str) -> Any:
    payload = variant.payload
    if payload is not None:
        if _is_number(payload, kind):
            return kind(payload)
        if variant.value is None or isinstance(payload, (int, float)):
            raise ResolutionError(ErrorCode.TYPE_MISMATCH, "variant %r has payload %r, not %s"
                                  % (variant.key, payload, what))
    value = variant.value
    if value is None:
        return ABSENT
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            raise ResolutionError(ErrorCode.PARSE_ERROR, "variant %r has value %r, which does not parse as %s"
                                  % (variant.key, value, what)) from None
    if _is_number(value, kind):
        return kind(value)
    raise ResolutionError(ErrorCode.TYPE_MISMATCH, "variant %r has value %r, not %s" % (variant.key, value, what))


def _is_number(value: Any, kind: Callable[[Any], Any]) -> bool:
    """A JSON number the type accepts: any int or float for float, an int for integer; never a bool."""
    if value.__class__ is bool:
        return False
    return isinstance(value, int) or (kind is float and isinstance(value, float))
