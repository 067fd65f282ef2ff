"""The hand-written condition table of tests/evaluation (_condition_cases.py) replayed against the
reference's own engine: the expectations our unit tests assert are the reference's answers."""

import json
import os
import sys

import pytest

import reference_env

pytestmark = pytest.mark.differential

EVALUATION_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "evaluation")
sys.path.insert(0, EVALUATION_TESTS)

import _condition_cases as cases  # noqa: E402

SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import _condition_cases as cases
from amplitude_experiment.evaluation.engine import EvaluationEngine
from amplitude_experiment.evaluation.types import EvaluationFlag

engine = EvaluationEngine()

def holds(op, values, properties):
    flag = EvaluationFlag.from_dict({"key": "F", "variants": {"on": {"key": "on"}, "off": {"key": "off"}},
        "segments": [{"conditions": [[{"selector": ["context", "user", "user_properties", "p"], "op": op,
                                       "values": values}]], "variant": "on"}, {"variant": "off"}]})
    return engine.evaluate({"user": {"user_properties": properties}}, [flag])["F"].key == "on"

table = [holds(c["op"], c["values"], {"p": c["value"]} if "value" in c else {}) for c in cases.CASES]
nulls = [holds(op, values, {"p": value}) for op in cases.OPERATORS for values in (["x"], ["x", "(none)"], ["(none)"], [])
         for value in cases.FALSY_VALUES + (None,)]
print(json.dumps({"table": table, "nulls": nulls}))
'''


@pytest.fixture(scope="module")
def reference_answers(tmp_path_factory):
    if reference_env.reference_python() is None:
        pytest.skip("reference SDK unavailable: %s" % reference_env.reference_unavailable_reason())
    script = tmp_path_factory.mktemp("oracle") / "conditions.py"
    script.write_text(SCRIPT)
    return json.loads(reference_env.run_reference(str(script), args=(EVALUATION_TESTS,), timeout=120))


def test_table_expectations_are_the_references(reference_answers):
    wrong = [(case["id"], case["expected"], answer)
             for case, answer in zip(cases.CASES, reference_answers["table"]) if case["expected"] is not answer]
    assert wrong == []


def test_null_table_is_the_references(reference_answers):
    expected = [cases.null_expectation(op, values) for op in cases.OPERATORS
                for values in (["x"], ["x", "(none)"], ["(none)"], []) for _ in cases.FALSY_VALUES + (None,)]
    assert reference_answers["nulls"] == expected
