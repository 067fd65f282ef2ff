"""Conditions compiled into predicates over an evaluation target (docs/compatibility.md, 'Selectors', 'Condition matching', 'Missing values', 'Operators').

Everything that depends only on the flag config (filter value sets, parsed numbers and versions,
compiled regexes, the answer for a missing property) is computed once here, so a predicate call
does only the work that depends on the user.
"""

import functools
import json
import re
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from .regex import deferred_search
from .semantic_version import parse_version

Target = dict
Predicate = Callable[[Target], bool]
StringMatcher = Callable[[str], bool]

IS = "is"
IS_NOT = "is not"
CONTAINS = "contains"
DOES_NOT_CONTAIN = "does not contain"
LESS = "less"
LESS_OR_EQUAL = "less or equal"
GREATER = "greater"
GREATER_OR_EQUAL = "greater or equal"
VERSION_LESS = "version less"
VERSION_LESS_OR_EQUAL = "version less or equal"
VERSION_GREATER = "version greater"
VERSION_GREATER_OR_EQUAL = "version greater or equal"
SET_IS = "set is"
SET_IS_NOT = "set is not"
SET_CONTAINS = "set contains"
SET_DOES_NOT_CONTAIN = "set does not contain"
SET_CONTAINS_ANY = "set contains any"
SET_DOES_NOT_CONTAIN_ANY = "set does not contain any"
REGEX_MATCH = "regex match"
REGEX_DOES_NOT_MATCH = "regex does not match"

SET_OPERATORS = frozenset(
    (SET_IS, SET_IS_NOT, SET_CONTAINS, SET_DOES_NOT_CONTAIN, SET_CONTAINS_ANY, SET_DOES_NOT_CONTAIN_ANY)
)
# What a condition answers when the property is missing or falsy (docs/compatibility.md, 'Missing values'): "(none)" in the values
# for these, its negation for the next set, and false for every other operator.
_NULL_MEANS_NONE_LISTED = frozenset(
    (IS, CONTAINS, LESS, LESS_OR_EQUAL, GREATER, GREATER_OR_EQUAL, VERSION_LESS, VERSION_LESS_OR_EQUAL,
     VERSION_GREATER, VERSION_GREATER_OR_EQUAL, SET_IS, SET_CONTAINS, SET_CONTAINS_ANY)
)
_NULL_MEANS_NONE_NOT_LISTED = frozenset((IS_NOT, DOES_NOT_CONTAIN, SET_DOES_NOT_CONTAIN, SET_DOES_NOT_CONTAIN_ANY))
_BOOLEAN_WORDS = ("true", "false")

_ORDERINGS = {
    LESS: lambda a, b: a < b,
    LESS_OR_EQUAL: lambda a, b: a <= b,
    GREATER: lambda a, b: a > b,
    GREATER_OR_EQUAL: lambda a, b: a >= b,
}
_VERSION_ORDERINGS = {
    VERSION_LESS: LESS,
    VERSION_LESS_OR_EQUAL: LESS_OR_EQUAL,
    VERSION_GREATER: GREATER,
    VERSION_GREATER_OR_EQUAL: GREATER_OR_EQUAL,
}

# --- selection (docs/compatibility.md, 'Selectors') -----------------------------------------------


def compile_selector(path: Sequence[str]) -> Callable[[Any], Any]:
    """A function that walks ``path`` through nested mappings and returns what it finds, or None."""
    if not _selectable(path):
        return _select_nothing
    return _walker_factory(len(path), _RETURN_VALUE)(*path, None, None)


def _selectable(path: Sequence[str]) -> bool:
    """An empty path, or one with an empty element, selects nothing whatever the target holds."""
    return bool(path) and all(path)


# The hot path of evaluation is "walk a selector, then test the value". Calling a selector and
# then a matcher costs two Python calls per condition; instead each path length gets one closure
# factory, generated once per process (as namedtuple and dataclasses do), whose closure walks the
# path inline and runs the test in the same frame.
_RETURN_VALUE = "return value"
_TEST_STRING = """\
if not value:
    return if_missing
if value.__class__ is str and not value.startswith("["):
    return matches(value)
return _match_elements(value, matches)"""
_TEST_SET = """\
if not value:
    return if_missing
return _match_set(value, matches)"""


@functools.lru_cache(maxsize=None)
def _walker_factory(length: int, test: str) -> Callable[..., Callable[[Any], Any]]:
    elements = ["e%d" % position for position in range(length)]
    # A walk that reaches None ends there: the value is missing whatever the rest of the path says.
    missing = "return None" if test == _RETURN_VALUE else "return if_missing"
    lines = [
        "def factory(%s, matches, if_missing):" % ", ".join(elements),
        "    def walk(target):",
        "        value = target.get(e0)",  # the target is always the {"context", "result"} dict
    ]
    for element in elements[1:]:
        lines += [
            "        if value.__class__ is dict:",
            "            value = value.get(%s)" % element,
            "        elif value is None:",
            "            " + missing,
            "        else:",
            "            value = _get(value, %s)" % element,
        ]
    lines.extend("        " + line for line in test.splitlines())
    lines.append("    return walk")
    namespace = {"_get": _get, "_match_elements": _match_elements, "_match_set": _match_set}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from fixed fragments only
    return namespace["factory"]


def _select_nothing(target: Any) -> None:
    return None


def _get(value: Any, element: str) -> Any:
    """One step into something that is not a plain dict: any object with ``get`` and ``__getitem__``
    (a dict subclass, a mapping type), as the reference selects; anything else selects None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(element)
    getter = getattr(value, "get", None)
    if getter is None or not hasattr(value, "__getitem__"):
        return None
    try:
        return getter(element)
    except (AttributeError, KeyError):
        return None


# --- coercion (docs/compatibility.md, 'Condition matching') ---------------------------------------


def coerce_string(value: Any) -> Optional[str]:
    """The string a property value is compared as: JSON for dicts and lists, ``str`` otherwise."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _coerce_list(value: Any) -> Optional[Sequence[str]]:
    """The property as strings when it is a list or JSON text of a list, else None."""
    if isinstance(value, list):
        return [item if item.__class__ is str else coerce_string(item) for item in value if item is not None]
    text = value if value.__class__ is str else str(value)
    if not text.startswith("["):
        return None
    if len(text) > _CACHED_JSON_LIST_LENGTH:
        return _parse_json_list(text)
    return _parse_short_json_list(text)


def _parse_json_list(text: str) -> Optional[Tuple[str, ...]]:
    try:
        items = json.loads(text)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    return tuple(coerce_string(item) for item in items if item is not None)


# The same JSON-text list property is typically read by many conditions of one evaluation and by
# the next evaluations of the same user: decode each short one once. The tuples are immutable.
_CACHED_JSON_LIST_LENGTH = 2048
_parse_short_json_list = functools.lru_cache(maxsize=1024)(_parse_json_list)


def _parse_number(text: str) -> Optional[float]:
    try:
        return float(text)
    except (ValueError, TypeError):
        return None


# --- single-string matchers (docs/compatibility.md, 'Operators') ----------------------------------


# `is not`, `does not contain` and `regex does not match` negate per element (docs/compatibility.md, 'Condition matching'), so each
# matcher takes `negate` and answers the negated question itself: no wrapper call per test.


def _is_matcher(values: Sequence[str], negate: bool) -> StringMatcher:
    exact = frozenset(values)
    folds_booleans = any(value.lower() in _BOOLEAN_WORDS for value in values)
    lowered = frozenset(value.lower() for value in values)

    if not folds_booleans:
        return (lambda prop: prop not in exact) if negate else exact.__contains__

    def matches_is(prop: str) -> bool:
        lowered_prop = prop.lower()
        if lowered_prop == "true" or lowered_prop == "false":
            return (lowered_prop in lowered) is not negate
        return (prop in exact) is not negate

    return matches_is


def _contains_matcher(values: Sequence[str], negate: bool) -> StringMatcher:
    needles = tuple(value.lower() for value in values)
    found = not negate

    def matches_contains(prop: str) -> bool:
        haystack = prop.lower()
        for needle in needles:
            if needle in haystack:
                return found
        return negate

    return matches_contains


def _ordering_matcher(values: Sequence[str], op: str, parse: Callable[[str], Any]) -> StringMatcher:
    """Typed comparison against the filters that parse, falling back to comparing raw strings."""
    compare = _ORDERINGS[op]
    raw = tuple(values)
    parsed = tuple(typed for typed in map(parse, raw) if typed is not None)

    def compare_strings(prop: str) -> bool:
        for value in raw:
            if compare(prop, value):
                return True
        return False

    if not parsed:
        return compare_strings

    def compare_typed(prop: str) -> bool:
        typed = parse(prop)
        if typed is None:
            return compare_strings(prop)
        for value in parsed:
            if compare(typed, value):
                return True
        return False

    return compare_typed


def _regex_matcher(values: Sequence[str], negate: bool) -> Tuple[StringMatcher, List[str]]:
    """``re.search`` semantics, in linear time wherever RE2 gives the same answers (see regex.py)."""
    patterns = []
    invalid = []
    for value in values:
        try:
            patterns.append(deferred_search(value))
        except (re.error, TypeError, OverflowError, RecursionError):
            invalid.append(value)
    found = not negate
    if len(patterns) == 1:
        search = patterns[0]

        def matches_one_regex(prop: str) -> bool:
            return found if search(prop) else negate

        return matches_one_regex, invalid

    def matches_regex(prop: str) -> bool:
        for search in patterns:
            if search(prop):
                return found
        return negate

    return matches_regex, invalid


def _string_matcher(op: str, values: Sequence[str]) -> Tuple[Optional[StringMatcher], List[str]]:
    """The matcher for one property string, with any regex values that failed to compile."""
    if op == IS or op == IS_NOT:
        return _is_matcher(values, op == IS_NOT), []
    if op == CONTAINS or op == DOES_NOT_CONTAIN:
        return _contains_matcher(values, op == DOES_NOT_CONTAIN), []
    if op in _ORDERINGS:
        return _ordering_matcher(values, op, _parse_number), []
    if op in _VERSION_ORDERINGS:
        return _ordering_matcher(values, _VERSION_ORDERINGS[op], parse_version), []
    if op == REGEX_MATCH or op == REGEX_DOES_NOT_MATCH:
        return _regex_matcher(values, op == REGEX_DOES_NOT_MATCH)
    return None, []


# --- set matchers (docs/compatibility.md, 'Operators') --------------------------------------------


def _set_matcher(op: str, values: Sequence[str]) -> Callable[[List[str]], bool]:
    filters = frozenset(values)
    if op == SET_IS:
        return lambda props: set(props) == filters
    if op == SET_IS_NOT:
        return lambda props: set(props) != filters
    count = len(values)
    # Each filter value is matched against the property list with the `is` rule, the list in the
    # filter role: boolean words fold case only when the list itself holds one.
    specs = tuple((value, value.lower() in _BOOLEAN_WORDS, value.lower()) for value in values)
    any_boolean_filter = any(is_boolean for _, is_boolean, _ in specs)

    def found(props: List[str]) -> Iterable[bool]:
        members = set(props)
        lowered = None
        if any_boolean_filter:
            lowered = {prop.lower() for prop in props}
            if "true" not in lowered and "false" not in lowered:
                lowered = None
        for value, is_boolean, lowered_value in specs:
            if is_boolean and lowered is not None:
                yield lowered_value in lowered
            else:
                yield value in members

    if op == SET_CONTAINS:
        return lambda props: len(props) >= count and all(found(props))
    if op == SET_DOES_NOT_CONTAIN:
        return lambda props: not (len(props) >= count and all(found(props)))
    if op == SET_CONTAINS_ANY:
        return lambda props: any(found(props))
    return lambda props: not any(found(props))  # SET_DOES_NOT_CONTAIN_ANY


# --- conditions -------------------------------------------------------------------------------


def _always_false(target: Target) -> bool:
    return False


def _always_true(target: Target) -> bool:
    return True


def compile_condition(selector: Sequence[str], op: str, values: Sequence[str]) -> Tuple[Predicate, List[str]]:
    """A predicate for one condition, and the regex values in it that do not compile."""
    if_missing = _null_answer(op, values)
    if op in SET_OPERATORS:
        matches, invalid, test = _set_matcher(op, values), [], _TEST_SET
    else:
        matches, invalid = _string_matcher(op, values)
        test = _TEST_STRING
        if matches is None:  # unknown operator: false whatever the property holds (docs/compatibility.md, 'Missing values')
            return _always_false, []
    if not _selectable(selector):
        return (_always_true if if_missing else _always_false), invalid
    if selector[0] == "result" and len(selector) <= 2 and test is _TEST_STRING:
        return _whole_result_predicate(selector, matches, if_missing), invalid
    return _walker_factory(len(selector), test)(*selector, matches, if_missing), invalid


# --- whole results --------------------------------------------------------------------------------
# The reference's flag results are dataclass objects. A non-set condition on one as a whole
# (["result", flag]) compares str() of it, the dataclass repr; on all of them (["result"]) it
# must JSON-encode a dict of them and raises. Set operators never get that far (neither text
# starts with "["), so they keep the plain walkers and stay false.


class WholeResultsSelectedError(TypeError):
    """A condition selects ``["result"]``, every flag result at once, which has no text to compare.

    Change the selector to one flag's result (``["result", "<flag key>"]``) or one of its fields
    (``["result", "<flag key>", "key"]``).
    """


def _result_text(result: Any) -> str:
    """The text a condition compares for a whole flag result: the reference's result repr."""
    return "EvaluationVariant(key=%r, value=%r, payload=%r, metadata=%r)" % (
        result.get("key"), result.get("value"), result.get("payload"), result.get("metadata"))


def _whole_result_predicate(selector: Sequence[str], matches: StringMatcher, if_missing: bool) -> Predicate:
    if len(selector) == 1:

        def every_result(target: Target) -> bool:
            if not target.get("result"):
                return if_missing
            raise WholeResultsSelectedError(
                "a condition selects ['result'], every flag result at once, which has no text to compare "
                "(Amplitude's SDK raises here too); select one flag's result, e.g. ['result', '<flag key>', 'key']"
            )

        return every_result

    flag_key = selector[1]

    def one_result(target: Target) -> bool:
        results = target.get("result")
        result = results.get(flag_key) if results else None
        if not result:
            return if_missing
        return matches(_result_text(result))

    return one_result


def _match_elements(prop: Any, matches: StringMatcher) -> bool:
    """A non-set operator on a value that is not a plain string: any element of a list matches (docs/compatibility.md, 'Condition matching')."""
    props = _coerce_list(prop)
    if props is None:
        return matches(coerce_string(prop))
    for item in props:
        if matches(item):
            return True
    return False


def _match_set(prop: Any, matches: Callable[[List[str]], bool]) -> bool:
    """Set operators are false unless the value is a non-empty list (or JSON text of one)."""
    props = _coerce_list(prop)
    if not props:
        return False
    return matches(props)


def _null_answer(op: str, values: Sequence[str]) -> bool:
    if op in _NULL_MEANS_NONE_LISTED:
        return "(none)" in values
    if op in _NULL_MEANS_NONE_NOT_LISTED:
        return "(none)" not in values
    return False
