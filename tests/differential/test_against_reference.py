"""Differential test: the reference SDK (amplitude-experiment==1.13.0) and ours evaluate the same
generated flag configs for the same users, whole config, with ``flag_keys`` subsets and through the
deprecated ``evaluate`` (default/undeployed filter, docs/compatibility.md, 'Deprecated filters'), and must
agree exactly on which flags appear, in which order, and on key, value, payload and metadata
(docs/compatibility.md: evaluation results exactly as the reference).

The reference runs in its own interpreter (benchmarks/reference_env.py, benchmarks/_ref_eval.py)
and loads the configs through its own poller from a 127.0.0.1 server; ours loads them through our
poller from the ``stand_in`` server. The configs come from benchmarks/flaggen.py (deterministic).
"""

import json
import os
import time
import warnings
from collections import Counter

import pytest

import flaggen
import reference_env
from stand_in import Answer

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.evaluation import plan_flags
from amplitude_experiment.snapshot import SnapshotWriter

pytestmark = pytest.mark.differential

REF_SCRIPT = os.path.join(os.path.dirname(reference_env.__file__), "_ref_eval.py")

# (flag seed, flags, users, key subsets): 3,200 users, 20,800 evaluate_v2/evaluate calls per side.
CASES = [
    (1, 40, 800, 4),
    (2, 40, 700, 4),
    (3, 60, 700, 6),
    (4, 150, 500, 8),
    (5, 8, 500, 3),
]


# (seed, one-condition flags, users): odd values against every operator (flaggen's condition fuzz).
FUZZ_CASES = [(9, 1200, 250)]


# (seed, flags, users): a second poll reorders, drops, changes and adds flags (docs/compatibility.md, 'Storage order').
UPDATE_CASES = [(12, 50, 300)]


# (seed, flags, users): regex conditions whose patterns and values tell Python's `re` (the reference's
# engine) from RE2 where they could differ (flaggen.REGEX_PATTERNS, REGEX_VALUES).
REGEX_CASES = [(21, 500, 300)]


# (seed, flags, users): conditions on another flag's whole result (["result", flag]).
RESULT_CASES = [(31, 90, 300)]


def _build_cases():
    cases = []
    for seed, flag_count, user_count in REGEX_CASES:
        cases.append({"flags": flaggen.generate_regex_flags(seed, flag_count),
                      "users": flaggen.generate_regex_users(6000 + seed, user_count), "subsets": []})
    for seed, flag_count, user_count in RESULT_CASES:
        flags = flaggen.generate_result_flags(seed, flag_count)
        cases.append({"flags": flags, "users": flaggen.generate_users(7000 + seed, user_count),
                      "subsets": flaggen.generate_key_subsets(8000 + seed, flags, 2)})
    for seed, flag_count, user_count in FUZZ_CASES:
        cases.append({"flags": flaggen.generate_condition_flags(seed, flag_count),
                      "users": flaggen.generate_fuzz_users(3000 + seed, user_count), "subsets": []})
    for seed, flag_count, user_count in UPDATE_CASES:
        first, second = flaggen.generate_update(seed, flag_count)
        cases.append({"flags": first, "update": second, "users": flaggen.generate_users(4000 + seed, user_count),
                      "subsets": flaggen.generate_key_subsets(5000 + seed, second, 3)})
    for seed, flag_count, user_count, subset_count in CASES:
        flags = flaggen.generate_flags(seed, flag_count, prefix="s%d-" % seed)
        cases.append({
            "flags": flags,
            "users": flaggen.generate_users(1000 + seed, user_count),
            "subsets": flaggen.generate_key_subsets(2000 + seed, flags, subset_count),
        })
    return cases


@pytest.fixture(scope="module")
def corpus():
    python = reference_env.reference_python()
    if python is None:
        pytest.skip("reference SDK unavailable: %s" % reference_env.reference_unavailable_reason())
    cases = _build_cases()
    out = reference_env.run_reference(REF_SCRIPT, json.dumps({"cases": cases}).encode(), timeout=600)
    return cases, json.loads(out)["cases"]


def _normalise(variants):
    rows = [[flag_key, v.key, v.value, v.payload, v.metadata] for flag_key, v in variants.items()]
    return json.loads(json.dumps(rows))  # the reference's side went through JSON too


def _polling_client(stand_in, case, shm_prefix):
    """Ours in poll mode: the flags (and the update) from the stand-in, through our poller."""
    update = case.get("update")
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, case["flags"]), *([Answer(200, update)] if update else []))
    config = LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll",
                                   flag_config_polling_interval_millis=200 if update else 3_600_000)
    client = LocalEvaluationClient("server-key", config)
    client.start()
    if update:  # wait (bounded) for the second poll to be installed
        deadline = time.monotonic() + 20
        while client.flag_source_status["flags"] != len(update):
            assert time.monotonic() < deadline, "our client never installed the update"
            time.sleep(0.02)
    return client, None


def _shared_client(stand_in, case, shm_prefix):
    """Ours in shared mode: versions published as flagd publishes them, read from shared memory.

    With an update, the client evaluates every flag of the first version (compiling them) before
    the second is published, so compiled flags carried across versions are part of what is checked.
    """
    writer = SnapshotWriter(shm_prefix, "server-key")
    first = plan_flags(case["flags"])
    writer.publish({"poll_interval_ms": 30000}, catalog=first)
    client = LocalEvaluationClient("server-key", LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix))
    client.start()
    update = case.get("update")
    if update:
        client.evaluate_v2(flaggen.build_user(case["users"][0], User))
        writer.publish({"poll_interval_ms": 30000}, catalog=plan_flags(update, first.keys()))
    return client, writer


def _ours(stand_in, case, mode, shm_prefix):
    client, writer = (_polling_client if mode == "poll" else _shared_client)(stand_in, case, shm_prefix)
    try:
        out = []
        for spec in case["users"]:
            calls = [_normalise(client.evaluate_v2(flaggen.build_user(spec, User)))]
            for keys in case["subsets"]:
                calls.append(_normalise(client.evaluate_v2(flaggen.build_user(spec, User), list(keys))))
                if len(keys) == 1:  # one key in a set takes the same fast path as one in a list
                    as_set = _normalise(client.evaluate_v2(flaggen.build_user(spec, User), set(keys)))
                    assert as_set == calls[-1], (keys, as_set, calls[-1])
            with warnings.catch_warnings(record=True):  # the SDK forces its DeprecationWarning through
                calls.append(_normalise(client.evaluate(flaggen.build_user(spec, User))))
            out.append(calls)
        return out
    finally:
        client.stop()
        if writer is not None:
            writer.close()


def _describe(case, user_index, call_index, ours, theirs):
    flags_by_key = {flag["key"]: flag for flag in case["flags"]}
    subsets = case["subsets"]
    keys = None if call_index == 0 else subsets[call_index - 1] if call_index <= len(subsets) else "evaluate (deprecated)"
    ours_map = {row[0]: row[1:] for row in ours}
    theirs_map = {row[0]: row[1:] for row in theirs} if isinstance(theirs, list) else {}
    differing = sorted(k for k in set(ours_map) | set(theirs_map) if ours_map.get(k) != theirs_map.get(k))
    lines = ["user %s flag_keys=%s" % (json.dumps(case["users"][user_index]), keys)]
    if isinstance(theirs, dict):
        lines.append("reference raised: %s" % theirs["error"])
    if not differing:
        lines.append("same results, different order: ours %s, reference %s"
                     % ([r[0] for r in ours], [r[0] for r in theirs]))
    for key in differing[:3]:
        lines.append("flag %s: ours %s, reference %s" % (key, ours_map.get(key), theirs_map.get(key)))
        lines.append("  config: %s" % json.dumps(flags_by_key.get(key))[:3000])
    return "\n".join(lines)


@pytest.mark.parametrize("mode", ["poll", "shared"])
def test_reference_and_ours_agree_exactly(corpus, stand_in, shm_prefix, mode):
    cases, reference = corpus
    compared = calls = 0
    differences = []
    outcomes = Counter()
    for case, theirs_case in zip(cases, reference):
        ours_case = _ours(stand_in, case, mode, shm_prefix)
        assert len(ours_case) == len(theirs_case)
        for user_index, (ours_calls, theirs_calls) in enumerate(zip(ours_case, theirs_case)):
            for call_index, (ours, theirs) in enumerate(zip(ours_calls, theirs_calls)):
                calls += 1
                compared += len(theirs) if isinstance(theirs, list) else 1
                if ours != theirs:
                    differences.append(_describe(case, user_index, call_index, ours, theirs))
                for row in ours:
                    outcomes["default" if (row[4] or {}).get("default") else "assigned"] += 1
    print("differential (%s mode): %d (flag, user) results in %d calls compared, %d calls differ"
          % (mode, compared, calls, len(differences)))
    assert not differences, "%d of the calls differ; first ones:\n\n%s" % (
        len(differences), "\n\n".join(differences[:5]))
    # The corpus must exercise both outcomes, or agreeing would prove little.
    assert compared > 100_000
    assert outcomes["assigned"] > 0.2 * compared and outcomes["default"] > 0.1 * compared, outcomes


def test_reference_raised_nowhere(corpus):
    """The generator promises configs the reference evaluates without raising (no cycles, valid regexes)."""
    _, reference = corpus
    errors = [call for case in reference for user in case for call in user if isinstance(call, dict)]
    assert errors == []


def test_generator_covers_every_operator_and_shape():
    ops = Counter()
    selectors = Counter()
    shapes = Counter()
    for case in _build_cases():
        for flag in case["flags"]:
            kind = (flag.get("metadata") or {}).get("flagType", "none")
            shapes[kind] += 1
            if flag.get("dependencies"):
                shapes["with dependencies"] += 1
            for segment in flag["segments"]:
                if segment.get("bucket"):
                    shapes["bucket"] += 1
                for group in segment.get("conditions") or []:
                    for condition in group:
                        ops[condition["op"]] += 1
                        selectors[condition["selector"][0] + "." + condition["selector"][1]] += 1
    assert set(ops) >= set(flaggen.OPERATORS)
    assert min(ops.values()) >= 5, ops
    assert selectors["result." + "x"] == 0 and any(s.startswith("result.") for s in selectors)
    assert selectors["context.groups"] > 0 and selectors["context.user"] > 0
    for shape in ("holdout-group", "mutual-exclusion-group", "experiment", "release", "with dependencies", "bucket"):
        assert shapes[shape] > 0, shapes
