"""One version's flags as a whole: storage order, dependency sequences, cycles, per-flag digests.

This is the whole-config work, done once per version: by flagd before it publishes (the shared
snapshot stores its result, so no worker redoes it) and by the poller for each changed poll.
Evaluation then compiles flags one at a time, when a request first needs them (``flagset.py``).

Each flag is also encoded on its own (msgpack) and named by a content digest of that encoding:
the shared snapshot stores the records, and compiled flags are kept across versions by digest.
"""

import json
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple

import msgpack

from .cohorts import CohortReferences, merge_references
from .flags import CompiledFlag, FlagConfigError, _compile_flag, _type_name, collector_paused

if TYPE_CHECKING:  # pragma: no cover
    from .flagset import CompiledFlagCache

__all__ = ["DIGEST_SIZE", "FlagCatalog", "PlannedCatalog", "content_digest", "decode_config", "decode_flag",
           "encode_flag", "flag_digest", "plan_flags"]

#: Bytes of a flag's content digest (BLAKE2b): collisions are out of reach for any config.
DIGEST_SIZE = 16


class FlagCatalog(Protocol):
    """What a :class:`~.flagset.FlagSet` needs to know about one version's flags.

    :class:`PlannedCatalog` answers it in process (poll mode, flagd); the shared snapshot's flag
    table answers it in place, from the mapping, one flag at a time.
    """

    #: Whether some selector of some flag tells the context's user entry from the attribute dict.
    needs_exact_user_entry: bool
    #: What to log once for this version: dependency cycles, regexes that do not compile.
    problems: Sequence[str]
    #: Group type -> the cohort ids the flags' cohort conditions name (``cohorts.py``).
    cohort_refs: CohortReferences

    def __len__(self) -> int:
        """Number of flags, those on dependency cycles included."""

    def keys(self) -> Sequence[str]:
        """Every flag key, in storage order."""

    def digest(self, key: str) -> Optional[bytes]:
        """The content digest of the flag's record; None for a key this version does not have."""

    def sequence(self, key: str) -> Optional[Tuple[str, ...]]:
        """The keys a request for ``key`` alone evaluates, dependencies first, ``key`` last.

        None for an unknown key or one on a dependency cycle (never evaluated).
        """

    def evaluation_order(self) -> Tuple[str, ...]:
        """The keys an all-flags request evaluates, in order (flags on cycles left out)."""

    def config(self, key: str) -> Any:
        """The flag's config as decoded JSON.

        :raises KeyError: for a key this version does not have.
        """


def encode_flag(flag: Any) -> bytes:
    """The record of one flag config: msgpack, deterministic for the same decoded JSON.

    Lone surrogates (``"\\ud800"`` in the JSON) pass through as such. A config msgpack cannot
    hold (an integer beyond 64 bits) is stored as JSON text instead, which starts with ``{``:
    never the first byte of a msgpack map.
    """
    try:
        return msgpack.packb(flag, use_bin_type=True, unicode_errors="surrogatepass")
    except (OverflowError, ValueError, TypeError):
        return json.dumps(flag, separators=(",", ":")).encode("ascii")


def decode_flag(record: Any) -> Any:
    """The flag config a record (bytes or a buffer) holds.

    :raises ValueError: the record does not decode.
    """
    try:
        if record[:1] == b"{":
            return json.loads(bytes(record))
        return msgpack.unpackb(record, raw=False, unicode_errors="surrogatepass")
    except (ValueError, msgpack.UnpackException) as error:
        raise ValueError("flag record does not decode: %s" % error) from None


def flag_digest(record: Any) -> bytes:
    """The content digest of a flag record (``DIGEST_SIZE`` bytes)."""
    return blake2b(record, digest_size=DIGEST_SIZE).digest()


def decode_config(body: Any) -> Any:
    """The JSON of a flag-config response or file (bytes or text), with the collector held off.

    A 10 MB config is millions of objects: with the collector running, each collection the decode
    triggers walks all of them again (measured: 3 s instead of 0.35 s for 10,000 flags).

    :raises FlagConfigError: the body is not JSON.
    """
    try:
        with collector_paused():
            return json.loads(body)
    except ValueError as error:
        raise FlagConfigError("not JSON: %s" % error) from None


def content_digest(catalog: FlagCatalog) -> bytes:
    """Identity of a whole config: the same flags, with the same content, in the same storage order."""
    hasher = blake2b(digest_size=DIGEST_SIZE)
    for key in catalog.keys():
        hasher.update(key.encode("utf-8", "surrogatepass"))
        hasher.update(b"\0")
        hasher.update(catalog.digest(key) or b"")
    return hasher.digest()


class PlannedCatalog:
    """A validated config in process: what :func:`plan_flags` computes, as plain dicts."""

    __slots__ = ("_keys", "records", "digests", "dependencies", "sequences", "order", "cycle_keys",
                 "problems", "needs_exact_user_entry", "cohort_refs")

    def __init__(self, keys: List[str], records: Dict[str, bytes], digests: Dict[str, bytes],
                 dependencies: Dict[str, Tuple[str, ...]], problems: List[str], needs_exact_user_entry: bool,
                 cohort_refs: Optional[CohortReferences] = None):
        self._keys = keys
        self.cohort_refs: CohortReferences = cohort_refs or {}
        self.records = records
        self.digests = digests
        self.dependencies = dependencies
        self.cycle_keys = flags_on_cycles(keys, dependencies)
        if self.cycle_keys:
            problems.insert(0, "dependency cycle between flags %s: they are left out of every evaluation"
                            % sorted(self.cycle_keys))
        self.problems = problems
        self.needs_exact_user_entry = needs_exact_user_entry
        #: Per flag, the keys a one-flag request evaluates (flags on cycles have none).
        self.sequences = dependency_sequences(keys, dependencies, self.cycle_keys)
        #: The all-flags evaluation order.
        self.order = merge_sequences(self.sequences, keys)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> Sequence[str]:
        return self._keys

    def digest(self, key: str) -> Optional[bytes]:
        return self.digests.get(key)

    def sequence(self, key: str) -> Optional[Tuple[str, ...]]:
        return self.sequences.get(key)

    def evaluation_order(self) -> Tuple[str, ...]:
        return self.order

    def config(self, key: str) -> Any:
        record = self.records.get(key)
        if record is None:
            raise KeyError("flag %r: no record%s" % (key, " kept" if key in self.digests else ""))
        return decode_flag(record)


def plan_flags(raw: Any, previous_order: Iterable[str] = (), cache: "Optional[CompiledFlagCache]" = None,
               records: bool = True) -> PlannedCatalog:
    """Validate a flag-config list (the JSON of ``GET /sdk/v2/flags``) and plan it.

    Validating is compiling: every flag goes through the one parser. With a ``cache``, a flag
    whose record did not change since the cache last saw it is not compiled again, and every
    flag compiled here is put in the cache.

    :param records: False for a one-off compile whose flags are all compiled here and never
        compared with another version's (``compile_flags``): no record is encoded, ``config()``
        has nothing to answer, and digests only tell this plan's flags apart.
    :param previous_order: keys of the flags held before this update. Flags already held keep
        their position and new ones are appended, as in the reference's flag storage
        (docs/compatibility.md, "Storage order"); evaluation order, and so which results a later
        flag can see, follows it. A key listed twice keeps its first position and its last config.
    :raises FlagConfigError: naming the first flag and field that is not of the expected type.
    """
    if not isinstance(raw, list):
        raise FlagConfigError("flag configs must be a JSON array of flags, got %s" % _type_name(raw))
    encoded: Dict[str, bytes] = {}
    digests: Dict[str, bytes] = {}
    compiled: Dict[str, CompiledFlag] = {}
    with collector_paused():
        for index, flag in enumerate(raw):
            if not records:
                flag_plan = _compile_flag(flag, index)
                key = flag_plan.key
                digests[key] = b"#%d" % index
                compiled[key] = flag_plan
                if cache is not None:
                    cache.put(key, digests[key], flag_plan)
                continue
            record = encode_flag(flag)
            digest = flag_digest(record)
            key = flag.get("key") if isinstance(flag, dict) else None
            flag_plan = cache.get(key, digest) if cache is not None and isinstance(key, str) else None
            if flag_plan is None:
                # From the record, not from ``raw``: the compiled flag then shares no object with
                # the decoded response, whose memory goes back whole once the caller drops it.
                flag_plan = _compile_flag(decode_flag(record) if isinstance(flag, dict) else flag, index)
                if cache is not None:
                    cache.put(flag_plan.key, digest, flag_plan)
            key = flag_plan.key
            encoded[key] = record
            digests[key] = digest
            compiled[key] = flag_plan
    ordered_keys = [key for key in previous_order if key in compiled]
    held = set(ordered_keys)
    ordered_keys.extend(key for key in compiled if key not in held)
    problems = [problem for key in ordered_keys for problem in compiled[key].problems]
    return PlannedCatalog(
        ordered_keys, encoded, digests, {key: compiled[key].dependencies for key in ordered_keys}, problems,
        any(compiled[key].needs_exact_user_entry for key in ordered_keys),
        merge_references(compiled[key].cohort_refs for key in ordered_keys if compiled[key].cohort_refs))


# --- dependency order (docs/compatibility.md, "Flag order and dependencies") ----------------------------------


def flags_on_cycles(keys: Sequence[str], dependencies: Mapping[str, Sequence[str]]) -> frozenset:
    """Keys of flags that sit on a dependency cycle (strongly connected, or depending on themselves)."""
    index_of: Dict[str, int] = {}
    lowlink: Dict[str, int] = {}
    on_stack = set()
    stack: List[str] = []
    on_cycle = set()
    counter = 0
    for root in keys:
        if root in index_of:
            continue
        # Iterative Tarjan: each frame is (key, iterator over its stored dependencies).
        index_of[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        frames = [(root, iter(dependencies[root]))]
        while frames:
            key, pending = frames[-1]
            advanced = False
            for dependency in pending:
                if dependency not in dependencies:
                    continue
                if dependency == key:
                    on_cycle.add(key)
                if dependency not in index_of:
                    index_of[dependency] = lowlink[dependency] = counter
                    counter += 1
                    stack.append(dependency)
                    on_stack.add(dependency)
                    frames.append((dependency, iter(dependencies[dependency])))
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


def dependency_sequences(keys: Sequence[str], dependencies: Mapping[str, Sequence[str]],
                         excluded: frozenset) -> Dict[str, Tuple[str, ...]]:
    """For each flag, the keys a depth-first walk from it evaluates, parents first.

    With no cycles, walking several start keys with a shared "already evaluated" set is the same as
    concatenating these sequences and dropping repeats, which is what makes a one-flag evaluation
    cost nothing per flag loaded.
    """
    sequences: Dict[str, Tuple[str, ...]] = {}
    for root in keys:
        if root in excluded or root in sequences:
            continue
        frames = [(root, iter(dependencies[root]))]
        while frames:
            key, pending = frames[-1]
            child = None
            for dependency in pending:
                if dependency in dependencies and dependency not in excluded and dependency not in sequences:
                    child = dependency
                    break
            if child is not None:
                frames.append((child, iter(dependencies[child])))
                continue
            frames.pop()
            seen = set()
            sequence: List[str] = []
            for dependency in dependencies[key]:
                for member in sequences.get(dependency, ()):
                    if member not in seen:
                        seen.add(member)
                        sequence.append(member)
            if key not in seen:
                sequence.append(key)
            sequences[key] = tuple(sequence)
    return sequences


def merge_sequences(sequences: Mapping[str, Sequence[str]], start_keys: Iterable[str]) -> Tuple[str, ...]:
    """The keys evaluated for a request of ``start_keys``: their sequences concatenated, repeats dropped."""
    seen = set()
    order = []
    for start in start_keys:
        for key in sequences.get(start, ()):
            if key not in seen:
                seen.add(key)
                order.append(key)
    return tuple(order)
