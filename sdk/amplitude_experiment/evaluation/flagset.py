"""Compiled flags, made when a request first needs them and kept across versions by content digest.

A :class:`FlagSet` is one version's flags as the engine sees them. It compiles a flag (and the
flags it depends on) the first time an evaluation asks for it, from the version's
:class:`~.catalog.FlagCatalog`, and looks in a :class:`CompiledFlagCache` first: a flag whose
record did not change between two versions is compiled once, ever, in a process.
"""

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .catalog import FlagCatalog, plan_flags
from .flags import CompiledFlag, FlagConfigError, collector_paused, compile_flag

__all__ = ["CompiledFlagCache", "FlagSet", "ValidatedFlags", "compile_flags"]


class CompiledFlagCache:
    """Compiled flags by key and content digest, shared by the versions a flag source loads.

    Bounded by the current version: :meth:`retain` drops every entry the new version does not
    reference with the same digest, so memory does not grow across versions. Thread-safe for
    the way flag sources use it (single dict operations; a flag two threads compile at once is
    compiled twice, harmlessly).
    """

    __slots__ = ("_entries", "compiles")

    def __init__(self) -> None:
        self._entries: Dict[str, Tuple[bytes, CompiledFlag]] = {}
        #: Flags compiled into this cache so far: how tests and status see what a process paid.
        self.compiles = 0

    def get(self, key: Optional[str], digest: bytes) -> Optional[CompiledFlag]:
        entry = self._entries.get(key)  # type: ignore[arg-type]
        if entry is not None and entry[0] == digest:
            return entry[1]
        return None

    def put(self, key: str, digest: bytes, flag: CompiledFlag) -> None:
        self._entries[key] = (digest, flag)
        self.compiles += 1

    def retain(self, catalog: FlagCatalog) -> None:
        """Drop what ``catalog`` (the version now served) no longer references: O(entries held)."""
        for key, (digest, _) in list(self._entries.items()):
            if catalog.digest(key) != digest:
                self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class ValidatedFlags(CompiledFlagCache):
    """For a process that validates configs and never evaluates them (flagd): remembers which flag
    contents passed the parser and what planning needs of them (key, dependencies, problems,
    cohort references), not their compiled rules, so a config where one flag of 10,000 changed
    validates one flag."""

    __slots__ = ()

    def put(self, key: str, digest: bytes, flag: CompiledFlag) -> None:
        super().put(key, digest, CompiledFlag(flag.key, flag.dependencies, (), flag.problems,
                                              flag.needs_exact_user_entry, flag.cohort_refs))


class FlagSet:
    """One version's flags, compiled on demand; what :func:`~.engine.evaluate` runs.

    ``sequences`` maps a requested key to its compiled flags in evaluation order (filled per key
    on first request); ``all`` is the all-flags order once some request needed it. ``problems``
    lists what the caller should log once for this version. ``on_problem`` (optional) hears about
    a flag that fails to compile here, which is then left out of every evaluation.
    """

    __slots__ = ("catalog", "cache", "sequences", "all", "needs_exact_user_entry", "problems", "on_problem",
                 "cohort_refs", "_failed")

    def __init__(self, catalog: FlagCatalog, cache: Optional[CompiledFlagCache] = None,
                 on_problem: Optional[Callable[[str], None]] = None) -> None:
        self.catalog = catalog
        self.cache = cache if cache is not None else CompiledFlagCache()
        self.sequences: Dict[str, Tuple[CompiledFlag, ...]] = {}
        self.all: Optional[Tuple[CompiledFlag, ...]] = None
        self.needs_exact_user_entry = catalog.needs_exact_user_entry
        #: Group type -> cohort ids the flags' cohort conditions name; empty when none does.
        self.cohort_refs = getattr(catalog, "cohort_refs", None) or {}
        self.problems: List[str] = list(catalog.problems)
        self.on_problem = on_problem
        self._failed: Dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.catalog)

    def sequence_of(self, key: str) -> Tuple[CompiledFlag, ...]:
        """The compiled flags a request for ``key`` alone evaluates (empty for an unknown key)."""
        keys = self.catalog.sequence(key)
        if keys is None:
            return ()  # not remembered: the keys callers ask for are theirs, and unbounded
        flags = self._compiled(keys)
        self.sequences[key] = flags
        return flags

    def all_flags(self) -> Tuple[CompiledFlag, ...]:
        """Every flag in evaluation order, compiling what was not compiled yet."""
        flags = self.all
        if flags is None:
            flags = self.all = self._compiled(self.catalog.evaluation_order())
        return flags

    def compiled(self, key: str) -> Optional[CompiledFlag]:
        """The compiled flag for ``key``; None when this version has no such flag or it failed to compile."""
        digest = self.catalog.digest(key)
        if digest is None:
            return None
        flag = self.cache.get(key, digest)
        if flag is not None:
            return flag
        if key in self._failed:
            return None
        try:
            flag = compile_flag(self.catalog.config(key))
        except (FlagConfigError, ValueError, KeyError) as error:
            message = "flag %r cannot be compiled and is left out: %s" % (key, error)
            self._failed[key] = message
            self.problems.append(message)
            if self.on_problem is not None:
                self.on_problem(message)
            return None
        self.cache.put(key, digest, flag)
        return flag

    def _compiled(self, keys: Iterable[str]) -> Tuple[CompiledFlag, ...]:
        with collector_paused():
            flags = [self.compiled(key) for key in keys]
        return tuple(flag for flag in flags if flag is not None)

    # -- whole-version views, for tools and tests (they compile every flag)

    @property
    def flags(self) -> Dict[str, CompiledFlag]:
        """Every compiled flag by key, in storage order."""
        compiled = {key: self.compiled(key) for key in self.catalog.keys()}
        return {key: flag for key, flag in compiled.items() if flag is not None}

    @property
    def raw(self) -> List[Any]:
        """Every flag config, in storage order, as decoded JSON."""
        return [self.catalog.config(key) for key in self.catalog.keys()]


def compile_flags(raw: Any, previous_order: Iterable[str] = ()) -> FlagSet:
    """Validate, plan and compile a whole flag-config list (see :func:`~.catalog.plan_flags`), for
    a flag set used on its own: no record is kept, so its ``raw`` configs cannot be read back.

    :raises FlagConfigError: naming the first flag and field that is not of the expected type.
    """
    cache = CompiledFlagCache()
    return FlagSet(plan_flags(raw, previous_order, cache, records=False), cache)
