"""Cohort targeting without I/O: which cohorts a flag config references, and a user's cohorts.

A *cohort condition* is a ``set contains any`` / ``set does not contain any`` condition whose
selector has more than two elements and ends in ``cohort_ids``. Its group type is ``"User"``
when the selector's second element is ``user``; otherwise, when the selector contains
``groups``, its third element (``["context", "groups", "org id", "cohort_ids"]`` -> ``org id``);
any other selector is not a cohort condition. The values are the cohort ids.

Membership itself is looked up by the caller's :class:`CohortMembership` (an in-process store
when the SDK downloads cohorts, flagd's mapped member files in shared mode): this module only
knows the rules for filling ``user.cohort_ids`` and ``user.group_cohort_ids`` before evaluation
(docs/cohorts.md, "How a user's cohorts are filled").
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

__all__ = ["COHORT_OPERATORS", "USER_GROUP_TYPE", "CohortMembership", "CohortReferences", "cohort_group_type",
           "enrich_user", "merge_references"]

#: The group type of user cohorts (what the cohort API answers in ``groupType``).
USER_GROUP_TYPE = "User"
COHORT_OPERATORS = frozenset(("set contains any", "set does not contain any"))

#: Group type -> the cohort ids conditions of that type name, sorted.
CohortReferences = Dict[str, Tuple[str, ...]]


class CohortMembership(Protocol):
    """Answers which of some cohorts hold a member; backed by whatever holds the cohorts."""

    def cohorts_containing(self, group_type: str, member: str, cohort_ids: Iterable[str]) -> List[str]:
        """The ids among ``cohort_ids`` of loaded cohorts of ``group_type`` that hold ``member``
        (a user id for ``"User"``, a group name otherwise), in ``cohort_ids``'s order."""


def cohort_group_type(selector: Sequence[str], op: str) -> Optional[str]:
    """The group type a condition with this (validated) selector and operator targets, or None
    when it is not a cohort condition. The flag parser asks it while compiling a flag, so a flag's
    cohort references are found once per flag content."""
    if op not in COHORT_OPERATORS or len(selector) <= 2 or selector[-1] != "cohort_ids":
        return None
    if selector[1] == "user":
        return USER_GROUP_TYPE
    if "groups" in selector:
        return selector[2]
    return None


def merge_references(parts: Iterable[Mapping[str, Iterable[str]]]) -> CohortReferences:
    """One :data:`CohortReferences` from several flags' references."""
    merged: Dict[str, Set[str]] = {}
    for part in parts:
        for group_type, ids in part.items():
            merged.setdefault(group_type, set()).update(ids)
    return {group_type: tuple(sorted(ids)) for group_type, ids in sorted(merged.items()) if ids}


def all_cohort_ids(references: Mapping[str, Iterable[str]]) -> Set[str]:
    """Every cohort id in ``references``, whatever its group type."""
    return {cohort_id for ids in references.values() for cohort_id in ids}


def enrich_user(user: Any, references: Mapping[str, Tuple[str, ...]], membership: CohortMembership) -> None:
    """Fill ``user.cohort_ids`` and ``user.group_cohort_ids`` in place, as Amplitude's SDK does.

    - User cohorts: when some flag references ``"User"`` cohorts and ``user.user_id`` is truthy,
      ``user.cohort_ids`` becomes the referenced cohorts holding the user id (replacing what
      the caller set); without a user id the caller's value stays.
    - Group cohorts: for each group type of ``user.groups`` whose first name is truthy and that
      some flag references, ``user.group_cohort_ids[type][first name]`` becomes the matching
      cohorts (possibly an empty list).
    """
    user_cohorts = references.get(USER_GROUP_TYPE)
    if user_cohorts:
        user_id = getattr(user, "user_id", None)
        if user_id:
            user.cohort_ids = membership.cohorts_containing(USER_GROUP_TYPE, user_id, user_cohorts) \
                if user_id.__class__ is str or isinstance(user_id, str) else []
    groups = getattr(user, "groups", None)
    if not groups or not hasattr(groups, "items"):
        return
    for group_type, names in groups.items():
        try:
            name = names[0] if names else None
        except (TypeError, KeyError, IndexError):
            continue
        if not name:
            continue
        cohort_ids = references.get(group_type)
        if not cohort_ids:
            continue
        found = membership.cohorts_containing(group_type, name, cohort_ids) if isinstance(name, str) else []
        add = getattr(user, "add_group_cohort_ids", None)
        if add is not None:
            add(group_type, name, found)
        else:
            if getattr(user, "group_cohort_ids", None) is None:
                user.group_cohort_ids = {}
            user.group_cohort_ids.setdefault(group_type, {})[name] = found
