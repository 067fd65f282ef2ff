"""The one flag-config parser: validate Amplitude's flag JSON and compile it into an evaluation plan.

flagd (before it publishes), the SDK's poller and the shared-memory reader all call
:func:`compile_flags`. A config with a wrong type anywhere is rejected whole, naming the flag and
the field; unknown fields are ignored (docs/compatibility.md, 'Flag-config validation', quirk Q13 deliberately not kept).
"""

import contextlib
import gc
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import mmh3

from .conditions import Predicate, Target, coerce_string, compile_condition, compile_selector

__all__ = ["EvaluatedVariant", "FlagConfigError", "FlagSet", "compile_flags"]


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
    """

    __slots__ = ("key", "dependencies", "segments")

    def __init__(self, key: str, dependencies: Tuple[str, ...], segments: Tuple["Segment", ...]):
        self.key = key
        self.dependencies = dependencies
        self.segments = segments


Segment = Tuple[
    Tuple[Predicate, ...], Optional[Tuple[Tuple[Predicate, ...], ...]], Optional[EvaluatedVariant], Optional[Picker]
]


class FlagSet:
    """A compiled config: flags in storage order and, per flag, the order its dependencies run in.

    ``problems`` lists what the caller should log once for this version (a dependency cycle, a
    regex that does not compile); evaluation itself never raises for them.
    ``needs_exact_user_entry`` says whether some rule could tell the context's user entry from the
    user's own attribute dict: it selects the entry as a whole (``["context"]``,
    ``["context", "user"]``) or one of the group fields the entry leaves out.
    """

    __slots__ = ("flags", "order", "sequences", "cycle_keys", "problems", "raw", "needs_exact_user_entry")

    def __init__(self, flags: Dict[str, CompiledFlag], raw: List[Mapping[str, Any]], problems: List[str]):
        self.flags = flags
        self.raw = raw
        self.problems = problems
        self.cycle_keys = _flags_on_cycles(flags)
        if self.cycle_keys:
            problems.append(
                "dependency cycle between flags %s: they are left out of every evaluation"
                % sorted(self.cycle_keys)
            )
        self.sequences = _dependency_sequences(flags, self.cycle_keys)
        self.order = _merge_sequences(self.sequences, flags)
        self.needs_exact_user_entry = _needs_exact_user_entry(raw)

    def __len__(self) -> int:
        return len(self.flags)


def compile_flags(raw: Any, previous_order: Iterable[str] = ()) -> FlagSet:
    """Validate a flag-config list (the JSON of ``GET /sdk/v2/flags``) and compile it.

    :param previous_order: keys of the flags held before this update. Flags already held keep
        their position and new ones are appended, as in the reference's flag storage (docs/compatibility.md, 'Storage order');
        evaluation order, and so which results a later flag can see, follows it. A key listed
        twice keeps its first position and its last config.
    :raises FlagConfigError: naming the first flag and field that is not of the expected type.
    """
    if not isinstance(raw, list):
        raise FlagConfigError("flag configs must be a JSON array of flags, got %s" % _type_name(raw))
    problems: List[str] = []
    compiled: Dict[str, Tuple[CompiledFlag, Mapping[str, Any]]] = {}
    with _collector_paused():
        for index, flag in enumerate(raw):
            flag_plan = _compile_flag(flag, index, problems)
            compiled[flag_plan.key] = (flag_plan, flag)
    ordered_keys = [key for key in previous_order if key in compiled]
    held = set(ordered_keys)
    ordered_keys.extend(key for key in compiled if key not in held)
    flags = {key: compiled[key][0] for key in ordered_keys}
    return FlagSet(flags, [compiled[key][1] for key in ordered_keys], problems)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while a config compiles.

    Compiling creates tens of thousands of objects that all stay alive, so every collection it
    triggers finds nothing to free, yet the older ones walk the whole heap; in a worker forked from
    a preloaded master that walk also copies every page it touches. A 1000-flag config compiles
    in about three quarters of the time without them. Another thread's collections wait as long.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- validation and compilation ---------------------------------------------------------------


class _Where:
    """Builds error messages that name the flag and the path to the bad field."""

    __slots__ = ("flag_key",)

    def __init__(self, flag_key: Optional[str]):
        self.flag_key = flag_key

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


def _compile_flag(flag: Any, index: int, problems: List[str]) -> CompiledFlag:
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
        _compile_segment(where, ("segments", position), segment, results, problems)
        for position, segment in enumerate(segments)
    )
    return CompiledFlag(key, dependencies, compiled_segments)


class _ResultCache:
    """Builds each (segment, variant) result once, with its metadata merged (docs/compatibility.md, 'Metadata')."""

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
        return {"key": variant.get("key"), "value": variant.get("value"), "payload": variant.get("payload"),
                "metadata": metadata}


def _compile_segment(
    where: _Where, path: Path, segment: Any, results: _ResultCache, problems: List[str]
) -> Segment:
    _mapping(where, path, segment, optional=False)
    metadata = _mapping(where, path + ("metadata",), segment.get("metadata"))
    segment_variant = results.result(_string(where, path + ("variant",), segment.get("variant"), optional=True), metadata)
    conditions = _list(where, path + ("conditions",), segment.get("conditions"), optional=True)
    groups = _compile_conditions(where, path + ("conditions",), conditions, problems) if conditions else ()
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
    where: _Where, path: Path, conditions: list, problems: List[str]
) -> Tuple[Tuple[Predicate, ...], ...]:
    """One tuple of predicates per condition group: the segment matches when any group all holds."""
    groups = []
    for group_position, group in enumerate(conditions):
        group_path = path + (group_position,)
        predicates = []
        for position, condition in enumerate(_list(where, group_path, group, optional=False)):
            condition_path = group_path + (position,)
            _mapping(where, condition_path, condition, optional=False)
            selector = _strings(where, condition_path + ("selector",), condition.get("selector"))
            op = _string(where, condition_path + ("op",), condition.get("op"), optional=False)
            values = _strings(where, condition_path + ("values",), condition.get("values"))
            predicate, invalid_patterns = compile_condition(selector, op, values)
            for pattern in invalid_patterns:
                problems.append(
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
    select = compile_selector(_strings(where, path + ("selector",), bucket.get("selector")))
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


def _needs_exact_user_entry(raw: List[Mapping[str, Any]]) -> bool:
    """Whether any selector of a (validated) config can tell the exact user entry from the attribute dict."""
    for flag in raw:
        for segment in flag["segments"]:
            bucket = segment.get("bucket")
            if bucket and _tells_user_entries_apart(bucket["selector"]):
                return True
            for group in segment.get("conditions") or ():
                for condition in group:
                    if _tells_user_entries_apart(condition["selector"]):
                        return True
    return False


def _tells_user_entries_apart(selector: List[str]) -> bool:
    if selector == ["context"]:
        return True
    return selector[:2] == ["context", "user"] and (len(selector) == 2 or selector[2] in _USER_ENTRY_LEAVES_OUT)


_USER_ENTRY_LEAVES_OUT = frozenset(("groups", "group_properties", "group_cohort_ids"))


# --- dependency order (docs/compatibility.md, 'Flag order and dependencies') ----------------------


def _flags_on_cycles(flags: Mapping[str, CompiledFlag]) -> frozenset:
    """Keys of flags that sit on a dependency cycle (strongly connected, or depending on themselves)."""
    index_of: Dict[str, int] = {}
    lowlink: Dict[str, int] = {}
    on_stack = set()
    stack: List[str] = []
    on_cycle = set()
    counter = 0
    for root in flags:
        if root in index_of:
            continue
        # Iterative Tarjan: each frame is (key, iterator over its stored dependencies).
        index_of[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        frames = [(root, iter(flags[root].dependencies))]
        while frames:
            key, dependencies = frames[-1]
            advanced = False
            for dependency in dependencies:
                if dependency not in flags:
                    continue
                if dependency == key:
                    on_cycle.add(key)
                if dependency not in index_of:
                    index_of[dependency] = lowlink[dependency] = counter
                    counter += 1
                    stack.append(dependency)
                    on_stack.add(dependency)
                    frames.append((dependency, iter(flags[dependency].dependencies)))
                    advanced = True
                    break
                if dependency in on_stack:
                    lowlink[key] = min(lowlink[key], index_of[dependency])
            if advanced:
                continue
            frames.pop()
            if frames:
                parent = frames[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[key])
            if lowlink[key] == index_of[key]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == key:
                        break
                if len(component) > 1:
                    on_cycle.update(component)
    return frozenset(on_cycle)


def _dependency_sequences(flags: Mapping[str, CompiledFlag], excluded: frozenset) -> Dict[str, Tuple[CompiledFlag, ...]]:
    """For each flag, the flags a depth-first walk from it evaluates, parents first.

    With no cycles, walking several start keys with a shared "already evaluated" set is the same as
    concatenating these sequences and dropping repeats, which is what makes a one-flag evaluation
    cost nothing per flag loaded.
    """
    sequences: Dict[str, Tuple[CompiledFlag, ...]] = {}
    for root in flags:
        if root in excluded or root in sequences:
            continue
        frames = [(root, iter(flags[root].dependencies))]
        while frames:
            key, dependencies = frames[-1]
            pending = None
            for dependency in dependencies:
                if dependency in flags and dependency not in excluded and dependency not in sequences:
                    pending = dependency
                    break
            if pending is not None:
                frames.append((pending, iter(flags[pending].dependencies)))
                continue
            frames.pop()
            seen = set()
            sequence: List[CompiledFlag] = []
            for dependency in flags[key].dependencies:
                for flag in sequences.get(dependency, ()):
                    if flag.key not in seen:
                        seen.add(flag.key)
                        sequence.append(flag)
            if key not in seen:
                sequence.append(flags[key])
            sequences[key] = tuple(sequence)
    return sequences


def _merge_sequences(sequences: Mapping[str, Sequence[CompiledFlag]], start_keys: Iterable[str]) -> Tuple[CompiledFlag, ...]:
    seen = set()
    order = []
    for start in start_keys:
        for flag in sequences.get(start, ()):
            if flag.key not in seen:
                seen.add(flag.key)
                order.append(flag)
    return tuple(order)
