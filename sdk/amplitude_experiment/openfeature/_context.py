"""An OpenFeature ``EvaluationContext`` as the ``User`` our clients evaluate (docs/openfeature.md).

The targeting key names the user (``user_id`` unless configured otherwise); attributes named like
a ``User`` field fill that field; ``user_properties``, ``groups`` and ``group_properties`` map to
their fields; every other attribute becomes a user property.
"""

import datetime
from collections.abc import Mapping
from typing import Any, Dict

from ..user import User

#: Every ``User`` field, all None, in the order ``User()`` sets them.
_EMPTY_USER: Dict[str, Any] = dict(User().__dict__)
#: Attributes copied to the ``User`` field of the same name as they are.
USER_FIELDS = frozenset(name for name in _EMPTY_USER if name not in ("user_properties", "groups"))
#: Attributes that are not user properties.
_NOT_PROPERTIES = USER_FIELDS | {"user_properties", "groups"}
#: Fields the targeting key may fill.
TARGETING_FIELDS = ("user_id", "device_id")

_new_user = object.__new__
_DATETIME = datetime.datetime


def context_to_user(context: Any, targeting_field: str = "user_id") -> User:
    """The ``User`` for an OpenFeature evaluation context (``None`` gives an empty user).

    Never raises for odd attribute values: what a field cannot use is passed on unchanged and the
    evaluation decides (a flag that fails on it is reported as a GENERAL error).
    """
    fields = _EMPTY_USER.copy()
    if context is not None:
        attributes = context.attributes
        if attributes:
            _map_attributes(attributes, fields)
        targeting_key = context.targeting_key
        if targeting_key:
            fields[targeting_field] = targeting_key
    user = _new_user(User)
    user.__dict__ = fields
    return user


def _map_attributes(attributes: Mapping, fields: Dict[str, Any]) -> None:
    # A dict copy, a set intersection and a scan of the value types, all in C, and one Python step
    # per named attribute: a per-attribute Python loop with tests costs about three times as much.
    properties = dict(attributes)
    named = _NOT_PROPERTIES.intersection(properties)
    if named:
        for name in named:
            fields[name] = properties.pop(name)
        if "user_properties" in named:
            nested = fields["user_properties"]
            if isinstance(nested, Mapping):
                properties = {**nested, **properties}
            else:
                properties["user_properties"] = nested
            fields["user_properties"] = None
        if "groups" in named and isinstance(fields["groups"], Mapping):
            fields["groups"] = _groups(fields["groups"])
    if properties:
        if _DATETIME in map(type, properties.values()):
            properties = {name: value.isoformat() if isinstance(value, _DATETIME) else value
                          for name, value in properties.items()}
        fields["user_properties"] = properties


def _groups(groups: Mapping) -> Any:
    """``{group type: [group name]}``: a single name (a string) is wrapped in a list, a tuple listed.

    Groups already given as lists are passed on as they are.
    """
    for names in groups.values():
        if names.__class__ is not list:
            break
    else:
        return groups
    result: Dict[str, Any] = {}
    for group_type, names in groups.items():
        if isinstance(names, str):
            names = [names]
        elif isinstance(names, tuple):
            names = list(names)
        result[group_type] = names
    return result
