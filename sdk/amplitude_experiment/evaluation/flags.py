"""The one flag-config parser: validate one flag of Amplitude's flag JSON and compile it.

flagd (before it publishes), the SDK's poller and the shared-memory reader all compile through
:func:`compile_flag`; whole-config work (storage order, dependencies, cycles, digests) lives in
``catalog.py``. A flag with a wrong type anywhere is rejected, naming the flag and the field;
unknown fields are ignored (docs/compatibility.md, "Flag-config validation").
"""

import contextlib
import functools
import gc
import sys
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Set, Tuple

import mmh3

from .cohorts import COHORT_OPERATORS, cohort_group_type
from .conditions import Predicate, Target, coerce_string, compile_condition, compile_selector

__all__ = ["CompiledFlag", "EvaluatedVariant", "FlagConfigError", "collector_paused", "compile_flag"]


class FlagConfigError(ValueError):
    """A flag config that cannot be used; ``flag_key`` names the flag when one is to blame."""

    def __init__(self, message: str, flag_key: Optional[str] = None):
        super().__init__(message)
        self.flag_key = flag_key


#: A flag's result inside one evaluation: a plain dict with exactly ``key``, ``value``, ``payload``
#: and ``metadata`` (merged), so later flags select ``["result", flag, "key"]`` with plain dict
#: lookups, as the reference's result objects answer them. Built once per (segment, variant) at
#: compile time and shared by every evaluation; callers get ``Variant`` copies, never these.
EvaluatedVariant = Dict[str, Any]


Picker = Callable[[Target], Optional[EvaluatedVariant]]


class CompiledFlag:
    """One flag as plain data: its segments in order, each ``(predicates, groups, variant, bucket)``.

    A segment matches when every predicate holds and, if ``groups`` is not None, every predicate
    of at least one group holds (one condition group is flattened into ``predicates``; several
    stay as ``groups``). It then yields ``bucket(target)`` when it has a bucket, else ``variant``;
    ``None`` means "try the next segment". The engine runs these loops inline, which is most of
    what makes evaluation fast.

    ``problems`` lists what the caller should log about this flag (a regex that does not
    compile); ``needs_exact_user_entry`` says whether one of its selectors could tell the
    context's user entry from the user's own attribute dict (see ``_context.py``);
    ``cohort_refs`` maps group type -> the cohort ids its cohort conditions name (``cohorts.py``),
    None when it has none.
    """

    __slots__ = ("key", "dependencies", "segments", "problems", "needs_exact_user_entry", "cohort_refs")

    def __init__(self, key: str, dependencies: Tuple[str, ...], segments: Tuple["Segment", ...],
                 problems: Tuple[str, ...] = (), needs_exact_user_entry: bool = False,
                 cohort_refs: Optional[Dict[str, FrozenSet[str]]] = None):
        self.key = key
        self.dependencies = dependencies
        self.segments = segments
        self.problems = problems
        self.needs_exact_user_entry = needs_exact_user_entry
        self.cohort_refs = cohort_refs


Segment = Tuple[
    Tuple[Predicate, ...], Optional[Tuple[Tuple[Predicate, ...], ...]], Optional[EvaluatedVariant], Optional[Picker]
]


def compile_flag(flag: Any, index: int = 0) -> CompiledFlag:
    """Validate and compile one flag config (one element of ``GET /sdk/v2/flags``).

    :param index: the flag's position in its config, for error messages only.
    :raises FlagConfigError: naming the flag and the first field that is not of the expected type.
    """
    with collector_paused():
        return _compile_flag(flag, index)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a compile.

    Compiling creates tens of thousands of objects that all stay alive. Left to the collector,
    each collection a compile triggers finds nothing to free, and the young objects are then
    walked again and again as they age through the generations (about 40% of a 1000-flag compile,
    measured). With the collector off during the compile and the new objects moved straight into
    the oldest generation afterwards (``gc.freeze()`` then ``gc.unfreeze()``: two list splices),
    they are walked only by the rare full collections, as any long-lived object is; nothing is
    kept out of the collector for good. Nested uses pause once.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        gc.enable()


# --- validation and compilation ---------------------------------------------------------------


class _Where:
    """One flag's compile: builds error messages that name the flag and the path to the bad
    field, and collects what the compiled flag reports (problems, exact user entry)."""

    __slots__ = ("flag_key", "problems", "exact_user_entry", "cohorts")

    def __init__(self, flag_key: Optional[str]):
        self.flag_key = flag_key
        self.problems: List[str] = []
        self.exact_user_entry = False
        self.cohorts: Dict[str, Set[str]] = {}

    def selector(self, path: "Path", value: Any) -> Tuple[str, ...]:
        # Interned: a selector's names are looked up in every evaluation's context dicts, whose
        # keys are mostly interned already (attribute names), and an identical key object is
        # found without comparing text. A decoded record's strings are not interned by msgpack.
        selector = tuple(map(sys.intern, _strings(self, path, value)))
        if not self.exact_user_entry and _tells_user_entries_apart(selector):
            self.exact_user_entry = True
        return selector

    def fail(self, path: "Path", expected: str, got: Any) -> FlagConfigError:
        subject = "flag %r" % self.flag_key if self.flag_key is not None else "flag"
        return FlagConfigError(
            "%s: %s must be %s, got %s" % (subject, format_path(path), expected, _type_name(got)), self.flag_key
        )


# Paths to a field are tuples, formatted only when a message needs them: validation of a valid
# config (the common case) then costs no string formatting. Ints are list positions, 1-tuples
# are object keys, strings are field names.
Path = Tuple[Any, ...]


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += "[%d]" % part
        elif isinstance(part, tuple):
            text += "[%r]" % part
        else:
            text += ("." if text else "") + part
    return text


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


def _mapping(where: _Where, path: Path, value: Any, optional: bool = True) -> Optional[Mapping[str, Any]]:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise where.fail(path, "an object" + (" or null" if optional else ""), value)
    return value


def _list(where: _Where, path: Path, value: Any, optional: bool) -> Optional[list]:
    if value is None and optional:
        return None
    if not isinstance(value, list):
        raise where.fail(path, "an array" + (" or null" if optional else ""), value)
    return value


def _string(where: _Where, path: Path, value: Any, optional: bool) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise where.fail(path, "a string" + (" or null" if optional else ""), value)
    return value


def _strings(where: _Where, path: Path, value: Any, optional: bool = False) -> Optional[Tuple[str, ...]]:
    items = _list(where, path, value, optional)
    if items is None:
        return None
    for position, item in enumerate(items):
        if not isinstance(item, str):
            raise where.fail(path + (position,), "a string", item)
    return tuple(items)


def _range(where: _Where, path: Path, value: Any) -> Tuple[int, int]:
    if not isinstance(value, list) or len(value) < 2:
        raise where.fail(path, "an array of two integers", value)
    bounds = [_integer(where, path + (position,), bound) for position, bound in enumerate(value)]
    return bounds[0], bounds[1]


def _integer(where: _Where, path: Path, bound: Any) -> int:
    """A range bound as the reference's schema reads it: ``int()`` of a number or a string.

    Floats truncate (``0.5`` -> 0) and strings ``int()`` accepts (``"50"``, ``" 7 "``) are taken;
    booleans, NaN, infinities and other strings are rejected.
    """
    if isinstance(bound, bool) or not isinstance(bound, (int, float, str)):
        raise where.fail(path, "an integer", bound)
    try:
        return int(bound)
    except (ValueError, OverflowError):
        raise where.fail(path, "an integer", bound) from None


def _compile_flag(flag: Any, index: int) -> CompiledFlag:
    if not isinstance(flag, dict):
        raise FlagConfigError("flag #%d must be an object, got %s" % (index, _type_name(flag)))
    key = flag.get("key")
    where = _Where(key if isinstance(key, str) else None)
    if not isinstance(key, str):
        raise FlagConfigError("flag #%d: key must be a string, got %s" % (index, _type_name(key)))
    flag_metadata = _mapping(where, ("metadata",), flag.get("metadata"))
    variants = _mapping(where, ("variants",), flag.get("variants"), optional=False)
    for variant_key, variant in variants.items():
        path = ("variants", (variant_key,))
        _mapping(where, path, variant, optional=False)
        _string(where, path + ("key",), variant.get("key"), optional=True)
        _mapping(where, path + ("metadata",), variant.get("metadata"))
    dependencies = _strings(where, ("dependencies",), flag.get("dependencies"), optional=True) or ()
    segments = _list(where, ("segments",), flag.get("segments"), optional=False)

    results = _ResultCache(variants, flag_metadata)
    compiled_segments = tuple(
        _compile_segment(where, ("segments", position), segment, results)
        for position, segment in enumerate(segments)
    )
    cohort_refs = {group_type: frozenset(ids) for group_type, ids in where.cohorts.items()} or None
    return CompiledFlag(key, dependencies, compiled_segments, tuple(where.problems), where.exact_user_entry,
                        cohort_refs)


class _ResultCache:
    """Builds each (segment, variant) result once, with its metadata merged (docs/compatibility.md, "Metadata")."""

    def __init__(self, variants: Mapping[str, Any], flag_metadata: Optional[Mapping[str, Any]]):
        self.variants = variants
        self.flag_metadata = flag_metadata or {}

    def result(self, variant_key: Optional[str], segment_metadata: Optional[Mapping[str, Any]]) -> Optional[EvaluatedVariant]:
        if variant_key is None:
            return None
        variant = self.variants.get(variant_key)
        if variant is None:
            return None
        metadata = {**self.flag_metadata, **(segment_metadata or {}), **(variant.get("metadata") or {})}
        key, value, payload = variant.get("key"), variant.get("value"), variant.get("payload")
        result = {"key": key, "value": value, "payload": payload, "metadata": metadata}
        # Results are never changed once built (callers get copies of the metadata; a payload is
        # handed out as it is, as before): flags whose results are the same share one, as most
        # default variants and rollouts do. The repr tells 1, 1.0 and True apart, and 0.0 from
        # -0.0, where == would not. Bounded: emptied when full.
        exact = repr(result)
        shared = _SHARED_RESULTS.get(exact)
        if shared is not None:
            return shared
        if len(_SHARED_RESULTS) >= _SHARED_RESULTS_MAX:
            _SHARED_RESULTS.clear()
        _SHARED_RESULTS[exact] = result
        return result


def _compile_segment(
    where: _Where, path: Path, segment: Any, results: _ResultCache
) -> Segment:
    _mapping(where, path, segment, optional=False)
    metadata = _mapping(where, path + ("metadata",), segment.get("metadata"))
    segment_variant = results.result(_string(where, path + ("variant",), segment.get("variant"), optional=True), metadata)
    conditions = _list(where, path + ("conditions",), segment.get("conditions"), optional=True)
    groups = _compile_conditions(where, path + ("conditions",), conditions) if conditions else ()
    # No group, or an empty one (which is true), matches always; one group is a plain AND.
    if len(groups) <= 1 or not all(groups):
        predicates, groups = (groups[0] if len(groups) == 1 else ()), None
    else:
        predicates = ()
    bucket = _mapping(where, path + ("bucket",), segment.get("bucket"))
    if bucket is None:
        return predicates, groups, segment_variant, None
    return predicates, groups, None, _compile_bucket(where, path + ("bucket",), bucket, results, metadata, segment_variant)


def _compile_conditions(
    where: _Where, path: Path, conditions: list
) -> Tuple[Tuple[Predicate, ...], ...]:
    """One tuple of predicates per condition group: the segment matches when any group all holds."""
    groups = []
    for group_position, group in enumerate(conditions):
        group_path = path + (group_position,)
        predicates = []
        for position, condition in enumerate(_list(where, group_path, group, optional=False)):
            condition_path = group_path + (position,)
            _mapping(where, condition_path, condition, optional=False)
            selector = where.selector(condition_path + ("selector",), condition.get("selector"))
            op = _string(where, condition_path + ("op",), condition.get("op"), optional=False)
            values = _strings(where, condition_path + ("values",), condition.get("values"))
            if op in COHORT_OPERATORS:
                group_type = cohort_group_type(selector, op)
                if group_type is not None:
                    where.cohorts.setdefault(group_type, set()).update(values)
            predicate, invalid_patterns = _shared_condition(selector, op, values)
            for pattern in invalid_patterns:
                where.problems.append(
                    "flag %r: %s has a regex that does not compile, %r: it never matches"
                    % (where.flag_key, format_path(condition_path), pattern)
                )
            predicates.append(predicate)
        groups.append(tuple(predicates))

    return tuple(groups)


def _compile_bucket(
    where: _Where,
    path: Path,
    bucket: Mapping[str, Any],
    results: _ResultCache,
    segment_metadata: Optional[Mapping[str, Any]],
    segment_variant: Optional[EvaluatedVariant],
) -> Picker:
    select = _shared_selector(where.selector(path + ("selector",), bucket.get("selector")))
    salt = _string(where, path + ("salt",), bucket.get("salt"), optional=False)
    allocations = []
    for position, allocation in enumerate(_list(where, path + ("allocations",), bucket.get("allocations"), optional=False)):
        allocation_path = path + ("allocations", position)
        _mapping(where, allocation_path, allocation, optional=False)
        low, high = _range(where, allocation_path + ("range",), allocation.get("range"))
        distributions = []
        raw_distributions = _list(where, allocation_path + ("distributions",), allocation.get("distributions"), optional=False)
        for dposition, distribution in enumerate(raw_distributions):
            distribution_path = allocation_path + ("distributions", dposition)
            _mapping(where, distribution_path, distribution, optional=False)
            variant_key = _string(where, distribution_path + ("variant",), distribution.get("variant"), optional=False)
            dlow, dhigh = _range(where, distribution_path + ("range",), distribution.get("range"))
            # A distribution naming an unknown variant yields nothing, and the next segment is tried.
            distributions.append((dlow, dhigh, results.result(variant_key, segment_metadata)))
        allocations.append((low, high, tuple(distributions)))
    try:
        prefix = (salt + "/").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): nothing could be bucketed with it
        raise where.fail(path + ("salt",), "text without lone surrogates", salt) from None
    frozen_allocations = tuple(allocations)
    hash32 = mmh3.hash

    def pick(target: Target) -> Optional[EvaluatedVariant]:
        value = select(target)
        if value is None:
            return segment_variant
        text = value if value.__class__ is str else coerce_string(value)
        if not text:
            return segment_variant
        # Hash the UTF-8 bytes ourselves: mmh3 given a str with a lone surrogate crashes the
        # process; encoding raises UnicodeEncodeError instead, as the reference does.
        hashed = hash32(prefix + text.encode("utf-8"), 0, False)
        allocation_point = hashed % 100
        distribution_point = hashed // 100
        for low, high, distributions in frozen_allocations:
            if low <= allocation_point < high:
                for dlow, dhigh, variant in distributions:
                    if dlow <= distribution_point < dhigh:
                        return variant
        return segment_variant

    return pick


# Conditions and selectors are pure functions of their text: flags that test the same property
# against the same values (a country list, a plan) share one compiled predicate, in this version
# and the next. Bounded, so conditions of versions long gone are dropped in time.


@functools.lru_cache(maxsize=16384)
def _shared_condition(selector: Tuple[str, ...], op: str, values: Tuple[str, ...]) -> Tuple[Predicate, Tuple[str, ...]]:
    predicate, invalid_patterns = compile_condition(selector, op, values)
    return predicate, tuple(invalid_patterns)


@functools.lru_cache(maxsize=4096)
def _shared_selector(selector: Tuple[str, ...]) -> Callable[[Target], Any]:
    return compile_selector(selector)


_SHARED_RESULTS: Dict[str, EvaluatedVariant] = {}
_SHARED_RESULTS_MAX = 16384


def _tells_user_entries_apart(selector: Tuple[str, ...]) -> bool:
    if selector == ("context",):
        return True
    return selector[:2] == ("context", "user") and (len(selector) == 2 or selector[2] in _USER_ENTRY_LEAVES_OUT)


_USER_ENTRY_LEAVES_OUT = frozenset(("groups", "group_properties", "group_cohort_ids"))
