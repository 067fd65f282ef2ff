"""Lazily compiled flag sets: planning, the compiled-flag cache, shared results, the one-key fast path."""

import math

import pytest

from amplitude_experiment.evaluation import (
    CompiledFlagCache,
    FlagConfigError,
    FlagSet,
    ValidatedFlags,
    compile_flags,
    decode_config,
    evaluate,
    plan_flags,
)
from amplitude_experiment.evaluation.catalog import decode_flag, encode_flag


def flag(key, value="on", metadata=None, dependencies=None):
    config = {"key": key, "metadata": metadata or {"flagVersion": 1},
              "variants": {"on": {"key": "on", "value": value}, "off": {"key": "off", "metadata": {"default": True}}},
              "segments": [{"variant": "on"}]}
    if dependencies:
        config["dependencies"] = dependencies
    return config


CONTEXT = {"user": {"user_id": "u1"}}


def test_nothing_is_compiled_until_a_request_needs_it():
    catalog = plan_flags([flag("a"), flag("b"), flag("c", dependencies=["a"])])
    flags = FlagSet(catalog)
    assert flags.cache.compiles == 0
    assert set(evaluate(flags, CONTEXT, ["c"])[0]) == {"a", "c"}
    assert flags.cache.compiles == 2  # c and the flag it depends on, not b
    evaluate(flags, CONTEXT)
    assert flags.cache.compiles == 3


@pytest.mark.parametrize("keys", [["a"], ("a",), {"a"}, frozenset(["a"]), {"a": 1}, {"a": 1}.keys()])
def test_one_key_in_any_collection_takes_the_fast_path(keys):
    flags = compile_flags([flag("a"), flag("b")])
    results, failures = evaluate(flags, CONTEXT, keys)
    assert list(results) == ["a"] and failures == []
    assert "a" in flags.sequences  # remembered per version: the next request is one dict lookup


def test_unknown_keys_are_not_remembered():
    flags = compile_flags([flag("a")])
    for n in range(100):
        assert evaluate(flags, CONTEXT, ["nope-%d" % n])[0] == {}
    assert list(flags.sequences) == []


def test_the_cache_keeps_compiled_flags_across_versions_and_drops_what_no_version_uses():
    cache = CompiledFlagCache()
    first = FlagSet(plan_flags([flag("a"), flag("b")], (), cache), cache)
    assert cache.compiles == 2
    second_catalog = plan_flags([flag("a"), flag("b", "changed")], first.catalog.keys(), cache)
    assert cache.compiles == 3  # only b changed
    cache.retain(second_catalog)
    second = FlagSet(second_catalog, cache)
    assert second.compiled("a") is first.compiled("a")
    third_catalog = plan_flags([flag("b", "changed")], second_catalog.keys(), cache)
    cache.retain(third_catalog)
    assert len(cache) == 1 and cache.compiles == 3


def test_validated_flags_remember_facts_not_rules():
    validated = ValidatedFlags()
    catalog = plan_flags([flag("a"), flag("c", dependencies=["a"])], (), validated)
    assert validated.compiles == 2 and catalog.sequence("c") == ("a", "c")
    assert all(validated.get(key, catalog.digest(key)).segments == () for key in ("a", "c"))
    plan_flags([flag("a"), flag("c", dependencies=["a"])], (), validated)
    assert validated.compiles == 2
    with pytest.raises(FlagConfigError, match="variants"):
        plan_flags([dict(flag("a"), variants=[])], (), validated)


def cohort_flag(key, *conditions):
    config = flag(key)
    config["segments"] = [{"conditions": [[{"selector": selector, "op": op, "values": values}]], "variant": "on"}
                          for selector, op, values in conditions]
    return config


def test_the_parser_finds_cohort_references_once_per_flag_content():
    user_in = (["context", "user", "cohort_ids"], "set contains any", ["c1", "c2"])
    org_out = (["context", "groups", "org", "cohort_ids"], "set does not contain any", ["g1"])
    not_cohort = (["context", "user", "cohort_ids"], "is", ["c9"])
    validated = ValidatedFlags()
    configs = [cohort_flag("a", user_in, not_cohort), cohort_flag("b", org_out, user_in), flag("c")]
    first = plan_flags(configs, (), validated)
    assert validated.get("a", first.digest("a")).cohort_refs == {"User": frozenset({"c1", "c2"})}
    assert validated.get("c", first.digest("c")).cohort_refs is None
    assert first.cohort_refs == {"User": ("c1", "c2"), "org": ("g1",)}
    # Unchanged flags are not parsed again: their references come with the remembered facts.
    second = plan_flags(configs[1:], (), validated)
    assert validated.compiles == 3 and second.cohort_refs == {"User": ("c1", "c2"), "org": ("g1",)}


@pytest.mark.parametrize("first, second", [(1, True), (1, 1.0), (0.0, -0.0), ("1", 1), (None, "")])
def test_flags_share_a_result_only_when_it_is_exactly_the_same(first, second):
    flags = compile_flags([flag("a", metadata={"v": first}), flag("b", metadata={"v": second}),
                           flag("c", value=first), flag("d", value=second)])
    results = evaluate(flags, CONTEXT)[0]
    for key, expected in (("a", first), ("b", second)):
        got = results[key]["metadata"]["v"]
        assert type(got) is type(expected) and repr(got) == repr(expected)
    for key, expected in (("c", first), ("d", second)):
        got = results[key]["value"]
        assert type(got) is type(expected) and repr(got) == repr(expected)


def test_same_results_are_shared_between_flags():
    flags = compile_flags([flag("a"), flag("b")])
    results = evaluate(flags, CONTEXT)[0]
    assert results["a"] is results["b"]  # the same text: one object


def test_records_round_trip_what_msgpack_cannot_hold():
    odd = flag("odd", value=2 ** 70)
    odd["metadata"] = {"s": "\ud800", "nan": math.inf}
    record = encode_flag(odd)
    assert record[:1] == b"{"  # stored as JSON text
    assert decode_flag(record) == odd
    plain = flag("plain")
    assert decode_flag(encode_flag(plain)) == plain


def test_a_plan_without_records_compiles_everything_and_says_so():
    cache = CompiledFlagCache()
    catalog = plan_flags([flag("a"), flag("b")], (), cache, records=False)
    assert cache.compiles == 2 and catalog.digest("a") != catalog.digest("b")
    with pytest.raises(KeyError, match="no record kept"):
        catalog.config("a")
    assert FlagSet(catalog, cache).compiled("a") is not None  # from the cache


def test_decode_config_names_bad_json():
    with pytest.raises(FlagConfigError, match="not JSON"):
        decode_config(b"[{")
    assert decode_config(b"[]") == []
