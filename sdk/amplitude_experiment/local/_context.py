"""A ``User`` as the evaluation context the rules select from (reference-sdk.md §3.1)."""

from typing import Any, Dict, Mapping

def user_to_context(user: Any) -> Dict[str, Any]:
    """``{"user": <non-None attributes>, "groups": {type: {group_name, ...}}}``, as the reference builds it.

    ``user`` is a ``User`` or any object with attributes; ``None`` gives an empty context.
    """
    attributes = getattr(user, "__dict__", None)
    if not attributes:
        return {}
    fields = {name: value for name, value in attributes.items() if value is not None}
    # The group fields are usually None, so popping the few that are left is cheaper than testing
    # every attribute's name.
    groups = fields.pop("groups", None)
    group_properties = fields.pop("group_properties", None)
    group_cohort_ids = fields.pop("group_cohort_ids", None)
    context: Dict[str, Any] = {"user": fields} if fields else {}
    if groups is None:
        return context
    context_groups: Dict[str, Any] = {}
    # The reference raises on groups that are not a mapping; evaluate_v2 must not, so they name no group.
    entries = groups.items() if isinstance(groups, Mapping) else ()
    for group_type, names in entries:
        if not isinstance(names, list) or not names:
            continue  # only a non-empty list names a group; strings and tuples are skipped
        name = names[0]
        group = {"group_name": name}
        properties = _lookup(group_properties, group_type, name)
        if properties is not None:
            group["group_properties"] = properties
        cohort_ids = _lookup(group_cohort_ids, group_type, name)
        if cohort_ids is not None:
            group["cohort_ids"] = cohort_ids
        context_groups[group_type] = group
    context["groups"] = context_groups
    return context


def _lookup(nested: Any, group_type: str, name: Any) -> Any:
    """``nested[group_type][name]`` when every step is truthy (the reference's tests), else None."""
    try:
        by_name = nested.get(group_type) if nested else None
        value = by_name.get(name) if by_name else None
        return value if value else None
    except Exception:  # not a mapping, an unhashable name, a value that cannot be tested: nothing to add
        return None
