"""Checks a hand-written flag list before it is published: ``amplitude-flagd check`` and ``run --flags-file``.

The SDK's parser accepts whatever Amplitude's own SDK accepts, because configs served by Amplitude
must evaluate exactly as they do there: a distribution naming a variant that does not exist yields
no variant, an unknown operator never matches, a range of three numbers uses its first two. In a
file someone typed, each of those is a typo that silently serves the wrong variant. This module
names them, one :class:`Problem` per mistake, with the flag and the path to the field.

flagd refuses a flags file with problems (the last good version stays published) and only logs and
counts the problems of configs from Amplitude's API.
"""

import json
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Set, Tuple

from amplitude_experiment.evaluation import FlagConfigError, compile_flags
from amplitude_experiment.evaluation.conditions import (
    CONTAINS,
    DOES_NOT_CONTAIN,
    GREATER,
    GREATER_OR_EQUAL,
    IS,
    IS_NOT,
    LESS,
    LESS_OR_EQUAL,
    REGEX_DOES_NOT_MATCH,
    REGEX_MATCH,
    SET_CONTAINS,
    SET_CONTAINS_ANY,
    SET_DOES_NOT_CONTAIN,
    SET_DOES_NOT_CONTAIN_ANY,
    SET_IS,
    SET_IS_NOT,
    VERSION_GREATER,
    VERSION_GREATER_OR_EQUAL,
    VERSION_LESS,
    VERSION_LESS_OR_EQUAL,
)
from amplitude_experiment.evaluation.flags import format_path

__all__ = ["ALLOCATION_MAX", "DISTRIBUTION_MAX", "OPERATORS", "Problem", "check_body", "check_flags", "summarize"]

#: Every condition operator the evaluation engine knows; any other never matches.
OPERATORS = frozenset((
    IS, IS_NOT, CONTAINS, DOES_NOT_CONTAIN, LESS, LESS_OR_EQUAL, GREATER, GREATER_OR_EQUAL,
    VERSION_LESS, VERSION_LESS_OR_EQUAL, VERSION_GREATER, VERSION_GREATER_OR_EQUAL,
    SET_IS, SET_IS_NOT, SET_CONTAINS, SET_DOES_NOT_CONTAIN, SET_CONTAINS_ANY, SET_DOES_NOT_CONTAIN_ANY,
    REGEX_MATCH, REGEX_DOES_NOT_MATCH,
))
#: Allocation ranges are percentages of users: [low, high) within [0, 100].
ALLOCATION_MAX = 100
#: Distribution ranges split the 32-bit hash divided by 100: [low, high) within [0, 42949673].
DISTRIBUTION_MAX = 42949673

Path = Tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake in a flag list: the flag (None for the list itself), the field path, what is wrong."""

    flag: Optional[str]
    field: str
    message: str

    def __str__(self) -> str:
        subject = "flag %r" % self.flag if self.flag is not None else "flag list"
        return "%s: %s%s" % (subject, self.field + ": " if self.field else "", self.message)


def check_body(body: bytes, allow_empty: bool = False) -> List[Problem]:
    """Problems of a flags file's raw bytes (JSON, then :func:`check_flags`); empty when it is fine."""
    try:
        raw = json.loads(body)
    except ValueError as error:
        return [Problem(None, "", "not JSON: %s" % error)]
    return check_flags(raw, allow_empty)


def check_flags(raw: Any, allow_empty: bool = False, parse: bool = True) -> List[Problem]:
    """Every problem found in a parsed flag list, in file order; empty when it is fine.

    With ``parse`` (the default), a list without problems of its own also goes through the SDK's
    parser, and whatever that rejects or reports (a regex that does not compile, a dependency
    cycle) is a problem too, so a list that passes here publishes without surprises. The daemon
    passes False: it parses the list itself next.
    """
    if not isinstance(raw, list):
        return [Problem(None, "", "must be a JSON array of flags, got %s" % _type(raw))]
    if not raw:
        if allow_empty:
            return []
        return [Problem(None, "", "is empty: every flag would be off for every user "
                                  "(pass --allow-empty-flags if that is what you mean)")]
    problems: List[Problem] = []
    keys = [flag.get("key") for flag in raw if isinstance(flag, dict)]
    known = {key for key in keys if isinstance(key, str)}
    seen: Set[str] = set()
    for index, flag in enumerate(raw):
        _Flag(problems, index, flag, known, seen).check()
    if parse and not problems:
        try:
            flag_set = compile_flags(raw)
        except FlagConfigError as error:
            problems.append(Problem(error.flag_key, "", str(error)))
        else:
            problems.extend(Problem(None, "", text) for text in flag_set.problems)
    return problems


class _Flag:
    """The checks of one flag; appends to the shared problem list."""

    def __init__(self, problems: List[Problem], index: int, flag: Any, known: Set[str], seen: Set[str]):
        self.problems = problems
        self.index = index
        self.flag = flag
        self.known = known
        self.seen = seen
        self.key: Optional[str] = flag.get("key") if isinstance(flag, dict) and isinstance(flag.get("key"), str) \
            else None
        self.variants: Mapping[str, Any] = {}

    def add(self, path: Path, message: str) -> None:
        flag = self.key if self.key is not None else "#%d" % self.index
        self.problems.append(Problem(flag, format_path(path), message))

    def check(self) -> None:
        flag = self.flag
        if not isinstance(flag, dict):
            self.add((), "must be an object, got %s" % _type(flag))
            return
        if self.key is None or not self.key:
            self.add(("key",), "must be a non-empty string, got %s" % _show(flag.get("key")))
        elif self.key in self.seen:
            self.add(("key",), "appears twice: the later flag replaces the earlier one")
        else:
            self.seen.add(self.key)
        variants = flag.get("variants")
        if not isinstance(variants, dict):
            self.add(("variants",), "must be an object of variants, got %s" % _type(variants))
        else:
            self.variants = variants
            for name, variant in variants.items():
                if not isinstance(variant, dict):
                    self.add(("variants", (name,)), "must be an object, got %s" % _type(variant))
                elif "key" in variant and variant["key"] != name:
                    self.add(("variants", (name,), "key"),
                             "is %s but the variant is listed as %r" % (_show(variant["key"]), name))
        dependencies = flag.get("dependencies")
        if dependencies is not None:
            if not _strings(dependencies):
                self.add(("dependencies",), "must be an array of flag keys, got %s" % _show(dependencies))
            else:
                for position, dependency in enumerate(dependencies):
                    if dependency not in self.known:
                        self.add(("dependencies", position), "names flag %r, which is not in the list" % dependency)
        segments = flag.get("segments")
        if not isinstance(segments, list):
            self.add(("segments",), "must be an array of segments, got %s" % _type(segments))
            return
        for position, segment in enumerate(segments):
            self.segment(("segments", position), segment)

    def segment(self, path: Path, segment: Any) -> None:
        if not isinstance(segment, dict):
            self.add(path, "must be an object, got %s" % _type(segment))
            return
        if segment.get("variant") is not None:
            self.variant(path + ("variant",), segment["variant"])
        conditions = segment.get("conditions")
        if conditions is not None:
            self.conditions(path + ("conditions",), conditions)
        bucket = segment.get("bucket")
        if bucket is not None:
            self.bucket(path + ("bucket",), bucket)

    def variant(self, path: Path, name: Any) -> None:
        if not isinstance(name, str):
            self.add(path, "must be a variant name, got %s" % _show(name))
        elif name not in self.variants:
            self.add(path, "names variant %r, which the flag does not define (it has %s): users get no variant"
                     % (name, ", ".join(sorted(self.variants)) or "none"))

    def conditions(self, path: Path, groups: Any) -> None:
        if not isinstance(groups, list):
            self.add(path, "must be an array of condition groups, got %s" % _type(groups))
            return
        for group_position, group in enumerate(groups):
            group_path = path + (group_position,)
            if not isinstance(group, list):
                self.add(group_path, "must be an array of conditions, got %s" % _type(group))
                continue
            for position, condition in enumerate(group):
                condition_path = group_path + (position,)
                if not isinstance(condition, dict):
                    self.add(condition_path, "must be an object, got %s" % _type(condition))
                    continue
                selector = condition.get("selector")
                if not _strings(selector) or not selector:
                    self.add(condition_path + ("selector",), "must be a non-empty array of strings, got %s"
                             % _show(selector))
                op = condition.get("op")
                if op not in OPERATORS:
                    self.add(condition_path + ("op",), "%s is not an operator (known: %s): the condition never "
                             "matches" % (_show(op), ", ".join(sorted(OPERATORS))))
                values = condition.get("values")
                if not _strings(values):
                    self.add(condition_path + ("values",), "must be an array of strings, got %s" % _show(values))

    def bucket(self, path: Path, bucket: Any) -> None:
        if not isinstance(bucket, dict):
            self.add(path, "must be an object, got %s" % _type(bucket))
            return
        selector = bucket.get("selector")
        if not _strings(selector) or not selector:
            self.add(path + ("selector",), "must be a non-empty array of strings, got %s" % _show(selector))
        if not isinstance(bucket.get("salt"), str):
            self.add(path + ("salt",), "must be a string, got %s" % _show(bucket.get("salt")))
        allocations = bucket.get("allocations")
        if not isinstance(allocations, list):
            self.add(path + ("allocations",), "must be an array, got %s" % _type(allocations))
            return
        for position, allocation in enumerate(allocations):
            allocation_path = path + ("allocations", position)
            if not isinstance(allocation, dict):
                self.add(allocation_path, "must be an object, got %s" % _type(allocation))
                continue
            self.range(allocation_path + ("range",), allocation.get("range"), ALLOCATION_MAX)
            distributions = allocation.get("distributions")
            if not isinstance(distributions, list):
                self.add(allocation_path + ("distributions",), "must be an array, got %s" % _type(distributions))
                continue
            for dposition, distribution in enumerate(distributions):
                distribution_path = allocation_path + ("distributions", dposition)
                if not isinstance(distribution, dict):
                    self.add(distribution_path, "must be an object, got %s" % _type(distribution))
                    continue
                self.variant(distribution_path + ("variant",), distribution.get("variant"))
                self.range(distribution_path + ("range",), distribution.get("range"), DISTRIBUTION_MAX)

    def range(self, path: Path, value: Any, maximum: int) -> None:
        if not (isinstance(value, list) and len(value) == 2
                and all(isinstance(bound, int) and not isinstance(bound, bool) for bound in value)):
            self.add(path, "must be two integers [low, high], got %s" % _show(value))
        elif not 0 <= value[0] <= value[1] <= maximum:
            self.add(path, "must satisfy 0 <= low <= high <= %d, got %s" % (maximum, _show(value)))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _type(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _show(value: Any) -> str:
    """A short JSON rendering of a bad value, for messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def summarize(problems: Iterable[Problem], limit: int = 3) -> str:
    """The first few problems on one line, for a log field or a status report."""
    problems = list(problems)
    text = "; ".join(str(problem) for problem in problems[:limit])
    if len(problems) > limit:
        text += "; and %d more" % (len(problems) - limit)
    return "%d problem%s: %s" % (len(problems), "" if len(problems) == 1 else "s", text)
