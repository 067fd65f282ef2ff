"""An OpenFeature ``EvaluationContext`` as the ``User`` our clients evaluate (docs/openfeature.md).

The targeting key names the user (``user_id`` unless configured otherwise); attributes named like
a ``User`` field fill that field; ``user_properties``, ``groups`` and ``group_properties`` map to
their fields; every other attribute becomes a user property.
"""

import datetime
from typing import Any, Dict, Mapping, Optional

from ..user import User

#: Every ``User`` field, all None, in the order ``User()`` sets them.
_EMPTY_USER: Dict[str, Any] = dict(User().__dict__)
#: Attributes copied to the ``User`` field of the same name as they are.
USER_FIELDS = frozenset(name for name in _EMPTY_USER if name not in ("user_properties", "groups"))
#: Fields the targeting key may fill.
TARGETING_FIELDS = ("user_id", "device_id")

_new_user = object.__new__


def context_to_user(context: Any, targeting_field: str = "user_id") -> User:
    """The ``User`` for an OpenFeature evaluation context (``None`` gives an empty user).

    Never raises for odd attribute values: what a field cannot use is passed on unchanged and the
    evaluation decides (a flag that fails on it is reported as a GENERAL error).
    """
    user = _new_user(User)
    fields = user.__dict__
    fields.update(_EMPTY_USER)
    if context is None:
        return user
    attributes: Optional[Mapping[str, Any]] = context.attributes
    if attributes:
        properties: Optional[Dict[str, Any]] = None
        for name, value in attributes.items():
            if name in USER_FIELDS:
                fields[name] = value
            elif name == "user_properties" and isinstance(value, Mapping):
                if properties is None:
                    properties = {}
                properties.update(value)
            elif name == "groups" and isinstance(value, Mapping):
                fields["groups"] = _groups(value)
            else:
                if properties is None:
                    properties = {}
                properties[name] = value.isoformat() if isinstance(value, datetime.datetime) else value
        if properties is not None:
            fields["user_properties"] = properties
    targeting_key = context.targeting_key
    if targeting_key:
        fields[targeting_field] = targeting_key
    return user


def _groups(groups: Mapping[str, Any]) -> Dict[str, Any]:
    """``{group type: [group name]}``: a single name (a string) is wrapped in a list, a tuple listed."""
    result: Dict[str, Any] = {}
    for group_type, names in groups.items():
        if isinstance(names, str):
            names = [names]
        elif isinstance(names, tuple):
            names = list(names)
        result[group_type] = names
    return result
