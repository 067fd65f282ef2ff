"""The flag-config parser (docs/compatibility.md, 'Flag-config validation', 'Storage order'): what is accepted, ignored and rejected."""

import copy

import pytest

from _flagkit import run, simple_flag

from amplitude_experiment import User
from amplitude_experiment.evaluation import FlagConfigError, compile_flags

BASE = {
    "key": "f", "metadata": {"flagVersion": 1}, "dependencies": ["p"],
    "variants": {"on": {"key": "on", "value": "on", "payload": {"a": 1}, "metadata": {"m": 1}}},
    "segments": [{
        "conditions": [[{"selector": ["context", "user", "user_id"], "op": "is", "values": ["u"]}]],
        "variant": "on", "metadata": {"segmentName": "s"},
        "bucket": {"selector": ["context", "user", "device_id"], "salt": "s",
                   "allocations": [{"range": [0, 100], "distributions": [{"variant": "on", "range": [0, 42949673]}]}]},
    }],
}
SEGMENT = ["segments", 0]
BUCKET = SEGMENT + ["bucket"]
ALLOCATION = BUCKET + ["allocations", 0]
CONDITION = SEGMENT + ["conditions", 0, 0]
DELETE = object()


def mutated(path, value):
    flag = copy.deepcopy(BASE)
    target = flag
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return flag


def test_base_config_evaluates():
    assert run([BASE], User(user_id="u", device_id="d"))["f"] == ("on", "on", {"a": 1}, {"flagVersion": 1, "segmentName": "s", "m": 1})


# Every rejection below was checked against the reference's schema (it rejects them too).
REJECTED = [
    (["key"], 5), (["key"], None), (["key"], DELETE), (["variants"], None), (["variants"], []), (["variants"], DELETE),
    (["segments"], None), (["segments"], DELETE), (["dependencies"], ["a", None]), (["dependencies"], "p"),
    (["dependencies"], [5]), (["metadata"], []), (["metadata"], "x"), (["variants", "on"], "x"),
    (["variants", "on"], None), (["variants", "on", "key"], 5), (["variants", "on", "metadata"], [1]),
    (SEGMENT, None), (SEGMENT + ["variant"], 5), (SEGMENT + ["metadata"], []), (SEGMENT + ["conditions"], [[None]]),
    (SEGMENT + ["conditions"], [None]), (SEGMENT + ["conditions"], "x"), (SEGMENT + ["conditions"], [{"a": 1}]),
    (CONDITION + ["values"], [5]), (CONDITION + ["values"], [True]), (CONDITION + ["values"], None),
    (CONDITION + ["values"], "u"), (CONDITION + ["values"], DELETE), (CONDITION + ["op"], 5), (CONDITION + ["op"], None),
    (CONDITION + ["selector"], None), (CONDITION + ["selector"], [5]), (CONDITION + ["selector"], "abc"),
    (BUCKET + ["salt"], None), (BUCKET + ["salt"], 5), (BUCKET + ["salt"], DELETE), (BUCKET + ["selector"], None),
    (BUCKET + ["allocations"], None), (ALLOCATION + ["distributions"], None),
    (ALLOCATION + ["distributions", 0, "variant"], None), (ALLOCATION + ["distributions", 0, "variant"], 5),
    (ALLOCATION + ["range"], ["1.5", "50"]), (ALLOCATION + ["range"], [True, 5]), (ALLOCATION + ["range"], [0, None]),
    (ALLOCATION + ["range"], "05"), (ALLOCATION + ["range"], [float("inf"), 5]), (ALLOCATION + ["range"], [float("nan"), 5]),
    (ALLOCATION + ["range"], [0, 50, "x"]),
]


@pytest.mark.parametrize("path,value", REJECTED, ids=lambda x: repr(x)[:40])
def test_config_failing_validation_is_rejected_naming_the_flag(path, value):
    good = simple_flag("good")
    with pytest.raises(FlagConfigError) as raised:
        compile_flags([good, mutated(path, value)])
    message = str(raised.value)
    if path != ["key"]:
        assert raised.value.flag_key == "f"
        assert "'f'" in message
    else:
        assert "#1" in message  # no usable key: the flag is named by its position


@pytest.mark.parametrize("raw", [None, {}, "[]", {"flags": []}, [None], [5], ["f"]], ids=repr)
def test_not_a_list_of_flags_is_rejected(raw):
    with pytest.raises(FlagConfigError):
        compile_flags(raw)


ACCEPTED = [
    (["dependencies"], None), (["dependencies"], DELETE), (["metadata"], None), (["metadata"], DELETE),
    (["variants", "on", "key"], None), (["variants", "on", "metadata"], None), (SEGMENT + ["variant"], None),
    (SEGMENT + ["conditions"], None), (SEGMENT + ["conditions"], []), (SEGMENT + ["metadata"], None),
    (CONDITION + ["selector"], []), (BUCKET, None), (ALLOCATION + ["range"], [1e30, 5]),
]


@pytest.mark.parametrize("path,value", ACCEPTED, ids=lambda x: repr(x)[:40])
def test_optional_fields(path, value):
    compile_flags([mutated(path, value)])


@pytest.mark.parametrize("bounds,expected", [
    (["0", "100"], "on"),          # the reference's schema takes strings int() reads
    ([" 0 ", " 100 "], "on"),
    (["\u0660", "100"], "on"),     # Arabic-Indic zero
    ([0.9, 100.9], "on"),          # floats truncate
    (["50", "50"], None),
])
def test_range_bounds_read_like_the_reference(bounds, expected):
    flag = mutated(ALLOCATION + ["range"], bounds)
    flag["segments"][0]["variant"] = None
    result = run([flag], User(user_id="u", device_id="d"))
    assert (result["f"][0] if "f" in result else None) == expected


UNKNOWN_FIELDS = [
    ["extra"], ["variants", "on", "extra"], SEGMENT + ["extra"], CONDITION + ["extra"], BUCKET + ["extra"],
    ALLOCATION + ["extra"], ALLOCATION + ["distributions", 0, "extra"],
]


@pytest.mark.parametrize("path", UNKNOWN_FIELDS, ids=repr)
def test_unknown_fields_are_ignored(path):
    """Q13 deliberately not kept: the reference rejects the whole update, we ignore the field."""
    flag = mutated(path, {"anything": [1, 2]})
    assert run([flag], User(user_id="u", device_id="d")) == run([BASE], User(user_id="u", device_id="d"))


def test_storage_order_keeps_positions_of_replaced_flags():
    """docs/compatibility.md, 'Storage order': store [a,b,c], then [d,c,a] → order a, c, d."""
    first = compile_flags([simple_flag(k) for k in "abc"])
    second = compile_flags([simple_flag(k) for k in "dca"], previous_order=list(first.flags))
    assert list(second.flags) == ["a", "c", "d"]
    assert list(run([simple_flag(k) for k in "dca"], previous_order="abc")) == ["a", "c", "d"]


def test_duplicate_keys_keep_first_position_and_last_config():
    first = simple_flag("x", variants={"v1": {"key": "v1"}}, segments=[{"variant": "v1"}])
    other = simple_flag("y")
    last = simple_flag("x", variants={"v2": {"key": "v2"}}, segments=[{"variant": "v2"}])
    result = run([first, other, last])
    assert list(result) == ["x", "y"]
    assert result["x"][0] == "v2"


def test_empty_config():
    assert run([]) == {}
    assert len(compile_flags([])) == 0


def test_invalid_regex_is_a_problem_not_an_error():
    flag = {"key": "r", "variants": {"on": {"key": "on"}}, "segments": [
        {"conditions": [[{"selector": ["context", "user", "user_id"], "op": "regex match", "values": ["(", "^u"]}]],
         "variant": "on"}]}
    flag_set = compile_flags([flag])
    assert any("'r'" in problem and "regex" in problem for problem in flag_set.problems)
    assert run([flag], User(user_id="u1"))["r"][0] == "on"    # the valid pattern still works
    assert run([flag], User(user_id="x1")) == {}             # the broken one never matches


def test_input_is_not_mutated():
    raw = [copy.deepcopy(BASE)]
    snapshot = copy.deepcopy(raw)
    compile_flags(raw)
    run(raw, User(user_id="u", device_id="d"))
    assert raw == snapshot


def _nodes(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, path + (index,))


GARBAGE = [None, True, 0, -1, 1.5, float("nan"), float("inf"), 2 ** 70, "", "x", "\ud800", "[", [], [None], [1, "a"],
           {}, {"key": 5}, [[]], [["a"]], {"selector": []}, "9" * 5000]


def test_garbage_anywhere_is_rejected_or_evaluated_never_another_error():
    """Replace one node of a generated config with garbage, 3,000 times: compile_flags raises only
    FlagConfigError, and whatever it accepts evaluates without raising."""
    import random

    import flaggen
    from amplitude_experiment.evaluation import evaluate
    from amplitude_experiment.local._context import user_to_context

    rng = random.Random(5)
    base = flaggen.generate_flags(21, 12, prefix="z-")
    contexts = [user_to_context(flaggen.build_user(spec, User)) for spec in flaggen.generate_users(22, 5)]
    paths = list(_nodes(base))[1:]
    accepted = rejected = 0
    for _ in range(3000):
        flags = copy.deepcopy(base)
        path = paths[rng.randrange(len(paths))]
        target = flags
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = copy.deepcopy(GARBAGE[rng.randrange(len(GARBAGE))])
        try:
            flag_set = compile_flags(flags)
        except FlagConfigError:
            rejected += 1
            continue
        accepted += 1
        for context in contexts:
            evaluate(flag_set, context)
    assert accepted > 300 and rejected > 300, (accepted, rejected)
