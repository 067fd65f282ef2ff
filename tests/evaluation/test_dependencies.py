"""Which flags run and in what order (docs/compatibility.md, 'Flag order and dependencies', 'Evaluating a flag'): dependencies, cycles, subsets, visibility."""

import pytest

from _flagkit import condition, e_flag, run, simple_flag

from amplitude_experiment import User
from amplitude_experiment.evaluation import compile_flags, evaluate


def chain(spec):
    """Flags from ``{key: [dependencies]}`` in the given storage order, each always ``on``."""
    return [simple_flag(str(key), [str(d) for d in deps] if deps else None) for key, deps in spec]


def order(flags, flag_keys=None):
    return list(run(flags, User(), flag_keys))


def test_upstream_chain_1_2_3():
    flags = chain([(1, [2]), (2, [3]), (3, None)])
    assert order(flags) == ["3", "2", "1"]
    assert order(flags, ["1", "2"]) == ["3", "2", "1"]
    assert order(flags, ["99", "999"]) == []


def test_upstream_complex_order():
    """The exact DFS order of the upstream complex example: parents in listed order, each flag once."""
    flags = chain([(1, [6, 3]), (2, [8, 5, 3, 1]), (3, [6, 5]), (4, [8, 7]), (5, [10, 7]), (7, [8]), (6, [7, 4]),
                   (8, None), (9, [10, 7, 5]), (10, [7]), (20, None), (21, [20]), (30, None)])
    assert order(flags) == ["8", "7", "4", "6", "10", "5", "3", "1", "2", "9", "20", "21", "30"]


def test_subset_order_follows_flag_keys():
    flags = chain([(1, None), (2, None), (3, [1])])
    assert order(flags, ["2", "3"]) == ["2", "1", "3"]
    assert order(flags, ["3", "2"]) == ["1", "3", "2"]
    assert order(flags, ("3", "3", "1")) == ["1", "3"]


def test_dependencies_of_requested_flags_are_returned():
    flags = chain([("child", ["parent"]), ("parent", None)])
    assert order(flags, {"child"}) == ["parent", "child"]


def test_missing_dependencies_are_skipped():
    flags = chain([("a", ["ghost"]), ("b", ["ghost", "a"])])
    assert order(flags) == ["a", "b"]


def test_unknown_and_empty_flag_keys():
    flags = chain([("a", None)])
    assert order(flags, ["nope"]) == []
    assert order(flags, []) == []
    assert order(flags, set()) == []
    assert order(flags, iter(())) == []
    assert order(flags, None) == ["a"]


def test_flag_keys_string_is_iterated_like_the_reference():
    flags = chain([("a", None), ("b", None), ("ab", None)])
    assert order(flags, "ba") == ["b", "a"]


def test_e10_dependency():
    parent = e_flag(condition(["context", "user", "user_id"], "is", ["vip"]), key="parent")
    child = e_flag(condition(["result", "parent", "key"], "is", ["on"]), key="child")
    child["dependencies"] = ["parent"]
    for flag in (parent, child):
        flag.pop("metadata")
        for segment in flag["segments"]:
            segment.pop("metadata")
    flags = [child, parent]
    assert run(flags, User(user_id="vip")) == {"parent": ("on", "on", None, {}), "child": ("on", "on", None, {})}
    result = run(flags, User(user_id="x"))
    assert {key: value[0] for key, value in result.items()} == {"parent": "off", "child": "off"}


def test_undeclared_result_is_visible_only_when_evaluated_earlier():
    parent = e_flag(condition(["context", "user", "user_id"], "is", ["vip"]), key="parent")
    reader = e_flag(condition(["result", "parent", "key"], "is", ["on"]), key="reader")
    user = User(user_id="vip")
    assert run([parent, reader], user)["reader"][0] == "on"
    assert run([reader, parent], user)["reader"][0] == "off"          # parent not evaluated yet
    assert run([parent, reader], user, ["reader"])["reader"][0] == "off"  # parent not evaluated at all
    assert run([parent, reader], user, ["parent", "reader"])["reader"][0] == "on"


def test_holdout_and_mutual_exclusion_gates():
    holdout = {"key": "holdout", "metadata": {"flagType": "holdout-group"},
               "variants": {"holdout": {"key": "holdout"}, "on": {"key": "on"}},
               "segments": [{"conditions": [[condition(["context", "user", "user_id"], "is", ["held"])]], "variant": "holdout"},
                            {"variant": "on"}]}
    mutex = {"key": "mx", "metadata": {"flagType": "mutual-exclusion-group"},
             "variants": {"slot-1": {"key": "slot-1"}, "slot-2": {"key": "slot-2"}},
             "segments": [{"conditions": [[condition(["context", "user", "user_id"], "contains", ["2"])]], "variant": "slot-2"},
                          {"variant": "slot-1"}]}
    exp = e_flag(condition(["result", "holdout", "key"], "is not", ["holdout"]), key="exp")
    exp["segments"][0]["conditions"][0].append(condition(["result", "mx", "key"], "is", ["slot-1"]))
    exp["dependencies"] = ["holdout", "mx"]
    flags = [exp, mutex, holdout]
    assert [k for k in run(flags, User(user_id="u1"))] == ["holdout", "mx", "exp"]
    assert run(flags, User(user_id="u1"))["exp"][0] == "on"
    assert run(flags, User(user_id="held"))["exp"][0] == "off"
    assert run(flags, User(user_id="u2"))["exp"][0] == "off"
    assert run(flags, User(user_id="u1"), ["exp"])["exp"][0] == "on"


# --- cycles: ours leaves the flags on the cycle out and evaluates the rest; never raises ---------


def cycle_results(spec, flag_keys=None):
    flag_set = compile_flags(chain(spec))
    results, failures = evaluate(flag_set, {}, flag_keys)
    assert failures == []
    return list(results), flag_set


def test_self_dependency():
    keys, flag_set = cycle_results([(1, [1]), (2, None)])
    assert keys == ["2"]
    assert any("cycle" in problem for problem in flag_set.problems)


def test_two_flag_cycle():
    keys, _ = cycle_results([(1, [2]), (2, [1]), (3, None)])
    assert keys == ["3"]
    assert cycle_results([(1, [2]), (2, [1]), (3, None)], ["2"])[0] == []
    assert cycle_results([(1, [2]), (2, [1]), (3, None)], ["999"])[0] == []


def test_complex_cycle_leaves_out_only_the_cycle():
    spec = [(3, [1, 2]), (1, None), (4, [21, 3]), (2, None), (5, [3]), (6, None), (7, None), (8, [9]), (9, None),
            (20, [4]), (21, [20])]
    keys, flag_set = cycle_results(spec)
    assert keys == ["1", "2", "3", "5", "6", "7", "9", "8"]
    assert not {"4", "20", "21"} & set(keys)
    message = " ".join(flag_set.problems)
    assert "'4'" in message and "'20'" in message and "'21'" in message


def test_subset_that_does_not_reach_the_cycle():
    keys, _ = cycle_results([(1, [2]), (2, [1]), (3, [4]), (4, None)], ["3"])
    assert keys == ["4", "3"]


def test_flag_depending_on_a_cycle_still_runs():
    keys, _ = cycle_results([(1, [2]), (2, [1]), (3, [1])])
    assert keys == ["3"]


def test_cycle_through_client_never_raises(stand_in):
    from stand_in import Answer

    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig

    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, chain([(1, [2]), (2, [1]), (3, None)])))
    client = LocalEvaluationClient("key", LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll"))
    client.start()
    try:
        assert list(client.evaluate_v2(User(user_id="u"))) == ["3"]
        assert client.evaluate_v2(User(user_id="u"), ["1"]) == {}
    finally:
        client.stop()


@pytest.mark.parametrize("size", [2000])
def test_deep_chain_does_not_recurse(size):
    """A long dependency chain must not hit Python's recursion limit."""
    spec = [(i, [i + 1]) for i in range(size)] + [(size, None)]
    keys, _ = cycle_results(spec, [str(0)])
    assert keys[0] == str(size) and keys[-1] == "0" and len(keys) == size + 1
