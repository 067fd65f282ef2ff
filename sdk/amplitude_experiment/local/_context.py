"""A ``User`` as the evaluation context the rules select from (docs/compatibility.md, 'Evaluation context')."""

from typing import Any, Dict, Mapping


def user_to_context(user: Any, exact_user_entry: bool = True) -> Dict[str, Any]:
    """``{"user": <non-None attributes>, "groups": {type: {group_name, ...}}}``, as the reference builds it.

    ``user`` is a ``User`` or any object with attributes; ``None`` gives an empty context.

    :param exact_user_entry: build the user entry exactly. When False, the user entry is the
        user's attribute dict itself: every selector into it, but for the group fields, finds the
        same values (an attribute set to None and a missing one both select None), and it costs
        nothing to build. Only rules that select the entry whole or its group fields can tell
        (``FlagSet.needs_exact_user_entry``).
    """
    attributes = getattr(user, "__dict__", None)
    if not attributes:
        return {}
    if exact_user_entry:
        fields = {name: value for name, value in attributes.items() if value is not None}
        # The group fields are usually None, so popping the few that are left is cheaper than
        # testing every attribute's name.
        fields.pop("groups", None)
        fields.pop("group_properties", None)
        fields.pop("group_cohort_ids", None)
        context: Dict[str, Any] = {"user": fields} if fields else {}
    else:
        context = {"user": attributes}
    groups = attributes.get("groups")
    if groups is None:
        return context
    group_properties = attributes.get("group_properties")
    group_cohort_ids = attributes.get("group_cohort_ids")
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
