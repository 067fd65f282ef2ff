"""All 20 operators, null handling, coercions, list-valued properties and selectors (docs/compatibility.md, 'Selectors', 'Condition matching', 'Missing values', 'Operators')."""

import pytest

from _condition_cases import CASES, FALSY_VALUES, OPERATORS, null_expectation
from _flagkit import PROPERTY, condition, holds, run, e_flag, with_property

from amplitude_experiment import User


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_condition_table(case):
    user = with_property(case["value"]) if "value" in case else User(user_properties={})
    assert holds(condition(PROPERTY, case["op"], case["values"]), user) is case["expected"]


def test_table_covers_every_operator():
    assert {case["op"] for case in CASES} >= set(OPERATORS)


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("values", [["x"], ["x", "(none)"], ["(none)"], []], ids=["x", "x+none", "none", "empty"])
@pytest.mark.parametrize("value", FALSY_VALUES + (None, "missing"), ids=repr)
def test_null_matching_for_every_operator(op, values, value):
    """Missing, None and every falsy value (Q8) are the same null (docs/compatibility.md, 'Missing values')."""
    user = User(user_properties={}) if value == "missing" else with_property(value)
    assert holds(condition(PROPERTY, op, values), user) is null_expectation(op, values)


@pytest.mark.parametrize("user", [None, User(), User(user_properties=None)], ids=["no user attrs", "empty", "no props"])
def test_null_when_nothing_to_select(user):
    assert holds(condition(PROPERTY, "is", ["(none)"]), user or {}) is True
    assert holds(condition(PROPERTY, "is not", ["(none)"]), user or {}) is False


@pytest.mark.parametrize("selector", [[], ["context", "user", ""], ["", "user", "user_id"]])
def test_empty_selectors_select_nothing(selector):
    user = User(user_id="u1")
    assert holds(condition(selector, "is", ["(none)"]), user) is True
    assert holds(condition(selector, "is", ["u1"]), user) is False


def test_lists_are_not_indexable():
    user = User(user_properties={"tags": ["a", "b"]})
    assert holds(condition(["context", "user", "user_properties", "tags", "0"], "is", ["(none)"]), user)


def test_nested_dict_selection():
    user = User(user_properties={"meta": {"k": "v"}})
    assert holds(condition(["context", "user", "user_properties", "meta", "k"], "is", ["v"]), user)


def test_top_level_attributes_and_extras():
    user = User(user_id="u1", country="United States", version="1.10.0")
    user.plan_tier = "gold"  # extra attributes reach the context (docs/compatibility.md, 'Evaluation context')
    assert holds(condition(["context", "user", "country"], "contains", ["STATES"]), user)
    assert holds(condition(["context", "user", "version"], "version greater", ["1.9.0"]), user)
    assert holds(condition(["context", "user", "plan_tier"], "is", ["gold"]), user)


def test_e8_group_properties():
    user = User(groups={"org": ["acme"]}, group_properties={"org": {"acme": {"tier": "gold"}}})
    assert holds(condition(["context", "groups", "org", "group_properties", "tier"], "is", ["gold"]), user)
    assert holds(condition(["context", "groups", "org", "group_name"], "is", ["acme"]), user)


@pytest.mark.parametrize("groups", [{"org": "acme"}, {"org": []}, {"org": ("acme",)}], ids=repr)
def test_groups_need_a_non_empty_list(groups):
    user = User(groups=groups, group_properties={"org": {"acme": {"tier": "gold"}}})
    assert holds(condition(["context", "groups", "org", "group_name"], "is", ["(none)"]), user)


def test_only_the_first_group_name_counts():
    user = User(groups={"org": ["acme", "globex"]}, group_properties={"org": {"globex": {"tier": "gold"}}})
    assert holds(condition(["context", "groups", "org", "group_name"], "is", ["acme"]), user)
    assert not holds(condition(["context", "groups", "org", "group_properties", "tier"], "is", ["gold"]), user)


def test_cohort_ids_with_set_operators():
    user = User(cohort_ids=["c1", "c2"], groups={"org": ["acme"]}, group_cohort_ids={"org": {"acme": ["g1"]}})
    assert holds(condition(["context", "user", "cohort_ids"], "set contains any", ["c2", "zz"]), user)
    assert holds(condition(["context", "groups", "org", "cohort_ids"], "set contains any", ["g1"]), user)
    assert holds(condition(["context", "user", "cohort_ids"], "set does not contain any", ["zz"]), user)


def test_or_of_ands():
    flag = e_flag(condition(PROPERTY, "is", ["a"]))
    flag["segments"][0]["conditions"] = [
        [condition(PROPERTY, "is", ["a"]), condition(["context", "user", "user_id"], "is", ["u1"])],
        [condition(PROPERTY, "is", ["b"])],
    ]
    assert run([flag], User(user_id="u1", user_properties={"p": "a"}))["F"][0] == "on"
    assert run([flag], User(user_id="u2", user_properties={"p": "a"}))["F"][0] == "off"
    assert run([flag], User(user_id="u2", user_properties={"p": "b"}))["F"][0] == "on"


@pytest.mark.parametrize("conditions", [None, [], [[]], [[{"selector": PROPERTY, "op": "is", "values": ["zz"]}], []]],
                         ids=["null", "empty", "empty group", "empty group after a false one"])
def test_missing_or_empty_conditions_match(conditions):
    flag = e_flag(condition(PROPERTY, "is", ["a"]))
    flag["segments"][0]["conditions"] = conditions
    assert run([flag], User())["F"][0] == "on"


def test_result_variants_are_selectable():
    parent = e_flag(condition(["context", "user", "user_id"], "is", ["vip"]), key="parent")
    parent["variants"]["on"]["payload"] = {"color": "blue"}
    child = e_flag(condition(["result", "parent", "payload", "color"], "is", ["blue"]), key="child")
    version_reader = e_flag(condition(["result", "parent", "metadata", "flagVersion"], "is", ["1"]), key="version")
    unknown_field = e_flag(condition(["result", "parent", "nope"], "is", ["(none)"]), key="unknown")
    result = run([parent, child, version_reader, unknown_field], User(user_id="vip"))
    assert result["child"][0] == "on"
    assert result["version"][0] == "on"
    assert result["unknown"][0] == "on"
