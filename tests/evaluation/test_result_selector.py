"""Conditions that select another flag's whole result (``["result", flag]``) or every result (``["result"]``).

The reference's results are ``EvaluationVariant`` dataclass objects: a condition on a whole result
compares the dataclass's repr, ``EvaluationVariant(key='on', value=..., payload=..., metadata={...})``.
``["result"]`` alone selects the dict of those objects, which the reference cannot encode as JSON:
it raises (a non-empty dict) or answers as for a missing value (no result yet). The text and the
answers below are the reference's, recorded by running it (tests/differential replays them).
"""

import pytest

from _flagkit import condition, simple_flag

from amplitude_experiment.evaluation import compile_flags, evaluate

PARENT = {
    "key": "parent",
    "metadata": {"flagType": "release", "x": [1, {"b": None}]},
    "variants": {"on": {"key": "on", "value": {"o": 1.0}, "payload": [1, "ü'\"", None, True], "metadata": {"m": "v"}}},
    "segments": [{"variant": "on", "metadata": {"segmentName": "All"}}],
}
PARENT_TEXT = ("EvaluationVariant(key='on', value={'o': 1.0}, payload=[1, 'ü\\'\"', None, True], "
               "metadata={'flagType': 'release', 'x': [1, {'b': None}], 'segmentName': 'All', 'm': 'v'})")


def reader(selector, op, values, key="reader"):
    return simple_flag(key, segments=[{"conditions": [[condition(selector, op, values)]], "variant": "on"},
                                      {"variant": "off"}])


def results_of(flags):
    flag_set = compile_flags(flags)
    results, failures = evaluate(flag_set, {"user": {}})
    return {key: variant["key"] for key, variant in results.items()}, failures


@pytest.mark.parametrize("op, values, expected", [
    ("is", [PARENT_TEXT], "on"),
    ("contains", ["EvaluationVariant(key='on'"], "on"),
    ("contains", ["'segmentname': 'all'"], "on"),  # contains folds case
    ("contains", ['"key": "on"'], "off"),  # the JSON text is not what the reference compares
    ("regex match", ["^EvaluationVariant\\(key='on', value=\\{'o': 1\\.0\\}"], "on"),
    ("regex match", ["^\\{"], "off"),
    ("does not contain", ["payload=[1,"], "off"),
    ("is not", [PARENT_TEXT], "off"),
    ("set contains", ["on"], "off"),  # not a list: set operators are false
    ("set does not contain", ["on"], "off"),
])
def test_a_whole_result_compares_as_the_references_repr(op, values, expected):
    results, failures = results_of([PARENT, reader(["result", "parent"], op, values)])
    assert failures == []
    assert results == {"parent": "on", "reader": expected}


def test_a_whole_result_not_evaluated_yet_is_missing():
    results, failures = results_of([reader(["result", "parent"], "is", ["(none)"]), PARENT])
    assert failures == [] and results == {"reader": "on", "parent": "on"}


def test_a_result_without_key_or_metadata():
    bare = simple_flag("bare", variants={"v": {}}, segments=[{"variant": "v"}])
    text = "EvaluationVariant(key=None, value=None, payload=None, metadata={})"
    results, failures = results_of([bare, reader(["result", "bare"], "is", [text])])
    assert failures == [] and results == {"bare": None, "reader": "on"}


def test_every_result_at_once_leaves_the_flag_out_where_the_reference_raises():
    results, failures = results_of([PARENT, reader(["result"], "contains", ["on"]), simple_flag("after")])
    assert results == {"parent": "on", "after": "on"}
    assert [key for key, _ in failures] == ["reader"]
    assert "['result']" in str(failures[0][1])


@pytest.mark.parametrize("op, values, expected", [
    ("contains", ["on"], "off"), ("does not contain", ["on"], "on"), ("is", ["(none)"], "on"),
])
def test_every_result_with_no_result_yet_is_missing(op, values, expected):
    results, failures = results_of([reader(["result"], op, values), PARENT])
    assert failures == [] and results == {"reader": expected, "parent": "on"}


def test_every_result_with_a_set_operator_is_false_as_in_the_reference():
    results, failures = results_of([PARENT, reader(["result"], "set contains", ["on"])])
    assert failures == [] and results == {"parent": "on", "reader": "off"}

