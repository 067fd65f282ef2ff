"""Evaluate a flag set for one context: pure, no I/O, no logging (docs/compatibility.md, "Flag order and dependencies", "Evaluating a flag")."""

from typing import Any, Dict, Iterable, List, Optional, Tuple

from .flags import EvaluatedVariant
from .flagset import FlagSet

#: (flag key, exception) for each flag whose evaluation failed on this input; the flag is left out.
Failures = List[Tuple[str, BaseException]]


def evaluate(
    flag_set: FlagSet, context: Dict[str, Any], flag_keys: Optional[Iterable[str]] = None
) -> Tuple[Dict[str, EvaluatedVariant], Failures]:
    """Results of the flags named in ``flag_keys`` (all when ``None``) and of their dependencies.

    Flags run parents first; each sees the results of every flag evaluated before it in this call.
    A flag that raises on odd input is left out and reported in the failures, never raised.
    Flags are compiled the first time a request needs them (``flagset.py``).
    """
    if flag_keys is None:
        order = flag_set.all
        if order is None:
            order = flag_set.all_flags()
    else:
        # One key in any common collection is the request that matters most: answered inline.
        key = None
        kind = flag_keys.__class__
        if kind is list or kind is tuple:
            if len(flag_keys) == 1:  # type: ignore[arg-type]
                key = flag_keys[0]  # type: ignore[index]
        elif kind is set or kind is frozenset or kind is _DICT_KEYS or kind is dict:
            if len(flag_keys) == 1:  # type: ignore[arg-type]
                for key in flag_keys:
                    break
        if key.__class__ is str:
            order = flag_set.sequences.get(key)  # type: ignore[arg-type]
            if order is None:
                order = flag_set.sequence_of(key)  # type: ignore[arg-type]
        else:
            order = _order_for(flag_set, flag_keys)
    results: Dict[str, EvaluatedVariant] = {}
    failures: Failures = []
    target = {"context": context, "result": results}
    for flag in order:
        try:
            for predicates, groups, variant, bucket in flag.segments:
                for predicate in predicates:
                    if not predicate(target):
                        break
                else:
                    if groups is not None:
                        for group in groups:
                            for predicate in group:
                                if not predicate(target):
                                    break
                            else:
                                break  # this group holds
                        else:
                            continue  # no group holds: next segment
                    if bucket is not None:
                        variant = bucket(target)
                    if variant is not None:
                        results[flag.key] = variant
                        break
        except Exception as error:  # odd user input (unencodable text, deep JSON): leave the flag out
            failures.append((flag.key, error))
    return results, failures


def _order_for(flag_set: FlagSet, flag_keys: Iterable[str]) -> Tuple[Any, ...]:
    sequences = flag_set.sequences
    try:
        keys = iter(flag_keys)
    except TypeError:  # not a collection of keys (the reference raises): nothing is requested
        return ()
    seen = set()
    order = []
    for key in keys:
        if not isinstance(key, str):
            continue
        sequence = sequences.get(key)
        if sequence is None:
            sequence = flag_set.sequence_of(key)
        for flag in sequence:
            if flag.key not in seen:
                seen.add(flag.key)
                order.append(flag)
    return tuple(order)


_DICT_KEYS = type({}.keys())
