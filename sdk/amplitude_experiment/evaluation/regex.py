"""Regex conditions in linear time: RE2 wherever it answers exactly as Python's ``re.search`` does.

Amplitude's SDK tests a regex condition with ``re.search(pattern, text)``: no flags, the pattern and
the property as ``str``. Python's backtracking engine can take quadratic or exponential time on
some patterns (``\\w+@\\w+`` against a 40,000 character value: seconds). RE2 (Google's engine, the
``google-re2`` bindings) matches in time linear in the text, but its syntax and semantics are not
Python's. So a pattern is not handed to RE2 as written: Python's own parser reads it, and an RE2
pattern is written from the parse tree, construct by construct, only where the meaning is the same:

* literals and ranges are written as code points (``\\x{...}``), so no escape means anything else;
* ``\\d``, ``\\w``, ``\\s`` and their negations become explicit code point classes computed from the
  running Python's own ``re`` (Unicode or ASCII as the pattern's flags say), not RE2's ASCII ones;
* ``.`` is "anything but ``\\n``" (or anything, under ``(?s)``), ``^``/``\\A`` the start, ``\\Z`` the
  end, ``(?m)`` anchors are line anchors, as in Python;
* ``$`` (without ``(?m)``) also matches before a final newline: at the end of the pattern it is
  written ``\\n?\\z``; elsewhere it is ``\\z`` and a text ending in ``\\n`` is searched with ``re``;
* ``\\b``/``\\B`` are RE2's ASCII ones, so a non-ASCII text (and, for ``\\B``, an empty one) is
  searched with ``re`` (``\\b`` under ``(?a)`` needs no such care);
* a text RE2 cannot take (a lone surrogate is not UTF-8) is searched with ``re``.

* under ``(?i)``, a letter becomes the class of exactly the characters Python's compiler lets it
  match (its table of lowercase mappings and extra cases, computed once per process).

Anything else (``(?i)`` character sets that hold letters, lookarounds, backreferences,
conditionals, atomic groups and possessive repeats, repeat counts over 1000, a pattern RE2
rejects) stays on ``re``, with the reference's results and speed. ``re`` also decides what is a
valid pattern.
"""

import array
import functools
import re
from typing import Callable, List, Optional, Tuple

from .._fork import FORKS

import _sre as _sre_engine

try:  # Python 3.11+; the same parser and compiler were public before
    from re import _compiler as _sre_compile
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.9 and 3.10
    import sre_compile as _sre_compile  # type: ignore[no-redef]
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

# Characters that match each other under (?i) beyond their simple lowercase (i and dotless i...):
# the table Python's own compiler uses, wherever this Python keeps it.
_CASE_FIXES = getattr(_sre_compile, "_EXTRA_CASES", None) or getattr(_sre_compile, "_ignorecase_fixes", None)

try:
    import re2
except ImportError:  # pragma: no cover - a declared dependency; without it every pattern stays on re
    re2 = None

__all__ = ["RegexSearch", "compile_search"]

RE2 = "re2"
PYTHON_RE = "re"

_MAX_RE2_REPEAT = 1000  # RE2 rejects larger counts
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)


class RegexSearch:
    """One compiled regex filter value: ``search(text)`` says whether ``re.search`` would match.

    ``engine`` is ``"re2"`` when RE2 answers (linear time, with ``re`` for the few texts named in the
    module docstring) or ``"re"`` when the pattern stays on Python's engine; ``reason`` says why.
    """

    __slots__ = ("pattern", "engine", "reason", "search", "program")

    def __init__(self, pattern: str, engine: str, reason: str, search: Callable[[str], bool],
                 program: "Optional[_ProcessLocalRE2]" = None):
        self.pattern = pattern
        self.engine = engine
        self.reason = reason
        self.search = search
        self.program = program

    def __repr__(self) -> str:
        return "RegexSearch(%r, engine=%r, reason=%r)" % (self.pattern, self.engine, self.reason)


@functools.lru_cache(maxsize=1024)
def compile_search(pattern: str, ascii_text: bool = False) -> RegexSearch:
    """Compile a regex filter value as the reference would use it.

    :param ascii_text: the search will only ever be given ASCII text, so the RE2 pattern needs to
        be exact on ASCII characters only (classes and case-folded letters are written for them).

    :raises re.error, TypeError, OverflowError, RecursionError: when Python's ``re`` cannot compile
        it (the reference raises the same when the condition is reached).
    """
    python_search = re.compile(pattern).search
    try:
        translated = _translate(pattern, ascii_text)
    except _Untranslatable as why:
        return _on_python(pattern, python_search, str(why))
    except Exception as error:  # a parse tree this code cannot walk: never worse than re itself
        return _on_python(pattern, python_search, "not translated: %r" % error)
    if re2 is None:
        return _on_python(pattern, python_search, "google-re2 is not installed")
    re2_pattern, needs_ascii, needs_no_final_newline, needs_nonempty = translated
    try:
        compiled = _ProcessLocalRE2(re2_pattern)
    except Exception as error:  # re2.error: too large, or a construct RE2 refuses
        return _on_python(pattern, python_search, "RE2 rejects it: %s" % error)
    search = _re2_search(compiled, python_search, needs_ascii, needs_no_final_newline, needs_nonempty)
    return RegexSearch(pattern, RE2, "", search, compiled)


def deferred_search(pattern: str) -> Callable[[str], bool]:
    """``compile_search(pattern).search``, translated and compiled for RE2 at its first search.

    A flag is compiled to be validated (flagd, every poll) far more often than its regexes are
    searched. And most texts are ASCII: for them a translation that is exact on ASCII text
    (``compile_search(pattern, ascii_text=True)``) needs none of this Python's Unicode class
    tables, whose scan of every code point (0.1 to 0.3 s, once per process) is paid only when a
    non-ASCII text first meets a pattern that needs them.

    :raises re.error, TypeError, OverflowError, RecursionError: now, when ``re`` cannot compile it.
    """
    re.compile(pattern)
    resolved: List[Optional[Callable[[str], bool]]] = [None, None]  # [for ASCII text, for any text]

    def search(text: str) -> bool:
        variant = 0 if text.isascii() else 1
        found = resolved[variant]
        if found is None:
            found = resolved[variant] = compile_search(pattern, ascii_text=variant == 0).search
        return found(text)

    return search


class _ProcessLocalRE2:
    """An RE2 program this process compiled itself; ``matches(data)`` on UTF-8 bytes.

    RE2 matches without the GIL and guards its lazily built automata with mutexes. A fork while
    another thread is inside a match copies a held mutex into the child, where nobody will ever
    release it: the child's first match on that program would hang. So a fork child (as
    ``_fork.FORKS`` counts them) never touches its parent's programs; it compiles its own on
    first use.
    """

    __slots__ = ("pattern", "generation", "compiled", "raw_match")

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.compile()

    def compile(self) -> None:
        global _purged_generation
        generation = FORKS.generation
        if _purged_generation != generation:
            re2.purge()  # the binding's cache of compiled programs holds the parent's
            _purged_generation = generation
        self.compiled = re2.compile(self.pattern, _re2_options())
        # The binding's Match(anchor, bytes, start, end) answers without building a match object
        # or mapping byte offsets back to characters: a fifth of the cost of the public search()
        # on short text. A binding without it gets the public API.
        self.raw_match = getattr(getattr(self.compiled, "_regexp", None), "Match", None) if _UNANCHORED else None
        self.generation = generation

    def matches(self, data: bytes) -> bool:
        if self.generation != FORKS.generation:
            self.compile()
        raw_match = self.raw_match
        if raw_match is None:
            return self.compiled.search(data) is not None
        return raw_match(_UNANCHORED, data, 0, len(data))[0][0] != -1


def _on_python(pattern: str, python_search: Callable, reason: str) -> RegexSearch:
    return RegexSearch(pattern, PYTHON_RE, reason, lambda text: python_search(text) is not None)


@functools.lru_cache(maxsize=None)
def _re2_options() -> "re2.Options":
    options = re2.Options()
    options.never_capture = True  # only "is there a match" is asked
    options.log_errors = False  # a rejected pattern falls back to re; RE2 need not print it
    return options


_purged_generation = 0
_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)


def _re2_search(program: _ProcessLocalRE2, python_search: Callable, needs_ascii: bool,
                needs_no_final_newline: bool, needs_nonempty: bool) -> Callable[[str], bool]:
    # The hot path of every regex condition: the matching step is inlined, not a method call.
    guarded = needs_ascii or needs_no_final_newline or needs_nonempty
    forks = FORKS
    unanchored = _UNANCHORED

    def search(text: str) -> bool:
        if guarded and ((needs_ascii and not text.isascii()) or (needs_no_final_newline and text.endswith("\n"))
                        or (needs_nonempty and not text)):
            return python_search(text) is not None
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: only re can read it
            return python_search(text) is not None
        if program.generation != forks.generation:
            program.compile()
        raw_match = program.raw_match
        if raw_match is None:
            return program.compiled.search(data) is not None
        return raw_match(unanchored, data, 0, len(data))[0][0] != -1

    return search


# --- translation ------------------------------------------------------------------------------


class _Untranslatable(Exception):
    """The pattern uses something RE2 would read differently; the message says what."""


class _Translation:
    __slots__ = ("ascii_text", "needs_ascii", "needs_no_final_newline", "needs_nonempty")

    def __init__(self, ascii_text: bool = False) -> None:
        self.ascii_text = ascii_text  # only ASCII text will be searched: exact on ASCII is enough
        self.needs_ascii = False
        self.needs_no_final_newline = False
        self.needs_nonempty = False


def _translate(pattern: str, ascii_text: bool = False) -> Tuple[str, bool, bool, bool]:
    """The RE2 pattern for ``pattern`` and the texts it needs ``re`` for (see the module docstring).

    :raises _Untranslatable: naming the construct that stays on ``re``.
    """
    parsed = _sre_parse.parse(pattern, 0)
    state = getattr(parsed, "state", None) or getattr(parsed, "pattern", None)  # 3.11+ / 3.9-3.10
    flags = state.flags
    _check_flags(flags)
    translation = _Translation(ascii_text)
    text = _sequence(parsed, flags, True, translation)
    return text, translation.needs_ascii, translation.needs_no_final_newline, translation.needs_nonempty


def _check_flags(flags: int) -> None:
    if flags & _sre.SRE_FLAG_IGNORECASE and (_CASE_FIXES is None or not hasattr(_sre_compile, "_optimize_charset")):
        raise _Untranslatable("case-insensitive matching ((?i)) on a Python whose compiler this code does not know")
    if flags & (_sre.SRE_FLAG_LOCALE | getattr(_sre, "SRE_FLAG_DEBUG", 0) | getattr(_sre, "SRE_FLAG_TEMPLATE", 0)):
        raise _Untranslatable("flags other than (?a), (?m), (?s), (?u), (?x)")


def _sequence(items, flags: int, at_tail: bool, translation: _Translation) -> str:
    """``items`` (a parsed sequence) in RE2 syntax; ``at_tail``: nothing follows it in the pattern."""
    items = list(items)
    parts = []
    for position, (op, argument) in enumerate(items):
        last = at_tail and position == len(items) - 1
        parts.append(_item(op, argument, flags, last, translation))
    return "".join(parts)


def _item(op, argument, flags: int, at_tail: bool, translation: _Translation) -> str:
    if op is _sre.LITERAL or op is _sre.NOT_LITERAL:
        negate = op is _sre.NOT_LITERAL
        if flags & _sre.SRE_FLAG_IGNORECASE:
            return _char_class(_case_insensitive_literal(argument, flags, translation.ascii_text), negate)
        if negate or _SURROGATES[0] <= argument <= _SURROGATES[1]:
            return _char_class([(argument, argument)], negate)  # a surrogate: matches nothing RE2 sees
        return "\\x{%x}" % argument
    if op is _sre.ANY:
        return "(?s:.)" if flags & _sre.SRE_FLAG_DOTALL else "[^\\n]"
    if op is _sre.IN:
        if flags & _sre.SRE_FLAG_IGNORECASE and _set_has_cased_members(argument, flags):
            raise _Untranslatable("a character set with cased letters under (?i)")
        return _set(argument, flags, translation.ascii_text)
    if op is _sre.BRANCH:
        _, branches = argument
        return "(?:%s)" % "|".join(_sequence(branch, flags, at_tail, translation) for branch in branches)
    if op is _sre.SUBPATTERN:
        _, add_flags, del_flags, body = argument
        inner_flags = (flags | add_flags) & ~del_flags
        _check_flags(inner_flags)
        return "(?:%s)" % _sequence(body, inner_flags, at_tail, translation)
    if op is _sre.MAX_REPEAT or op is _sre.MIN_REPEAT:
        low, high, body = argument
        if low > _MAX_RE2_REPEAT or (high != _sre.MAXREPEAT and high > _MAX_RE2_REPEAT):
            raise _Untranslatable("a repeat count over %d" % _MAX_RE2_REPEAT)
        bounds = "{%d,}" % low if high == _sre.MAXREPEAT else "{%d,%d}" % (low, high)
        lazy = "?" if op is _sre.MIN_REPEAT else ""
        return "(?:%s)%s%s" % (_sequence(body, flags, False, translation), bounds, lazy)
    if op is _sre.AT:
        return _anchor(argument, flags, at_tail, translation)
    raise _Untranslatable("%s is Python-only syntax" % _name(op))


def _name(code) -> str:
    return str(getattr(code, "name", code)).lower()


def _anchor(where, flags: int, at_tail: bool, translation: _Translation) -> str:
    multiline = flags & _sre.SRE_FLAG_MULTILINE
    if where is _sre.AT_BEGINNING:
        return "(?m:^)" if multiline else "\\A"
    if where is _sre.AT_BEGINNING_STRING:
        return "\\A"
    if where is _sre.AT_END:
        if multiline:
            return "(?m:$)"
        if at_tail:
            return "(?:\\n?\\z)"  # Python's "$": the end, or before a newline that ends the text
        translation.needs_no_final_newline = True
        return "\\z"
    if where is _sre.AT_END_STRING:
        return "\\z"
    if where is _sre.AT_BOUNDARY or where is _sre.AT_NON_BOUNDARY:
        if where is _sre.AT_NON_BOUNDARY:
            # RE2 tests \B between the bytes of one UTF-8 character too (both "non-word": a
            # match inside "٣"), so only ASCII text is safe, whatever the flags; and \B on "" has
            # changed between Python versions.
            translation.needs_ascii = translation.needs_nonempty = True
            return "\\B"
        if not flags & _sre.SRE_FLAG_ASCII:
            translation.needs_ascii = True  # RE2's word characters are ASCII; they agree on ASCII text
        return "\\b"
    raise _Untranslatable("the anchor %s" % _name(where))


# --- (?i): exactly what Python's compiler does, for literals and for sets it leaves case-blind ---
# A cased literal c under (?i) matches every x whose lowercase (Python's simple mapping, or ASCII's
# under (?a)) is c's lowercase or, under Unicode, one of that lowercase's extra cases. A set
# matches case-blind when Python's own charset optimiser finds no cased member in it; sets with
# cased members (whose ranges Python tests by lower and upper case) stay on re.


def _ignorecase_functions(flags: int):
    if flags & _sre.SRE_FLAG_ASCII:
        return _sre_engine.ascii_iscased, _sre_engine.ascii_tolower, None
    return _sre_engine.unicode_iscased, _sre_engine.unicode_tolower, _CASE_FIXES


def _case_insensitive_literal(code: int, flags: int, ascii_text: bool = False) -> List[Tuple[int, int]]:
    iscased, tolower, fixes = _ignorecase_functions(flags)
    if not iscased(code):
        return [(code, code)]
    lowered = tolower(code)
    keys = (lowered,) + tuple((fixes or {}).get(lowered, ()))
    if ascii_text:  # the same members, among the 128 characters the text can hold
        return [(member, member) for member in range(128)
                if (member in keys and tolower(member) == member) or (tolower(member) != member
                                                                      and tolower(member) in keys)]
    preimages = _lowercase_preimages(bool(flags & _sre.SRE_FLAG_ASCII))
    members = set()
    for key in keys:
        if tolower(key) == key:
            members.add(key)
        members.update(preimages.get(key, ()))
    return [(member, member) for member in members]


@functools.lru_cache(maxsize=None)
def _lowercase_preimages(ascii_only: bool) -> dict:
    """{lowercase: [every other code point whose lowercase it is]}: one pass, about 0.15 s per process."""
    tolower = _sre_engine.ascii_tolower if ascii_only else _sre_engine.unicode_tolower
    preimages: dict = {}
    code_points = range(_LAST_CODE_POINT + 1)
    for code, lowered in zip(code_points, map(tolower, code_points)):
        if lowered != code:
            preimages.setdefault(lowered, []).append(code)
    return preimages


def _set_has_cased_members(items, flags: int) -> bool:
    iscased, tolower, fixes = _ignorecase_functions(flags)
    _, has_cased = _sre_compile._optimize_charset(list(items), iscased, tolower, fixes)
    return bool(has_cased)


def _set(items, flags: int, ascii_text: bool = False) -> str:
    negate = False
    ranges: List[Tuple[int, int]] = []
    for op, argument in items:
        if op is _sre.NEGATE:
            negate = True
        elif op is _sre.LITERAL:
            ranges.append((argument, argument))
        elif op is _sre.RANGE:
            ranges.append(argument)
        elif op is _sre.CATEGORY:
            ranges.extend(_category_ranges(argument, bool(flags & _sre.SRE_FLAG_ASCII), ascii_text))
        else:
            raise _Untranslatable("%s in a character set" % _name(op))
    return _char_class(ranges, negate)


def _char_class(ranges: List[Tuple[int, int]], negate: bool) -> str:
    """An RE2 class of exactly these code points (surrogates left out: RE2 never sees one)."""
    merged = _without_surrogates(_merged(ranges))
    if not merged:
        return "(?s:.)" if negate else "[^\\x00-\\x{10ffff}]"  # everything / nothing
    body = "".join(("\\x{%x}" % low) if low == high else ("\\x{%x}-\\x{%x}" % (low, high)) for low, high in merged)
    return "[%s%s]" % ("^" if negate else "", body)


def _merged(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    merged: List[Tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _without_surrogates(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    first, last = _SURROGATES
    kept = []
    for low, high in ranges:
        if high < first or low > last:
            kept.append((low, high))
            continue
        if low < first:
            kept.append((low, first - 1))
        if high > last:
            kept.append((last + 1, high))
    return kept


_CATEGORY_PATTERNS = {
    _sre.CATEGORY_DIGIT: ("\\d", False), _sre.CATEGORY_NOT_DIGIT: ("\\d", True),
    _sre.CATEGORY_SPACE: ("\\s", False), _sre.CATEGORY_NOT_SPACE: ("\\s", True),
    _sre.CATEGORY_WORD: ("\\w", False), _sre.CATEGORY_NOT_WORD: ("\\w", True),
}


def _category_ranges(category, ascii_only: bool, ascii_text: bool = False) -> List[Tuple[int, int]]:
    spec = _CATEGORY_PATTERNS.get(category)
    if spec is None:
        raise _Untranslatable("the class %s" % _name(category))
    escape, complement = spec
    ranges = _class_ranges(escape, ascii_only, 127 if ascii_text else _LAST_CODE_POINT)
    return _complement(ranges) if complement else list(ranges)


@functools.lru_cache(maxsize=None)
def _class_ranges(escape: str, ascii_only: bool, last: int = _LAST_CODE_POINT) -> Tuple[Tuple[int, int], ...]:
    """Code point ranges up to ``last`` that Python's own ``re`` matches with ``escape``: exact for
    this Python. Up to the last code point, a scan of all of them (about 0.1 s, once per process
    and class); up to 127, nothing to speak of.
    """
    finder = re.compile(escape + "+", re.ASCII if ascii_only else 0)
    text = _every_code_point() if last == _LAST_CODE_POINT else "".join(map(chr, range(last + 1)))
    return tuple((match.start(), match.end() - 1) for match in finder.finditer(text))


def _every_code_point() -> str:
    """Every code point in order, surrogates included: the text the class tables are read from.

    Not kept: it is 4.4 MB, and each class table it serves is computed once per process anyway."""
    return array.array("I", range(_LAST_CODE_POINT + 1)).tobytes().decode("utf-32-le", "surrogatepass")


def _complement(ranges) -> List[Tuple[int, int]]:
    complement = []
    next_low = 0
    for low, high in ranges:
        if low > next_low:
            complement.append((next_low, low - 1))
        next_low = high + 1
    if next_low <= _LAST_CODE_POINT:
        complement.append((next_low, _LAST_CODE_POINT))
    return complement
