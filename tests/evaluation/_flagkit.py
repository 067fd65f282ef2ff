"""Builders for evaluation tests: flag JSON in one common shape and a one-call evaluator."""

from typing import Any, Dict, Iterable, List, Optional

from amplitude_experiment import User
from amplitude_experiment.evaluation import compile_flags, evaluate
from amplitude_experiment.local._context import user_to_context

PROPERTY = ["context", "user", "user_properties", "p"]


def condition(selector: List[str], op: str, values: List[str]) -> Dict[str, Any]:
    return {"selector": selector, "op": op, "values": values}


def e_flag(cond: Dict[str, Any], key: str = "F") -> Dict[str, Any]:
    """The common shape: ``on`` when the condition holds, the default ``off`` otherwise."""
    return {
        "key": key,
        "metadata": {"flagType": "release", "flagVersion": 1},
        "variants": {"on": {"key": "on", "value": "on"}, "off": {"key": "off", "metadata": {"default": True}}},
        "segments": [
            {"conditions": [[cond]], "variant": "on", "metadata": {"segmentName": "rule"}},
            {"variant": "off", "metadata": {"segmentName": "All Other Users"}},
        ],
    }


def simple_flag(key: str, dependencies: Optional[List[str]] = None, segments: Optional[list] = None,
                variants: Optional[dict] = None, metadata: Optional[dict] = None) -> Dict[str, Any]:
    flag: Dict[str, Any] = {
        "key": key,
        "variants": variants if variants is not None else {"on": {"key": "on", "value": "on"},
                                                          "off": {"key": "off", "metadata": {"default": True}}},
        "segments": segments if segments is not None else [{"variant": "on"}],
    }
    if dependencies is not None:
        flag["dependencies"] = dependencies
    if metadata is not None:
        flag["metadata"] = metadata
    return flag


def context_of(user: Any) -> Dict[str, Any]:
    return user if isinstance(user, dict) else user_to_context(user)


def run(flags: List[Dict[str, Any]], user: Any = None, flag_keys: Optional[Iterable[str]] = None,
        previous_order: Iterable[str] = ()) -> Dict[str, Any]:
    """``{flag key: (variant key, value, payload, metadata)}`` in evaluation order; failures must be empty."""
    flag_set = compile_flags(flags, previous_order)
    results, failures = evaluate(flag_set, context_of(user if user is not None else User()), flag_keys)
    assert failures == []
    return {key: (v["key"], v["value"], v["payload"], dict(v["metadata"])) for key, v in results.items()}


def holds(cond: Dict[str, Any], user: Any) -> bool:
    """Whether ``cond`` holds for ``user``, through a whole flag evaluation."""
    result = run([e_flag(cond)], user)
    return result["F"][0] == "on"


def with_property(value: Any) -> User:
    return User(user_properties={"p": value})
