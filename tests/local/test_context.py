"""The evaluation context: exact where a rule could tell, the user's own attributes where none can."""

import pytest

from amplitude_experiment import User
from amplitude_experiment.evaluation import compile_flags, evaluate
from amplitude_experiment.local._context import user_to_context


def flag_with(selector, op, values):
    return {
        "key": "F",
        "variants": {"on": {"key": "on"}, "off": {"key": "off"}},
        "segments": [
            {"conditions": [[{"selector": selector, "op": op, "values": values}]], "variant": "on"},
            {"variant": "off"},
        ],
    }


def variant_for(flag, user):
    flags = compile_flags([flag])
    results, failures = evaluate(flags, user_to_context(user, flags.needs_exact_user_entry))
    assert failures == []
    return results["F"]["key"]


def test_reference_example_of_a_group_context():
    user = User(user_id="u", groups={"org": ["acme", "x"]}, group_properties={"org": {"acme": {"tier": "gold"}}})
    assert user_to_context(user) == {
        "user": {"user_id": "u"},
        "groups": {"org": {"group_name": "acme", "group_properties": {"tier": "gold"}}},
    }


@pytest.mark.parametrize(
    "selector, op, values, user, expected",
    [
        # The whole user entry: only its non-None attributes, as JSON.
        (["context", "user"], "is", ['{"user_id": "u1"}'], User(user_id="u1"), "on"),
        (["context"], "contains", ['"user_id": "u1"}}'], User(user_id="u1"), "on"),
        # Group fields are not part of the user entry, even when set.
        (["context", "user", "groups"], "is", ["(none)"], User(user_id="u1", groups={"org": ["acme"]}), "on"),
        (["context", "user", "group_properties"], "is", ["(none)"],
         User(groups={"org": ["a"]}, group_properties={"org": {"a": {"k": 1}}}), "on"),
    ],
)
def test_rules_that_can_tell_get_the_exact_user_entry(selector, op, values, user, expected):
    assert compile_flags([flag_with(selector, op, values)]).needs_exact_user_entry
    assert variant_for(flag_with(selector, op, values), user) == expected


@pytest.mark.parametrize(
    "selector",
    [["context", "user", "user_id"], ["context", "user", "user_properties", "plan"], ["context", "groups", "org"],
     ["result", "other", "key"], ["context", "users"]],
)
def test_other_rules_evaluate_on_the_attribute_dict(selector):
    flags = compile_flags([flag_with(selector, "is", ["x"])])
    assert not flags.needs_exact_user_entry
    user = User(user_id="u1", user_properties={"plan": "pro"}, groups={"org": ["acme"]})
    context = user_to_context(user, flags.needs_exact_user_entry)
    assert context["user"] is user.__dict__
    assert context["groups"] == user_to_context(user)["groups"]


def test_attributes_set_to_none_select_like_missing_ones():
    flag = flag_with(["context", "user", "country"], "is", ["(none)"])
    assert variant_for(flag, User(user_id="u1", country=None)) == "on"
    assert variant_for(flag, User(user_id="u1", country="FR")) == "off"
