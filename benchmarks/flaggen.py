"""Deterministic generator of realistic, tricky-but-valid flag configs and users.

Used by the differential test (tests/differential/) and the benchmarks (benchmarks/bench_local.py).
Everything comes from ``random.Random(seed)``: the same seed gives the same JSON on any machine and
in any interpreter (no ``hash()``, no set iteration). The output is plain JSON data so that it can
be fed to the reference SDK in its own interpreter.

What "valid" means here: the reference (amplitude-experiment 1.13.0) accepts the config (its strict
schema: no unknown fields, string condition values) and evaluates it without raising (no dependency
cycles, every regex compiles). Everything else is fair game: falsy property values, numbers as
strings and floats, odd versions, JSON-string lists, booleans in mixed case, non-ASCII text, groups,
extra user attributes, flags reading the results of other flags with and without declaring them,
holdout and mutual-exclusion shapes, default variants, segments naming missing variants,
allocations that miss and bucket selectors on missing or falsy values.
"""

import json
import random
import re
from typing import Any, Dict, List, Optional, Tuple

OPERATORS = (
    "is", "is not", "contains", "does not contain",
    "less", "less or equal", "greater", "greater or equal",
    "version less", "version less or equal", "version greater", "version greater or equal",
    "set is", "set is not", "set contains", "set does not contain", "set contains any", "set does not contain any",
    "regex match", "regex does not match",
)
FULL_DISTRIBUTION = 42949673

# --- property value pools ---------------------------------------------------------------------
# Each user property draws from one pool; each condition on it draws filter values from the
# matching filter pool, so conditions hit often enough to exercise both outcomes.

_FALSY = [0, 0.0, False, "", [], {}]
_TEXT = ["free", "pro", "team", "Enterprise", "PRO", "pro ", "日本", "Ünïcödé", "straße", "STRASSE", "😀 rocket",
         "a", "ab", "abc", "(none)", "none", "null", "[", "[not json", "{\"k\": \"v\"}", "İstanbul"]
_NUMBERS = [1, 9, 10, -3, 1.0, 2.5, 1e20, 10.0, "9", "10", "9a", "1e3", " 5 ", "+5", ".5", "5.", "1_000", "0x10",
            "1,000", "inf", "-Infinity", "nan", "１０", True, "007", "-0"]
_VERSIONS = ["1.2.3", "1.2.3-", "1.2.3-beta", "1.2.3-alpha.10", "1.2.3-alpha.2", "1.10.0", "1.9.0", "1.2", "10",
             "v1.2.3", "1.2.3\n", "06.007.0008", "1.2.3--", "1.2.3-a.", "2.0.0-Beta", "2.0.0-alpha", "1.2.3.4",
             "1.2-beta", "20.9.4-a1.23", "20.9.4-a1.5", "0.0.1", "١.٢.٣"]
_LISTS = [["a", "b"], ["a"], ["a", "a"], ["b", "c", "d"], '["a","b"]', '["a"]', "[]", '[1, 2]', [1, 2], [True],
          ["true", "x"], '["TRUE"]', [None], [None, "a"], ["日本", "b"], [["x", "y"]], [{"k": 1}], "[1,2", '"[a]"',
          '[{"k": "ü"}]', [1.0, 2], ["A", "B"], "a", ["(none)"]]
_BOOLEANS = [True, False, "true", "false", "TRUE", "False", "tRuE", "yes", 1, 0, "1", "True"]
_EMAILS = ["a@example.com", "B@Example.COM", "x@y", "bob@example.com.evil", "ünï@example.com", "a+b@example.com",
           "@example.com", "plain"]
_DICTS = [{"k": "v"}, {"k": "ü"}, {"a": [1, 2]}, {}, {"k": None}]

PROPERTY_POOLS = {
    "plan": _TEXT,
    "n": _NUMBERS,
    "score": _NUMBERS,
    "app_ver": _VERSIONS,
    "tags": _LISTS,
    "beta": _BOOLEANS,
    "email": _EMAILS,
    "meta": _DICTS,
    "mixed": _TEXT + _NUMBERS[:8] + _LISTS[:6] + _BOOLEANS[:4],
}

_TEXT_FILTERS = ["free", "pro", "PRO", "team", "enterprise", "Enterprise", "日本", "ü", "ß", "ss", "STRASSE", "(none)",
                 "", "a", "ab", "[", "true", "True", "none", "😀", "{\"k\": \"v\"}", "i̇stanbul"]
_NUMBER_FILTERS = ["10", "9", "0", "-3", "1", "1.0", "1e20", "5", "x", "abc", "nan", "inf", "1000", "(none)", "2.5"]
_VERSION_FILTERS = ["1.2.3", "1.9.0", "1.10.0", "2", "abc", "1.2.3-alpha", "2.0.0", "1.2", "6.7.8", "(none)",
                    "20.9.4-a1.5", "1.2.3-"]
_LIST_FILTERS = ["a", "b", "c", "true", "TRUE", "1", "1.0", "[1, 2]", "[\"x\", \"y\"]", "(none)", "日本", "A", "x",
                 '{"k": 1}']
_BOOLEAN_FILTERS = ["true", "false", "True", "FALSE", "1", "yes", "(none)"]
_REGEXES = ["@example\\.com$", "^a", "(?i)example", "\\d", "^$", ".*", "ü", "^[a-z]+$", "(?i)^b", "@", "\\w+@\\w+"]

FILTER_POOLS = {
    "text": _TEXT_FILTERS,
    "number": _NUMBER_FILTERS,
    "version": _VERSION_FILTERS,
    "list": _LIST_FILTERS,
    "boolean": _BOOLEAN_FILTERS,
    "regex": _REGEXES,
}

_COUNTRIES = ["United States", "Germany", "日本", "", "France", "united states", "Türkiye"]
_CITIES = ["Berlin", "東京", "", "NYC"]
_PLATFORMS = ["iOS", "Android", "Web", "ios", ""]
_LANGUAGES = ["en", "de", "ja", "EN", ""]
_USER_IDS = ["u%d" % i for i in range(12)] + ["vip", "ü1", ""]
_DEVICE_IDS = ["d%d" % i for i in range(12)] + ["0", "dév-1", "日本-2"]
_ORGS = ["acme", "globex", "日本社", "", "initech"]
_TIERS = ["gold", "GOLD", "silver", "", ["gold", "x"]]
_SEATS = [10, "9", 0, 2.5, "x"]
_EXTRA = ["pro", 7, True, ["a", "b"], "", {"k": "v"}]

# (selector, natural filter pool, values users hold there: filters are often drawn from these)
_USER_SELECTORS = [
    (["context", "user", "user_id"], "text", _USER_IDS),
    (["context", "user", "device_id"], "text", _DEVICE_IDS),
    (["context", "user", "country"], "text", _COUNTRIES),
    (["context", "user", "city"], "text", _CITIES),
    (["context", "user", "platform"], "text", _PLATFORMS),
    (["context", "user", "version"], "version", _VERSIONS),
    (["context", "user", "language"], "text", _LANGUAGES),
    (["context", "user", "cohort_ids"], "list", ["c1", "c2", "x"]),
    (["context", "user", "user_properties", "plan"], "text", _TEXT),
    (["context", "user", "user_properties", "plan"], "text", _TEXT),
    (["context", "user", "user_properties", "n"], "number", _NUMBERS),
    (["context", "user", "user_properties", "n"], "number", _NUMBERS),
    (["context", "user", "user_properties", "score"], "number", _NUMBERS),
    (["context", "user", "user_properties", "app_ver"], "version", _VERSIONS),
    (["context", "user", "user_properties", "app_ver"], "version", _VERSIONS),
    (["context", "user", "user_properties", "tags"], "list", _LISTS),
    (["context", "user", "user_properties", "tags"], "list", _LISTS),
    (["context", "user", "user_properties", "beta"], "boolean", _BOOLEANS),
    (["context", "user", "user_properties", "beta"], "boolean", _BOOLEANS),
    (["context", "user", "user_properties", "email"], "regex", _EMAILS),
    (["context", "user", "user_properties", "meta"], "text", _DICTS),
    (["context", "user", "user_properties", "mixed"], "text", PROPERTY_POOLS["mixed"]),
    (["context", "user", "user_properties", "mixed"], "list", PROPERTY_POOLS["mixed"]),
    (["context", "user", "user_properties", "missing"], "text", None),
    (["context", "user", "extra_attr"], "text", _EXTRA),
    (["context", "user", "user_properties", "meta", "k"], "text", ["v", "ü"]),
    (["context", "user", "user_properties", "tags", "0"], "text", ["a"]),  # lists are not indexable
    (["context", "groups", "org", "group_name"], "text", _ORGS),
    (["context", "groups", "org", "group_properties", "tier"], "text", _TIERS),
    (["context", "groups", "org", "group_properties", "seats"], "number", _SEATS),
    (["context", "groups", "team", "group_name"], "text", ["red"]),
    (["context", "groups", "org", "cohort_ids"], "list", ["gc1", "gc2"]),
]
_NATURAL_OPS = {
    "text": ["is", "is", "is not", "contains", "does not contain", "regex match", "set contains any", "less"],
    "number": ["less", "less or equal", "greater", "greater or equal", "is", "is not"],
    "version": ["version less", "version less or equal", "version greater", "version greater or equal", "is"],
    "list": ["set is", "set is not", "set contains", "set does not contain", "set contains any",
             "set does not contain any", "is", "is not", "contains"],
    "boolean": ["is", "is", "is not", "set contains", "contains"],
    "regex": ["regex match", "regex does not match", "contains", "is"],
}


def _as_filter(rng: random.Random, value: Any) -> str:
    """A filter string that a user holding ``value`` may or may not match, depending on coercion."""
    if isinstance(value, bool):
        return _pick(rng, ["true", "True", "TRUE", "false", "False"] if value else ["false", "FALSE", "true"])
    if isinstance(value, list):
        if value and rng.random() < 0.8:
            return _as_filter(rng, _pick(rng, value))
        return json.dumps(value) if rng.random() < 0.5 else json.dumps(value, separators=(",", ":"))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=rng.random() < 0.7)
    if isinstance(value, (int, float)):
        return _pick(rng, [str(value), str(value), repr(float(value)), str(int(value)) if value == value and
                           abs(value) != float("inf") else "0"])
    if value is None:
        return "(none)"
    text = str(value)
    roll = rng.random()
    if roll < 0.1:
        return text.upper()
    if roll < 0.2 and len(text) > 1:
        return text[: len(text) // 2]
    return text


_OP_POOL = {
    "is": None, "is not": None, "contains": None, "does not contain": None,
    "less": "number", "less or equal": "number", "greater": "number", "greater or equal": "number",
    "version less": "version", "version less or equal": "version", "version greater": "version",
    "version greater or equal": "version",
    "set is": "list", "set is not": "list", "set contains": "list", "set does not contain": "list",
    "set contains any": "list", "set does not contain any": "list",
    "regex match": "regex", "regex does not match": "regex",
}
_BUCKET_SELECTORS = [
    ["context", "user", "device_id"], ["context", "user", "device_id"], ["context", "user", "user_id"],
    ["context", "user", "user_id"], ["context", "groups", "org", "group_name"],
    ["context", "user", "user_properties", "n"], ["context", "user", "user_properties", "beta"],
    ["context", "user", "user_properties", "tags"], ["context", "user", "user_properties", "missing"],
    ["context", "user", "user_properties", "meta"],
]
_PAYLOADS = [None, {"color": "blue"}, {"nested": {"a": [1, 2, {"b": None}]}}, [1, "two", 3.5], "plain", 42, 0.5,
             True, False, "", {}, [], {"ü": "日本"}]
_VALUES = ["on", "treatment", "control", True, 10, 2.5, {"obj": 1}, "", None, "ünï"]


def _pick(rng: random.Random, items: List[Any]) -> Any:
    return items[rng.randrange(len(items))]


class _FlagBuilder:
    def __init__(self, rng: random.Random, prefix: str):
        self.rng = rng
        self.prefix = prefix
        self.flags: List[Dict[str, Any]] = []
        self.holdouts: List[str] = []
        self.mutexes: List[Dict[str, Any]] = []  # {"key", "slots"}

    def salt(self) -> str:
        return "".join(_pick(self.rng, list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
                       for _ in range(8))

    def flag_metadata(self, flag_type: str, version: Optional[int] = None) -> Optional[Dict[str, Any]]:
        rng = self.rng
        if rng.random() < 0.05:
            return None
        metadata = {"flagType": flag_type, "flagVersion": version if version is not None else rng.randint(1, 40),
                    "evaluationMode": "local", "deployed": rng.random() > 0.1}
        if flag_type == "experiment":
            metadata["experimentKey"] = "exp-%d" % rng.randint(1, 999)
        if rng.random() < 0.1:
            metadata["trackExposure"] = rng.random() < 0.5
        if rng.random() < 0.05:
            metadata["m"] = "flag"
        return metadata

    def condition(self) -> Dict[str, Any]:
        rng = self.rng
        selector, natural, user_values = _pick(rng, _USER_SELECTORS)
        if self.flags and rng.random() < 0.08:
            other = _pick(rng, self.flags)["key"]
            field = _pick(rng, ["key", "key", "value", "payload", ["metadata", "default"], ["metadata", "flagVersion"]])
            selector = ["result", other] + (field if isinstance(field, list) else [field])
            natural, user_values = "text", ["on", "off", "control", "treatment", "True", "true", "10"]
        if rng.random() < 0.65:  # an operator that suits the property, so conditions hit often
            op = _pick(rng, _NATURAL_OPS[natural])
        else:
            op = _pick(rng, list(OPERATORS))
        pool_name = _OP_POOL[op] or natural
        if rng.random() < 0.15:  # a pool that does not fit the property: exercises the fallbacks
            pool_name = _pick(rng, list(FILTER_POOLS))
        if op.startswith("regex"):
            pool_name = "regex"
        count = _pick(rng, [1, 1, 1, 2, 2, 3, 0] if op.startswith("set") else [1, 1, 1, 2, 3])
        pool = FILTER_POOLS[pool_name]
        values = []
        for _ in range(count):
            if user_values and pool_name != "regex" and rng.random() < 0.6:
                values.append(_as_filter(rng, _pick(rng, user_values)))
            else:
                values.append(_pick(rng, pool))
        if rng.random() < 0.08:
            values.append("(none)")
        return {"selector": selector, "op": op, "values": values}

    def conditions(self) -> Optional[List[List[Dict[str, Any]]]]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.02:
            return [[]]
        if roll < 0.04:
            return []
        groups = [[self.condition() for _ in range(_pick(rng, [1, 1, 1, 2, 3]))] for _ in range(_pick(rng, [1, 1, 2, 3]))]
        return groups

    def variants(self, names: List[str], with_off: bool = True) -> Dict[str, Any]:
        rng = self.rng
        variants: Dict[str, Any] = {}
        if with_off:
            off: Dict[str, Any] = {"key": "off", "metadata": {"default": True}}
            if rng.random() < 0.1:
                off["metadata"]["m"] = "variant"
            variants["off"] = off
        for name in names:
            variant: Dict[str, Any] = {"key": name}
            roll = rng.random()
            if roll < 0.8:
                variant["value"] = name if rng.random() < 0.7 else _pick(rng, _VALUES)
            if rng.random() < 0.4:
                variant["payload"] = _pick(rng, _PAYLOADS)
            if rng.random() < 0.15:
                variant["metadata"] = {"m": "variant"} if rng.random() < 0.5 else {}
            if rng.random() < 0.03:
                variant["key"] = name + "-renamed"  # the result key comes from the variant, not the map key
            variants[name] = variant
        if rng.random() < 0.03:
            variants["empty"] = {}
        return variants

    def bucket(self, variants: List[str], selector: Optional[List[str]] = None, miss: bool = False) -> Dict[str, Any]:
        rng = self.rng
        allocations = []
        start = 0
        for _ in range(_pick(rng, [1, 1, 1, 2])):
            end = min(100, start + rng.randint(10, 100))
            if miss and rng.random() < 0.5:
                end = start + rng.randint(1, 30)
            distributions = []
            width = FULL_DISTRIBUTION // max(1, len(variants))
            low = 0
            for position, name in enumerate(variants):
                high = FULL_DISTRIBUTION if position == len(variants) - 1 else low + width
                if miss and rng.random() < 0.2:
                    high = low + width // 2  # a gap no distribution covers
                distributions.append({"variant": name, "range": [low, high]})
                low = high
            allocations.append({"range": [start, end], "distributions": distributions})
            start = end
            if start >= 100:
                break
        return {"selector": selector or _pick(rng, _BUCKET_SELECTORS), "salt": self.salt(), "allocations": allocations}

    # --- flag shapes ---------------------------------------------------------------------------

    def new_key(self, kind: str) -> str:
        return "%s%s-%d" % (self.prefix, kind, len(self.flags))

    def dependencies_and_gates(self) -> Tuple[List[str], List[Dict[str, Any]]]:
        """Dependencies to declare (all on earlier flags, so never a cycle) and gate conditions on them."""
        rng = self.rng
        deps: List[str] = []
        gates: List[Dict[str, Any]] = []
        if self.holdouts and rng.random() < 0.3:
            holdout = _pick(rng, self.holdouts)
            deps.append(holdout)
            gates.append({"selector": ["result", holdout, "key"], "op": "is not", "values": ["holdout"]})
        if self.mutexes and rng.random() < 0.25:
            mutex = _pick(rng, self.mutexes)
            deps.append(mutex["key"])
            gates.append({"selector": ["result", mutex["key"], "key"], "op": "is", "values": [_pick(rng, mutex["slots"])]})
        if self.flags and rng.random() < 0.15:
            parent = _pick(rng, self.flags)["key"]
            if parent not in deps:
                deps.append(parent)
            gates.append({"selector": ["result", parent, "key"], "op": _pick(rng, ["is", "is not"]),
                          "values": [_pick(rng, ["on", "off", "treatment", "control"])]})
        if rng.random() < 0.04:
            deps.append("ghost-%d" % rng.randint(1, 3))  # a dependency that is not stored
        return deps, gates

    def finish(self, flag: Dict[str, Any], deps: List[str]) -> None:
        rng = self.rng
        if deps:
            flag["dependencies"] = deps
        elif rng.random() < 0.1:
            flag["dependencies"] = [] if rng.random() < 0.5 else None
        self.flags.append(flag)

    def holdout(self) -> None:
        rng = self.rng
        key = self.new_key("holdout")
        percentage = rng.randint(1, 20)
        flag = {
            "key": key,
            "metadata": self.flag_metadata("holdout-group"),
            "variants": {"holdout": {"key": "holdout", "value": "holdout", "payload": None},
                         "on": {"key": "on", "value": "on"}},
            "segments": [{"metadata": {"segmentName": "All Other Users"},
                          "bucket": {"selector": ["context", "user", "device_id"], "salt": self.salt(),
                                     "allocations": [{"range": [0, percentage], "distributions": [
                                         {"variant": "holdout", "range": [0, FULL_DISTRIBUTION]}]}]},
                          "variant": "on"}],
        }
        self.finish(flag, [])
        self.holdouts.append(key)

    def mutex(self) -> None:
        rng = self.rng
        key = self.new_key("mutex")
        slots = ["slot-%d" % i for i in range(1, rng.randint(2, 4) + 1)]
        flag = {
            "key": key,
            "metadata": self.flag_metadata("mutual-exclusion-group"),
            "variants": {**{slot: {"key": slot, "value": slot} for slot in slots},
                         "unallocated": {"key": "unallocated", "value": "unallocated"}},
            "segments": [{"metadata": {"segmentName": "All Other Users"},
                          "bucket": self.bucket(slots, ["context", "user", "device_id"]), "variant": "unallocated"}],
        }
        self.finish(flag, [])
        self.mutexes.append({"key": key, "slots": slots})

    def release(self) -> None:
        rng = self.rng
        key = self.new_key("release")
        names = ["on"] if rng.random() < 0.7 else ["on", "beta"]
        deps, gates = self.dependencies_and_gates()
        segments = []
        for _ in range(_pick(rng, [1, 1, 2, 3])):
            conditions = self.conditions()
            if gates and conditions:
                conditions = [group + gates for group in conditions]
            segment: Dict[str, Any] = {"conditions": conditions, "variant": _pick(rng, names)}
            if rng.random() < 0.6:
                segment["metadata"] = {"segmentName": "rule %d" % len(segments)}
            if rng.random() < 0.04:
                segment["variant"] = "missing-variant"  # not in variants: the next segment is tried
            if rng.random() < 0.04:
                segment["metadata"] = {"segmentName": "m", "m": "segment"}
            segments.append(segment)
        if rng.random() < 0.3:
            segments.append({"bucket": self.bucket(names, miss=rng.random() < 0.3), "variant": "off",
                             "metadata": {"segmentName": "rollout"}})
        if rng.random() < 0.92:
            catch_all: Dict[str, Any] = {"variant": "off"}
            if rng.random() < 0.8:
                catch_all["metadata"] = {"segmentName": "All Other Users"}
            segments.append(catch_all)
        flag = {"key": key, "metadata": self.flag_metadata("release"), "variants": self.variants(names),
                "segments": segments}
        self.finish(flag, deps)

    def experiment(self) -> None:
        rng = self.rng
        key = self.new_key("exp")
        names = ["control", "treatment"] + (["treatment-2"] if rng.random() < 0.2 else [])
        deps, gates = self.dependencies_and_gates()
        segments: List[Dict[str, Any]] = []
        if rng.random() < 0.3:  # an allow-list segment
            segments.append({"conditions": [[{"selector": ["context", "user", "user_id"], "op": "is",
                                              "values": ["u%d" % rng.randint(0, 30) for _ in range(3)]}]],
                             "variant": _pick(rng, names), "metadata": {"segmentName": "allow list"}})
        targeted: Dict[str, Any] = {"bucket": self.bucket(names, miss=rng.random() < 0.3),
                                    "variant": "off" if rng.random() < 0.9 else None,
                                    "metadata": {"segmentName": "All Other Users"}}
        conditions = self.conditions() if rng.random() < 0.4 else None
        if gates:
            conditions = [group + gates for group in (conditions or [[]])]
        if conditions is not None:
            targeted["conditions"] = conditions
        segments.append(targeted)
        if rng.random() < 0.7:
            segments.append({"variant": "off", "metadata": {"segmentName": "All Other Users"}})
        flag = {"key": key, "metadata": self.flag_metadata("experiment"), "variants": self.variants(names),
                "segments": segments}
        self.finish(flag, deps)

    def group_flag(self) -> None:
        rng = self.rng
        key = self.new_key("group")
        names = ["on"]
        condition = {"selector": ["context", "groups", "org", "group_properties", "tier"], "op": _pick(rng, ["is", "is not", "contains"]),
                     "values": [_pick(rng, ["gold", "silver", "GOLD", "(none)"])]}
        flag = {"key": key, "metadata": self.flag_metadata("release"), "variants": self.variants(names),
                "segments": [{"conditions": [[condition]], "variant": "on",
                              "bucket": self.bucket(names, ["context", "groups", "org", "group_name"])},
                             {"variant": "off"}]}
        deps, gates = self.dependencies_and_gates()
        if gates:
            flag["segments"][0]["conditions"][0].extend(gates)
        self.finish(flag, deps)

    def reader(self) -> None:
        """Reads another flag's result without declaring it: visible only if that flag ran earlier."""
        rng = self.rng
        key = self.new_key("reader")
        other = _pick(rng, self.flags)["key"] if self.flags else "nothing"
        flag = {"key": key, "metadata": self.flag_metadata("release"), "variants": self.variants(["on"]),
                "segments": [{"conditions": [[{"selector": ["result", other, "key"], "op": _pick(rng, ["is", "is not"]),
                                               "values": [_pick(rng, ["on", "off", "control", "(none)"])]}]],
                              "variant": "on"},
                             {"variant": "off"}]}
        self.finish(flag, [])


def generate_flags(seed: int, count: int, prefix: str = "") -> List[Dict[str, Any]]:
    """``count`` flag configs as the flags endpoint returns them, in a shuffled storage order."""
    rng = random.Random(seed)
    builder = _FlagBuilder(rng, prefix)
    shapes = ([builder.release] * 40 + [builder.experiment] * 30 + [builder.group_flag] * 8 +
              [builder.reader] * 6 + [builder.holdout] * 3 + [builder.mutex] * 3)
    if count >= 3:
        builder.holdout()
        builder.mutex()
    while len(builder.flags) < count:
        _pick(rng, shapes)()
    flags = builder.flags[:count]
    # Storage order decides which results an undeclared reader sees; dependencies fix the rest.
    order = list(range(len(flags)))
    rng.shuffle(order)
    for flag in flags:  # guard the contract the reference needs: regexes compile
        for segment in flag["segments"]:
            for group in segment.get("conditions") or []:
                for condition in group:
                    if condition["op"].startswith("regex"):
                        for value in condition["values"]:
                            re.compile(value)
    return [flags[i] for i in order]


def generate_simple_flags(count: int, prefix: str = "simple-") -> List[Dict[str, Any]]:
    """``count`` flags of the shape SDK comparisons use: one rule of two conditions (a country and
    a plan) leading to a 50/50 rollout on the user id, everyone else off."""
    flags = []
    for n in range(count):
        key = "%s%d" % (prefix, n)
        flags.append({
            "key": key,
            "metadata": {"deployed": True, "evaluationMode": "local", "flagType": "experiment", "flagVersion": 1},
            "variants": {"off": {"key": "off", "metadata": {"default": True}},
                         "control": {"key": "control", "value": "control"},
                         "treatment": {"key": "treatment", "value": "treatment"}},
            "segments": [
                {"conditions": [[
                    {"selector": ["context", "user", "country"], "op": "is", "values": ["US", "DE", "FR"]},
                    {"selector": ["context", "user", "user_properties", "plan"], "op": "is not", "values": ["free"]},
                ]],
                 "bucket": {"selector": ["context", "user", "user_id"], "salt": "salt-%d" % n, "allocations": [
                     {"range": [0, 100], "distributions": [{"variant": "control", "range": [0, 21474837]},
                                                           {"variant": "treatment", "range": [21474837, 42949673]}]}]},
                 "metadata": {"segmentName": "rollout"}},
                {"variant": "off", "metadata": {"segmentName": "All Other Users"}},
            ],
        })
    return flags


# --- users -------------------------------------------------------------------------------------

def generate_users(seed: int, count: int) -> List[Dict[str, Any]]:
    """User specs: ``{"fields": <User(**fields)>, "extra": <attributes set afterwards>}``."""
    rng = random.Random(seed)
    users = []
    for index in range(count):
        fields: Dict[str, Any] = {}
        if rng.random() < 0.9:
            fields["device_id"] = _pick(rng, ["d%d" % rng.randint(0, 5000), "d%d" % rng.randint(0, 5000), "",
                                              "dév-%d" % index, "日本-%d" % index, _pick(rng, _DEVICE_IDS)])
        if rng.random() < 0.75:
            fields["user_id"] = _pick(rng, ["u%d" % index, "ü%d" % index, _pick(rng, _USER_IDS), _pick(rng, _USER_IDS)])
        for name, pool, probability in (("country", _COUNTRIES, 0.6), ("city", _CITIES, 0.3),
                                        ("platform", _PLATFORMS, 0.5), ("language", _LANGUAGES, 0.3),
                                        ("version", _VERSIONS, 0.5), ("os", ["iOS 17", "Android 14"], 0.2)):
            if rng.random() < probability:
                fields[name] = _pick(rng, pool)
        if rng.random() < 0.85:
            properties: Dict[str, Any] = {}
            for name, pool in PROPERTY_POOLS.items():
                roll = rng.random()
                if roll < 0.7:
                    properties[name] = _pick(rng, pool)
                elif roll < 0.8:
                    properties[name] = _pick(rng, _FALSY)
                elif roll < 0.83:
                    properties[name] = None
            fields["user_properties"] = properties
        elif rng.random() < 0.3:
            fields["user_properties"] = {}
        if rng.random() < 0.2:
            fields["cohort_ids"] = _pick(rng, [["c1"], ["c1", "c2"], [], ["x"]])
        if rng.random() < 0.4:
            org = _pick(rng, _ORGS)
            roll = rng.random()
            if roll < 0.7:
                fields["groups"] = {"org": [org] + (["second"] if rng.random() < 0.2 else [])}
            elif roll < 0.8:
                fields["groups"] = {"org": org}  # not a list: skipped
            elif roll < 0.9:
                fields["groups"] = {}
            else:
                fields["groups"] = {"org": [], "team": ["red"]}
            if rng.random() < 0.7:
                properties = {}
                if rng.random() < 0.8:
                    properties["tier"] = _pick(rng, _TIERS)
                if rng.random() < 0.6:
                    properties["seats"] = _pick(rng, _SEATS)
                fields["group_properties"] = {"org": {org: properties}}
            if rng.random() < 0.3:
                fields["group_cohort_ids"] = {"org": {org: _pick(rng, [["gc1"], [], ["gc1", "gc2"]])}}
        extra: Dict[str, Any] = {}
        if rng.random() < 0.1:
            extra["extra_attr"] = _pick(rng, _EXTRA)
        users.append({"fields": fields, "extra": extra})
    return users


def build_user(spec: Dict[str, Any], user_class: Any) -> Any:
    """A ``User`` (of whichever SDK ``user_class`` comes from) built from a generated spec."""
    user = user_class(**spec["fields"])
    for name, value in spec["extra"].items():
        setattr(user, name, value)
    return user


def generate_key_subsets(seed: int, flags: List[Dict[str, Any]], count: int) -> List[List[str]]:
    """Lists of flag keys to pass as ``flag_keys`` (lists keep their order), with unknown keys mixed in."""
    rng = random.Random(seed)
    keys = [flag["key"] for flag in flags]
    subsets = []
    for _ in range(count):
        size = _pick(rng, [1, 1, 2, 3, 5, 10])
        subset = [_pick(rng, keys) for _ in range(size)]
        if rng.random() < 0.2:
            subset.append("no-such-flag")
        subsets.append(subset)
    return subsets


# --- condition fuzzing ---------------------------------------------------------------------------
# Many one-condition flags over a few properties, and users holding odd values in them: the same
# differential, aimed at coercion corners rather than at realistic shapes.

_FUZZ_SCALARS = [
    "0", "-0", "0.0", "00", "1", "01", "1.0", "1.00", "1e0", "1E3", "1e309", "-1e309", "1e-7", "Infinity", "-inf",
    "NaN", "nan", " 7", "7 ", "\t7\n", "7\u00a0", "+.5", "5.", ".", "-", "1__0", "1_0", "0b1", "0o7", "٣", "１２", "²",
    "1.2.3", "1.2.3-", "1.2.3-a.b", "1.2.3-a..b", "1.2", "1.2.3\n", "v1", "01.02.03", "1.2.3-ü", "1.2.3-_", "1.2.3--x",
    "true", "True", "TRUE", "tRUE", "false", "False", "yes", "no", "null", "None", "(none)", "", " ", "a", "A", "ab",
    "ß", "SS", "İ", "i̇", "ǅ", "Ω", "ω", "😀", "日本", "[", "]", "[]", "[ ]", " []", "[[]]", "[1]", "[1.0]", "[1e5]",
    "[true]", "[null]", "[NaN]", "[\"a\"]", "[\"A\",\"a\"]", "[\"\\u00fc\"]", "[{}]", "[[1, 2]]", "[1,", "{}", "{\"a\": 1}",
    "\"s\"", "12345678901234567890", "-12", "1,5", "1.5.", "a@b.c", "x\ny", "\\d",
]
_FUZZ_OBJECTS = [
    0, 1, -1, 7, 10, 1.0, 0.5, -0.0, 1e16, 1e20, 1e-7, 2 ** 63, True, False, None, [], {}, [None], [1], [1.0], [True],
    ["a", 1, True, None, 1.5], [["a"]], [{"a": "ü"}], {"a": 1}, {"k": [1, 2]}, ["", "a"], ["true", "TRUE"], [[]],
    [0], [False], float("inf"), float("-inf"),
]
_FUZZ_FILTERS = _FUZZ_SCALARS + ["5", "7", "10", "1e3", "-1", "1.2.0", "2.0.0", "1.2.3-a", "[1, 2]", "{\"a\": 1}",
                                 "[\"a\", 1, true, null, 1.5]", "1e+20", "1e+16", "1.5", "inf", "-inf"]
_FUZZ_REGEXES = ["^$", "^\\d+$", "\\d", "(?i)^true$", "^\\[", "ü", "^.$", "\\s", "a|b", "^-?\\d+(\\.\\d+)?$", "(?s)x.y"]
FUZZ_PROPERTIES = 8


def generate_condition_flags(seed: int, count: int) -> List[Dict[str, Any]]:
    """``count`` flags, each ``on`` when one fuzzed condition holds and the default ``off`` otherwise."""
    rng = random.Random(seed)
    flags = []
    for index in range(count):
        op = _pick(rng, list(OPERATORS) + ["glob match"])
        if op.startswith("regex"):
            values = [_pick(rng, _FUZZ_REGEXES) for _ in range(_pick(rng, [1, 1, 2]))]
        else:
            values = [_pick(rng, _FUZZ_FILTERS) for _ in range(_pick(rng, [0, 1, 1, 1, 2, 2, 3]))]
        selector = ["context", "user", "user_properties", "p%d" % rng.randrange(FUZZ_PROPERTIES)]
        flags.append({"key": "c-%d" % index, "metadata": {"op": op},
                      "variants": {"on": {"key": "on"}, "off": {"key": "off", "metadata": {"default": True}}},
                      "segments": [{"conditions": [[{"selector": selector, "op": op, "values": values}]], "variant": "on"},
                                   {"variant": "off"}]})
    return flags


def generate_fuzz_users(seed: int, count: int) -> List[Dict[str, Any]]:
    rng = random.Random(seed)
    users = []
    for _ in range(count):
        properties = {}
        for index in range(FUZZ_PROPERTIES):
            roll = rng.random()
            if roll < 0.6:
                properties["p%d" % index] = _pick(rng, _FUZZ_SCALARS)
            elif roll < 0.9:
                properties["p%d" % index] = _pick(rng, _FUZZ_OBJECTS)
        users.append({"fields": {"user_properties": properties}, "extra": {}})
    return users


def generate_update(seed: int, count: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Two successive flag configs: the second drops some flags, changes some, adds new ones and is
    reshuffled, so that storage order (kept flags keep their place, docs/compatibility.md, 'Storage order') decides what undeclared
    readers see. The two lists never have the same length, so a client's flag count tells them apart."""
    import copy

    rng = random.Random(seed + 1)
    flags = generate_flags(seed, count, prefix="u%d-" % seed)
    first = flags[: int(count * 0.7)]
    kept = []
    for flag in first:
        if rng.random() < 0.2:
            continue
        flag = copy.deepcopy(flag)
        if rng.random() < 0.3:
            flag["segments"].reverse()
            flag["metadata"] = dict(flag.get("metadata") or {}, flagVersion=99)
        kept.append(flag)
    second = kept + flags[int(count * 0.7):]
    rng.shuffle(second)
    if len(second) == len(first):
        second.pop()
    return first, second


# --- regex edge cases ----------------------------------------------------------------------------
# Patterns where Python's `re` (what the reference runs) and a linear-time engine could disagree:
# Unicode classes, `$` before a final newline, word boundaries, flags, Python-only syntax
# (lookarounds, backreferences, conditionals, atomic groups), and values built to tell them apart.
# Every pattern compiles under this Python's `re` (atomic groups and possessive repeats need 3.11:
# older ones leave them out); the values are short enough for backtracking.

_REGEX_PATTERNS = [
    "\\w+@\\w+", "^\\w+$", "\\w", "\\W", "[\\w.+-]+@[\\w-]+\\.\\w+", "^[\\w\\s]+$", "[^\\w]", "[\\W\\d]", "\\d",
    "^\\d+$", "\\D", "[^\\d]", "\\s", "^\\s+$", "\\S+", "[\\s\\S]", "[^\\s]x", "a$", "^$", "$", "a$\\n", "a$|b",
    "(a$)", "(a$|c)", "(?:a|b)$", "a\\n?$", "a$b", "x\\Z", "\\Aa", "^a", "(?m)^b", "(?m)a$", "(?m)^$", "(?s)a.b",
    "a.b", ".", "^.$", "^.+$", "(?a)\\w+$", "(?a)\\d", "(?a)\\s", "(?u)\\w", "(?a:\\w)\\w", "\\bfoo\\b", "\\Bo",
    "\\b", "(?a)\\bfoo", "(?i)straße", "(?i)ß", "(?i)k", "(?i)[a-z]+$", "(?i:a)b", "(?=a)a", "(?<!x)y", "a(?!b)",
    "(a)\\1", "(?P<n>a)(?P=n)", "(a)?(?(1)b|c)", "(?>a+)b", "a*+b", "a{2,3}", "a{1001}", "a*?b", "(?:ab)+",
    "\\x41", "\\u00fc", "\\N{LATIN SMALL LETTER U WITH DIAERESIS}", "[\\u00e0-\\u00ff]", "[\\ud7ff-\\ue001]",
    "\\n", "(?x) a b # comment", "", "(?:)", "\\$", "[$]", "^", "(a+)+$", "(a|aa)+b", "ü", "日本", "😀",
    "[😀-😂]", "\\.", "[.]", "\\\\", "[\\]]", "[a-]", "[^a]", "\\t", "\\0", "\\x00", "a|", "|a", "(|a)b",
    "^-?\\d+(\\.\\d+)?$", "^[0-9]+$", "[^\\x00-\\x7f]", "\\Z", "\\A", "\\A\\Z", "^\\Z", "(?a)\\B", "(?a)\\Bx",
    "(?a)\\b", "\\B$", "^\\B",
]


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


REGEX_PATTERNS = [pattern for pattern in _REGEX_PATTERNS if _compiles(pattern)]
REGEX_VALUES = [
    "a", "b", "ab", "ba", "aab", "a\n", "a\n\n", "\na", "ab\n", "\n", "", "x", "x\n", "foo", "foo bar", " foo ",
    "foo_bar", "foobar", "afoo", "foo\n", "a@b", "x@y.z", "ü@ö", "a.b@c-d.ef", "@", "a@", "日本", "日本@例え",
    "123", "٣", "١٢٣", "１２", "²", "Ⅻ", "12a", "-1.5", "1.", "a\u00a0b", "\u00a0", "\x1c", "\x85", "\u2028",
    "\u3000", "\v", "\f", "\t", " ", "Straße", "STRASSE", "strasse", "ß", "ẞ", "K", "k", "\u212a", "ſ", "İ", "ı",
    "i̇", "e\u0301", "\u0301", "_", "ǅ", "ª", "º", "·", "a\u200bb", "😀", "😁x", "a\x00b", "\x00", "a.b", "a\nb",
    "aaaa", "aaaaab", "aaaaaaaaaaaa!", "xy", "x\ny", "c", "ac", "cb", "$", "\\", "]", "-", "ü", "é",
    "\ud800x", "a\udfff", "\U0010ffff", "\ue000", "\ud7ff", "a٣b", "٣x", "ü ", "x-y",
]


def generate_regex_flags(seed: int, count: int) -> List[Dict[str, Any]]:
    """``count`` one-condition flags with `regex match` / `regex does not match` on REGEX_PATTERNS.

    The first flags take every pattern once, alone, so each is compared whatever the seed.
    """
    rng = random.Random(seed)
    flags = []
    for index in range(count):
        op = "regex match" if rng.random() < 0.7 else "regex does not match"
        if index < len(REGEX_PATTERNS):
            values = [REGEX_PATTERNS[index]]
        else:
            values = [_pick(rng, REGEX_PATTERNS) for _ in range(_pick(rng, [1, 1, 2, 3]))]
        selector = ["context", "user", "user_properties", "p%d" % rng.randrange(FUZZ_PROPERTIES)]
        flags.append({"key": "r-%d" % index, "metadata": {"op": op},
                      "variants": {"on": {"key": "on"}, "off": {"key": "off", "metadata": {"default": True}}},
                      "segments": [{"conditions": [[{"selector": selector, "op": op, "values": values}]], "variant": "on"},
                                   {"variant": "off"}]})
    return flags


def generate_regex_users(seed: int, count: int) -> List[Dict[str, Any]]:
    """Users whose properties hold REGEX_VALUES, alone, joined, in lists, or as numbers."""
    rng = random.Random(seed)
    users = []
    for _ in range(count):
        properties: Dict[str, Any] = {}
        for index in range(FUZZ_PROPERTIES):
            roll = rng.random()
            if roll < 0.7:
                properties["p%d" % index] = _pick(rng, REGEX_VALUES)
            elif roll < 0.8:
                properties["p%d" % index] = _pick(rng, REGEX_VALUES) + _pick(rng, REGEX_VALUES)
            elif roll < 0.9:
                properties["p%d" % index] = [_pick(rng, REGEX_VALUES) for _ in range(_pick(rng, [1, 2]))]
            elif roll < 0.95:
                properties["p%d" % index] = _pick(rng, [1, 12, 1.5, True, {"k": "ü"}])
        users.append({"fields": {"user_properties": properties}, "extra": {}})
    return users


# --- conditions on whole flag results --------------------------------------------------------------
# ["result", flag] selects another flag's whole result: the reference compares the repr of its
# result object. Parents with varied values, payloads and metadata, and readers after them (and a
# few before, where the result is still missing) using text operators on fragments of that repr.

_RESULT_FRAGMENTS = [
    "EvaluationVariant(", "key='on'", "key='control'", "value='on'", "value=None", "payload=None", "metadata={",
    "'segmentName'", "'default': True", "'flagType': 'release'", "{\"key\": \"on\"", "\"key\"", "payload={'color'",
    "value=True", "value=10", "2.5", "ünï", "(none)", "on", "None)", "'m': 'variant'",
]
_RESULT_REGEXES = ["^EvaluationVariant\\(key='(on|control)'", "^\\{", "metadata=\\{\\}\\)$", "value=\\d", "\\)$",
                   "payload=\\[", "key=None"]


def generate_result_flags(seed: int, count: int) -> List[Dict[str, Any]]:
    """Parent flags of varied shapes, and flags with conditions on a parent's whole result."""
    rng = random.Random(seed)
    builder = _FlagBuilder(rng, "w%d-" % seed)
    for _ in range(max(2, count // 3)):
        _pick(rng, [builder.release, builder.experiment, builder.holdout])()
    parents = [flag["key"] for flag in builder.flags]
    flags = list(builder.flags)
    for index in range(count - len(flags)):
        op = _pick(rng, ["is", "is not", "contains", "contains", "does not contain", "regex match",
                         "regex does not match", "set contains", "set does not contain any"])
        if op.startswith("regex"):
            values = [_pick(rng, _RESULT_REGEXES)]
        else:
            values = [_pick(rng, _RESULT_FRAGMENTS) for _ in range(_pick(rng, [1, 1, 2]))]
        reader = {"key": "w%d-whole-%d" % (seed, index), "metadata": {"op": op},
                  "variants": {"on": {"key": "on"}, "off": {"key": "off", "metadata": {"default": True}}},
                  "segments": [{"conditions": [[{"selector": ["result", _pick(rng, parents)], "op": op,
                                                 "values": values}]], "variant": "on"},
                               {"variant": "off"}]}
        if rng.random() < 0.1:
            flags.insert(rng.randrange(len(flags)), reader)  # maybe before its parent: the result is missing
        else:
            flags.append(reader)
    return flags


# --- cohort targeting ----------------------------------------------------------------------------
# Flags whose segments test user and group cohorts (in / not in, several cohorts, cohorts that fail
# to download or change between refreshes), the cohorts a stand-in serves in two phases, and users
# who are members, non-members, id-less or carry cohort ids of their own.

#: id -> (group type the API answers, members in phase 1, members in phase 2 or None: unchanged).
#: ``fail`` marks what the endpoint answers instead: "500", "413" (too large), "404", or
#: "500-later" (200 in phase 1, 500 in phase 2: the loaded copy is kept).
COHORT_SPECS = {
    "uc1": ("User", ["u0", "u1", "u2", "ü1"], None, None),
    "uc2": ("User", ["u2", "u3", "u4"], ["u4", "u5", "u6"], None),
    "uc3": ("User", ["u7", "u8", "", "d1"], ["u7"], None),
    "uc-big": ("User", ["u%d" % i for i in range(30)], None, "413"),
    "uc-fail": ("User", ["u0"], None, "500"),
    "uc-flaky": ("User", ["u1", "u9"], None, "500-later"),
    "uc-missing": ("User", [], None, "404"),
    "uc-org": ("org", ["u0", "acme"], None, None),  # referenced as a user cohort, answered as an org cohort
    "oc1": ("org", ["acme", "globex"], None, None),
    "oc2": ("org", ["initech", "日本社"], ["acme"], None),
    "tc1": ("team", ["red", "blue"], ["red"], None),
}
COHORT_MAX_SIZE = 20
_COHORT_SELECTORS = [
    (["context", "user", "cohort_ids"], ["uc1", "uc2", "uc3", "uc-big", "uc-fail", "uc-flaky", "uc-missing", "uc-org",
                                         "oc1", "unknown"]),
    (["context", "groups", "org", "cohort_ids"], ["oc1", "oc2", "uc1", "uc-org"]),
    (["context", "groups", "team", "cohort_ids"], ["tc1", "oc1"]),
]


def generate_cohort_flags(seed: int, count: int) -> List[Dict[str, Any]]:
    """Flags whose segments hold cohort conditions, sometimes beside a plain one."""
    rng = random.Random(seed)
    flags = []
    for index in range(count):
        segments = []
        for segment_index in range(rng.randint(1, 3)):
            groups = []
            for _ in range(rng.randint(1, 2)):
                conditions = []
                for _ in range(rng.randint(1, 2)):
                    if rng.random() < 0.85:
                        selector, pool = _pick(rng, _COHORT_SELECTORS)
                        conditions.append({"selector": list(selector),
                                           "op": _pick(rng, ["set contains any", "set contains any",
                                                             "set does not contain any"]),
                                           "values": rng.sample(pool, rng.randint(1, min(3, len(pool))))})
                    else:
                        conditions.append({"selector": ["context", "user", "platform"], "op": "is",
                                           "values": ["iOS", "Web"]})
                groups.append(conditions)
            segments.append({"conditions": groups, "variant": "v%d" % segment_index,
                             "metadata": {"segmentName": "s%d" % segment_index}})
        if rng.random() < 0.7:
            segments.append({"variant": "off"})
        variants = {"v%d" % i: {"key": "v%d" % i, "value": "v%d" % i} for i in range(3)}
        variants["off"] = {"key": "off", "metadata": {"default": True}}
        flags.append({"key": "cohort-%d" % index, "metadata": {"flagType": "release", "flagVersion": index},
                      "variants": variants, "segments": segments})
    return flags


def generate_cohort_users(seed: int, count: int) -> List[Dict[str, Any]]:
    """User specs for cohort flags: ids in and out of the cohorts, groups of both types, odd shapes."""
    rng = random.Random(seed)
    user_ids = ["u%d" % i for i in range(10)] + ["ü1", "", "d1", "acme", "zz"]
    users = []
    for _ in range(count):
        fields: Dict[str, Any] = {}
        if rng.random() < 0.85:
            fields["user_id"] = _pick(rng, user_ids)
        if rng.random() < 0.5:
            fields["device_id"] = _pick(rng, ["d1", "d2", "u0"])
        if rng.random() < 0.3:
            fields["platform"] = _pick(rng, ["iOS", "Android"])
        if rng.random() < 0.25:
            fields["cohort_ids"] = _pick(rng, [["uc1"], ["uc2", "uc-fail"], [], ["unknown"]])
        roll = rng.random()
        if roll < 0.6:
            groups: Dict[str, Any] = {}
            if rng.random() < 0.8:
                groups["org"] = _pick(rng, [["acme"], ["globex"], ["initech"], ["日本社"], ["other"], ["acme", "x"],
                                            [""], [], "acme"])
            if rng.random() < 0.5:
                groups["team"] = _pick(rng, [["red"], ["blue"], ["green"]])
            fields["groups"] = groups
        if rng.random() < 0.1:
            fields["group_cohort_ids"] = {"org": {"acme": ["oc2"]}}
        users.append({"fields": fields, "extra": {}})
    return users
