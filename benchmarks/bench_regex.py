"""Regex conditions: ``\\w+@\\w+`` against long property values, ours (RE2) and the reference (``re``).

The reference tests a regex condition with ``re.search``, which backtracks quadratically on this
pattern when the value has no ``@``: the time grows with the square of the length. Ours runs RE2
(linear) for it. Printed: one ``evaluate`` of a one-condition flag, per value length, in
milliseconds, plus a short typical value in microseconds (the per-call cost RE2 adds or saves).

Run: ``python benchmarks/bench_regex.py`` (add ``--full`` to time the reference at 40,000
characters too: about 16 s on a loaded 2-core machine).
"""

import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sdk"))

import reference_env  # noqa: E402
from _timing import measure  # noqa: E402

from amplitude_experiment.evaluation import compile_flags, evaluate  # noqa: E402
from amplitude_experiment.evaluation.regex import compile_search  # noqa: E402

PATTERN = "\\w+@\\w+"
FLAG = {"key": "F", "variants": {"on": {"key": "on"}, "off": {"key": "off"}},
        "segments": [{"conditions": [[{"selector": ["context", "user", "user_properties", "p"], "op": "regex match",
                                       "values": [PATTERN]}]], "variant": "on"}, {"variant": "off"}]}
SHORT = "someone@example.com"

REFERENCE_SCRIPT = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from _timing import measure
from amplitude_experiment.evaluation.engine import EvaluationEngine
from amplitude_experiment.evaluation.types import EvaluationFlag
request = json.loads(sys.stdin.read())
engine = EvaluationEngine()
flag = EvaluationFlag.from_dict(request["flag"])
def once(value):
    return engine.evaluate({"user": {"user_properties": {"p": value}}}, [flag])["F"].key
out = {}
for length in request["lengths"]:
    value = "a" * length
    started = time.perf_counter()
    once(value)
    out[str(length)] = (time.perf_counter() - started) * 1000
out["short_us"] = measure(lambda i: once(request["short"]))
print(json.dumps(out))
'''


def ours(lengths):
    flags = compile_flags([FLAG])

    def once(value):
        return evaluate(flags, {"user": {"user_properties": {"p": value}}})[0]["F"]["key"]

    out = {}
    for length in lengths:
        value = "a" * length
        out[str(length)] = measure(lambda i: once(value), repeats=3, repeat_seconds=0.1) / 1000
    out["short_us"] = measure(lambda i: once(SHORT))
    python_re = re.compile(PATTERN)
    out["short_python_re_us"] = measure(lambda i: python_re.search(SHORT))
    out["short_re2_us"] = measure(lambda i: compile_search(PATTERN).search(SHORT))
    return out


def main():
    full = "--full" in sys.argv
    lengths = [1_000, 4_000, 10_000, 40_000]
    reference_lengths = lengths if full else lengths[:3]
    print("engine for %s: %s" % (PATTERN, compile_search(PATTERN).engine))
    mine = ours(lengths)
    theirs = {}
    if reference_env.reference_python() is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
            script.write(REFERENCE_SCRIPT)
        try:
            started = time.monotonic()
            theirs = json.loads(reference_env.run_reference(
                script.name, json.dumps({"flag": FLAG, "lengths": reference_lengths, "short": SHORT}).encode(),
                timeout=300, args=(HERE,)))
            print("(reference run took %.1f s)" % (time.monotonic() - started))
        finally:
            os.unlink(script.name)
    else:
        print("reference unavailable: %s" % reference_env.reference_unavailable_reason())
    print("%-28s %14s %14s %10s" % ("value", "ours", "reference", "ratio"))
    for length in lengths:
        key = str(length)
        reference = theirs.get(key)
        print("%-28s %11.3f ms %11s ms %9s" % (
            "'a' * %d (no @)" % length, mine[key], "%.1f" % reference if reference else "-",
            "%.0fx" % (reference / mine[key]) if reference else "-"))
    reference = theirs.get("short_us")
    print("%-28s %11.2f us %11s us %9s" % (
        repr(SHORT), mine["short_us"], "%.2f" % reference if reference else "-",
        "%.2fx" % (reference / mine["short_us"]) if reference else "-"))
    print("search alone on %r: RE2 %.2f us, Python re %.2f us" % (
        SHORT, mine["short_re2_us"], mine["short_python_re_us"]))


if __name__ == "__main__":
    main()
