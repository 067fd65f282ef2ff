"""Regex conditions: RE2 (linear time) wherever it answers as ``re.search`` does, ``re`` elsewhere.

The reference tests a regex condition with ``re.search(pattern, text)``: these tests take Python's
``re`` of this interpreter as the oracle (tests/differential compares with the reference itself).
Speed is not asserted here: the tests check which engine answers; benchmarks/bench_regex.py
measures the time.
"""

import os
import random
import re
import sys
import threading
import time

import pytest

import flaggen
from _flagkit import PROPERTY, condition, e_flag

from amplitude_experiment.evaluation import compile_flags, evaluate
from amplitude_experiment.evaluation import regex as regex_module
from amplitude_experiment.evaluation.regex import compile_search

LONG_VALUE = "a" * 40_000  # \w+@\w+ on it: quadratic backtracking in re, seconds per evaluation


class _PythonReForbidden:
    """Stands in for ``re`` inside the regex module: compiling works, searching with it fails the test."""

    error = re.error
    ASCII = re.ASCII

    def __init__(self):
        self.searches = 0

    def compile(self, pattern, flags=0):
        compiled = re.compile(pattern, flags)
        forbidden = self

        class Guarded:
            def search(self, text):
                forbidden.searches += 1
                raise AssertionError("Python's re searched %r" % pattern)

            def finditer(self, text):
                return compiled.finditer(text)

        return Guarded()


def test_the_long_value_is_searched_by_re2_never_by_re(monkeypatch):
    compile_search.cache_clear()
    forbidden = _PythonReForbidden()
    monkeypatch.setattr(regex_module, "re", forbidden)
    try:
        flags = compile_flags([e_flag(condition(PROPERTY, "regex match", ["\\w+@\\w+"]))])
        for value, expected in ((LONG_VALUE, "off"), (LONG_VALUE + "@b", "on"), ("ü" * 40_000 + "@日本", "on")):
            results, failures = evaluate(flags, {"user": {"user_properties": {"p": value}}})
            assert failures == []
            assert results["F"]["key"] == expected
        assert forbidden.searches == 0
    finally:
        compile_search.cache_clear()  # nothing compiled under the stand-in stays cached


def test_email_pattern_compiles_on_re2():
    search = compile_search("\\w+@\\w+")
    assert (search.engine, search.reason) == ("re2", "")
    assert search.search("x" * 40_000 + "@y") and not search.search(LONG_VALUE)


_NEEDS_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="atomic groups and possessive repeats need Python 3.11")


@pytest.mark.parametrize("pattern, why", [
    ("(?i)[a-z]", "cased letters under (?i)"), ("(?i:[a-k])b", "cased letters under (?i)"), ("(?=a)a", "assert"),
    ("(?<!x)y", "assert_not"), ("(a)\\1", "groupref"), ("(a)?(?(1)b|c)", "groupref_exists"),
    pytest.param("(?>a+)b", "atomic_group", marks=_NEEDS_311), pytest.param("a*+b", "possessive_repeat", marks=_NEEDS_311),
    ("a{1001}", "repeat count"),
])
def test_python_only_patterns_stay_on_re(pattern, why):
    search = compile_search(pattern)
    assert search.engine == "re" and why in search.reason


def test_invalid_patterns_raise_as_re_does():
    for pattern in ("(", "a{2,1}", "\\z", "[b-a]"):
        with pytest.raises(re.error):
            compile_search(pattern)


@pytest.mark.parametrize("pattern, text", [
    ("\\w+$", "ab\n"),  # $ before a final newline, at the end of the pattern
    ("a$\\n", "a\n"),  # ... and not at the end: the text goes to re
    ("a$b", "a\nb"),
    ("\\bfoo\\b", "ü foo ü"),  # non-ASCII text with \b goes to re
    ("\\bfoo", "üfoo"),
    ("(?a)\\B", "a٣b"),  # RE2 would see a \B between the two bytes of ٣
    ("\\B", ""),
    ("\\w", "\ud800"),  # a lone surrogate is not UTF-8: re reads it
    ("[\\ud800-\\udfff]", "x\udfffy"),
    ("\\d", "٣"), ("\\d", "²"), ("\\w", "²"), ("\\w", "\u0301"), ("\\s", "\x1c"), ("\\s", "\u00a0"),
    ("(?a)\\d", "٣"), ("(?a)\\w", "é"), ("(?a)\\s", "\x1c"), (".", "\n"), ("(?s).", "\n"), ("[^a]", "\n"),
    ("(?m)^$", "a\n"), ("(?m)a$", "a\nb"), ("^$", "\n"), ("\\Z", "a\n"), ("x\\Z", "x\n"),
])
def test_edge_cases_answer_as_re(pattern, text):
    assert compile_search(pattern).search(text) is (re.search(pattern, text) is not None)


def test_every_generator_pattern_and_value_answers_as_re():
    values = list(flaggen.REGEX_VALUES)
    values += [a + b for a in values[:50] for b in values[:50]]
    wrong = []
    engines = set()
    for pattern in flaggen.REGEX_PATTERNS:
        search, reference = compile_search(pattern), re.compile(pattern)
        engines.add(search.engine)
        wrong.extend((pattern, value) for value in values if search.search(value) is not (reference.search(value) is not None))
    assert wrong == []
    assert engines == {"re", "re2"}


_ATOMS = ["a", "b", "\\w", "\\W", "\\d", "\\D", "\\s", "\\S", ".", "[ab]", "[^a]", "[\\w-]", "[^\\s\\d]", "ü", "\\n",
          "^", "$", "\\A", "\\Z", "\\b", "\\B", "(?:a|b)", "x", "[a-c]", "\\.", "_", "٣", "ß", " "]
_QUANTIFIERS = ["", "", "", "*", "+", "?", "{2}", "{1,3}", "*?", "+?"]
_FLAGS = ["", "", "", "(?m)", "(?s)", "(?a)", "(?ms)", "(?x)", "(?i)", "(?ai)", "(?is)"]
_TEXT = list("ab_x ü٣ß\n\t.-ABÜ") + ["\u00a0", "\x1c", "１", "²", "ǅ", "😀", "K", "\u2028", "\u0301", "\u212a",
                                      "ſ", "ẞ", "İ", "ı", "\u1e9b"]


def _random_piece(rng, depth):
    if depth < 2 and rng.random() < 0.2:
        inner = "".join(_random_piece(rng, depth + 1) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.3:
            inner += "|" + "".join(_random_piece(rng, depth + 1) for _ in range(rng.randint(0, 2)))
        return "(" + inner + ")" + rng.choice(_QUANTIFIERS)
    atom = rng.choice(_ATOMS)
    return atom if atom in ("^", "$", "\\A", "\\Z", "\\b", "\\B") else atom + rng.choice(_QUANTIFIERS)


_CASE_SAMPLE = "abkszAKSZ09_ßẞſKİıiIµΜμΩωΩǅǄǆσςΣθϑ\u1e9b\u1e61éÉ😀𐐀𐐨"


@pytest.mark.parametrize("flags", ["(?i)", "(?ai)"])
def test_case_insensitive_letters_match_what_python_matches(flags):
    """Each letter's class under (?i) holds exactly the characters Python's re matches it with,
    checked against every code point (surrogates aside: RE2 never sees one)."""
    every = "".join(chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF)
    wrong = []
    for letter in _CASE_SAMPLE:
        pattern = flags + re.escape(letter)
        search = compile_search(pattern)
        assert search.engine == "re2", search
        python = {match.group() for match in re.finditer(pattern, every)}
        flag_bits = re.IGNORECASE | (re.ASCII if "a" in flags else re.UNICODE)
        members = {chr(low) for low, _ in regex_module._case_insensitive_literal(ord(letter), flag_bits)}
        if python != members:
            wrong.append((letter, sorted(python ^ members)))
        for other in python | {"a", "K", "\u212a", "ß"}:
            if search.search(other) is not (other in python):
                wrong.append((letter, other))
    assert wrong == []


_ASCII_TEXT = [c for c in _TEXT if c.isascii()] + list("AZaz09_!~\x7f\x00\x1f")


@pytest.mark.parametrize("seed", [1, 2, 4, 5])
def test_the_ascii_text_translation_answers_as_re_on_ascii_text(seed):
    """What deferred_search uses until a non-ASCII text arrives: exact on ASCII text, built without
    the Unicode tables (and so without scanning every code point)."""
    wrong = []
    for pattern, reference, texts in _random_cases(seed, _ASCII_TEXT):
        search = compile_search(pattern, ascii_text=True)
        wrong.extend((pattern, text) for text in texts if search.search(text) is not (reference.search(text) is not None))
    for letter in _CASE_SAMPLE:  # non-ASCII pattern letters that match ASCII text under (?i): K, ſ
        for flags in ("(?i)", "(?ai)"):
            pattern = flags + re.escape(letter)
            search = compile_search(pattern, ascii_text=True)
            for code in range(128):
                if search.search(chr(code)) is not (re.search(pattern, chr(code)) is not None):
                    wrong.append((pattern, chr(code)))
    assert wrong == []


def test_a_deferred_search_needs_no_unicode_table_until_non_ascii_text_arrives(monkeypatch):
    compile_search.cache_clear()
    regex_module._class_ranges.cache_clear()
    regex_module._lowercase_preimages.cache_clear()
    scans = []
    real_scan = regex_module._every_code_point
    monkeypatch.setattr(regex_module, "_every_code_point", lambda: scans.append(1) or real_scan())
    search = regex_module.deferred_search("(?i)\\w+@k\\d")
    assert search("Bob@K7") and not search("bob@")
    assert scans == [] and regex_module._lowercase_preimages.cache_info().currsize == 0
    assert search("bøb@\u212a٣")  # Kelvin sign and an Arabic-Indic digit: the full tables now
    assert len(scans) == 2 and regex_module._lowercase_preimages.cache_info().currsize == 1


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_random_patterns_answer_as_re(seed):
    """Random patterns from the constructs RE2 takes, on random short texts (bounded: 700 x 20)."""
    wrong = []
    on_re2 = 0
    for pattern, reference, texts in _random_cases(seed, _TEXT):
        search = compile_search(pattern)
        on_re2 += search.engine == "re2"
        wrong.extend((pattern, text) for text in texts if search.search(text) is not (reference.search(text) is not None))
    assert wrong == []
    assert on_re2 > 600


def _random_cases(seed, alphabet):
    """700 random patterns that ``re`` compiles (fewer: the others are skipped), each with its
    compiled ``re`` and 20 random texts of up to 8 characters from ``alphabet``."""
    rng = random.Random(seed)
    for _ in range(700):
        pattern = rng.choice(_FLAGS) + "".join(_random_piece(rng, 0) for _ in range(rng.randint(1, 4)))
        try:
            reference = re.compile(pattern)
        except re.error:
            continue
        yield pattern, reference, ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(20)]


def test_regex_conditions_still_negate_per_element():
    flags = compile_flags([e_flag(condition(PROPERTY, "regex does not match", ["^a", "^b"]))])
    for value, expected in ((["a", "c"], "on"), (["a", "b"], "off"), ("cat", "on"), ("bat", "off")):
        results, _ = evaluate(flags, {"user": {"user_properties": {"p": value}}})
        assert results["F"]["key"] == expected, value


class _Generation:
    generation = 0


def test_a_fork_child_compiles_its_own_re2_programs(monkeypatch):
    """RE2 matches without the GIL behind mutexes: a child must not use a program its parent's
    threads may have been inside at the fork. A new fork generation recompiles on first use."""
    forks = _Generation()
    monkeypatch.setattr(regex_module, "FORKS", forks)
    compiled = []
    real_compile = regex_module.re2.compile
    monkeypatch.setattr(regex_module.re2, "compile", lambda *args: compiled.append(args[0]) or real_compile(*args))
    program = regex_module._ProcessLocalRE2("\\x{61}+@")
    assert len(compiled) == 1
    parent_program = program.compiled
    assert program.matches(b"aa@") and not program.matches(b"aa")
    assert len(compiled) == 1
    forks.generation += 1  # what _fork.notice_fork does in a child
    assert program.matches(b"aa@") and not program.matches(b"bb")
    assert len(compiled) == 2 and program.compiled is not parent_program


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_another_thread_matches():
    """Children forked while a thread runs long RE2 matches search with programs of their own."""
    search = compile_search("\\w+@\\w+x")
    assert search.engine == "re2"
    long_text = "a" * 2_000_000
    stop = threading.Event()

    def hammer():
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            search.search(long_text)

    worker = threading.Thread(target=hammer, daemon=True)
    worker.start()
    try:
        children = []
        for _ in range(20):
            parent_program = search.program.compiled
            pid = os.fork()
            if pid == 0:  # the child: no pytest, no threads; exit code says what it saw
                ok = search.search("a@bx") and not search.search("a@b") and search.program.compiled is not parent_program
                os._exit(0 if ok else 1)
            children.append(pid)
        deadline = time.monotonic() + 30
        statuses = {}
        while len(statuses) < len(children) and time.monotonic() < deadline:
            for pid in children:
                if pid not in statuses:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        statuses[pid] = os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        hung = [pid for pid in children if pid not in statuses]
        for pid in hung:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert hung == [] and set(statuses.values()) == {0}
    finally:
        stop.set()
        worker.join(timeout=30)
