"""Bucketing (docs/compatibility.md, 'Bucketing'): murmur3 x86_32, allocation = h % 100, distribution = h // 100."""

import mmh3
import pytest

from _flagkit import run

from amplitude_experiment import User

# Vectors from docs/compatibility.md, 'Bucketing' plus ones computed with the reference's own hash.
VECTORS = {
    "": 0,
    "a": 1009084850,
    "ab": 2613040991,
    "abc": 3017643002,
    "abcd": 1139631978,
    "abcde": 3902511862,
    "hello": 613153351,
    "The quick brown fox jumps over the lazy dog": 776992547,
    "日本": 3302619458,
    "abc/d2": 3686418111,
    "abc/d4": 1873498202,
    "abc/d1": 2635945459,
    "s/False": 3821813729,
    "s/0": 3852059041,
    's/["x", "y"]': 3417991398,
    "s/{}": 2546727927,
    "s/日本😀": 925437562,
    "s/1.0": 123774820,
    "s/True": 2837483649,
    "salt/" + "x" * 1000: 79966346,
}


@pytest.mark.parametrize("text", sorted(VECTORS), ids=lambda t: repr(t)[:30])
def test_murmur3_vectors(text):
    """The primitive the engine hashes with: unsigned 32-bit, seed 0, UTF-8."""
    assert mmh3.hash(text, 0, False) == VECTORS[text]


def pinpoint_flag(salt, selector, hashed):
    """A flag that yields ``hit`` only for the exact allocation and distribution of ``hashed``."""
    allocation, distribution = hashed % 100, hashed // 100
    return {
        "key": "B",
        "variants": {"hit": {"key": "hit"}, "near": {"key": "near"}, "off": {"key": "off", "metadata": {"default": True}}},
        "segments": [{
            "bucket": {"selector": selector, "salt": salt, "allocations": [
                {"range": [allocation - 1 if allocation else 99, allocation], "distributions": [
                    {"variant": "near", "range": [0, 42949673]}]},
                {"range": [allocation, allocation + 1], "distributions": [
                    {"variant": "near", "range": [0, distribution]},
                    {"variant": "hit", "range": [distribution, distribution + 1]},
                    {"variant": "near", "range": [distribution + 1, 42949673]}]},
            ]},
            "variant": "off",
        }],
    }


@pytest.mark.parametrize("value,key", [
    ("d2", "abc/d2"), ("d4", "abc/d4"), ("d1", "abc/d1"),
])
def test_device_id_buckets_exactly(value, key):
    flag = pinpoint_flag("abc", ["context", "user", "device_id"], VECTORS[key])
    assert run([flag], User(device_id=value))["B"][0] == "hit"


@pytest.mark.parametrize("value,key", [
    (False, "s/False"), (0, "s/0"), (["x", "y"], 's/["x", "y"]'), ({}, "s/{}"), ("日本😀", "s/日本😀"),
    (1.0, "s/1.0"), (True, "s/True"),
])
def test_falsy_and_odd_values_are_bucketed(value, key):
    """Unlike conditions, 0 and False are bucketing values (Q8); lists and dicts hash as spaced JSON."""
    flag = pinpoint_flag("s", ["context", "user", "user_properties", "p"], VECTORS[key])
    assert run([flag], User(user_properties={"p": value}))["B"][0] == "hit"


@pytest.mark.parametrize("user", [User(), User(device_id=""), User(user_properties={"p": None})],
                         ids=["missing", "empty", "None"])
def test_nothing_to_bucket_gives_segment_variant(user):
    flag = pinpoint_flag("abc", ["context", "user", "device_id"], VECTORS["abc/d2"])
    assert run([flag], user)["B"][0] == "off"


def e9():
    return {"key": "e9", "metadata": {"flagType": "experiment", "flagVersion": 3},
            "variants": {"off": {"key": "off", "metadata": {"default": True}},
                         "control": {"key": "control", "value": "control"},
                         "treatment": {"key": "treatment", "value": "treatment", "metadata": {"note": "v"}}},
            "segments": [{"metadata": {"segmentName": "All Other Users"}, "variant": "off",
                          "bucket": {"selector": ["context", "user", "device_id"], "salt": "abc",
                                     "allocations": [{"range": [0, 50], "distributions": [
                                         {"variant": "control", "range": [0, 21474837]},
                                         {"variant": "treatment", "range": [21474837, 42949673]}]}]}}]}


def test_e9_worked_example():
    assert run([e9()], User(device_id="d2"))["e9"] == (
        "treatment", "treatment", None,
        {"flagType": "experiment", "flagVersion": 3, "segmentName": "All Other Users", "note": "v"})
    assert run([e9()], User(device_id="d4"))["e9"][0] == "control"
    assert run([e9()], User(device_id="d1"))["e9"] == (
        "off", None, None, {"flagType": "experiment", "flagVersion": 3, "segmentName": "All Other Users", "default": True})
    assert run([e9()], User())["e9"][0] == "off"


def test_ranges_are_half_open():
    allocation = VECTORS["abc/d2"] % 100  # 11
    flag = e9()
    bucket = flag["segments"][0]["bucket"]
    bucket["allocations"] = [{"range": [0, allocation], "distributions": [{"variant": "control", "range": [0, 42949673]}]}]
    assert run([flag], User(device_id="d2"))["e9"][0] == "off"
    bucket["allocations"][0]["range"] = [allocation, allocation + 1]
    assert run([flag], User(device_id="d2"))["e9"][0] == "control"


def test_later_allocations_are_tried_when_no_distribution_hits():
    flag = e9()
    flag["segments"][0]["bucket"]["allocations"] = [
        {"range": [0, 100], "distributions": [{"variant": "control", "range": [0, 1]}]},
        {"range": [0, 100], "distributions": [{"variant": "treatment", "range": [0, 42949673]}]},
    ]
    assert run([flag], User(device_id="d2"))["e9"][0] == "treatment"


def test_bucket_naming_a_missing_variant_falls_through_to_next_segment():
    flag = e9()
    flag["segments"][0]["bucket"]["allocations"][0]["distributions"][1]["variant"] = "ghost"
    flag["segments"].append({"variant": "control", "metadata": {"segmentName": "fallback"}})
    assert run([flag], User(device_id="d2"))["e9"] == (
        "control", "control", None, {"flagType": "experiment", "flagVersion": 3, "segmentName": "fallback"})


def test_segment_without_variant_and_missed_bucket_yields_nothing():
    flag = e9()
    del flag["segments"][0]["variant"]
    assert "e9" not in run([flag], User(device_id="d1"))
    assert run([flag], User(device_id="d4"))["e9"][0] == "control"


def test_group_bucketing():
    flag = pinpoint_flag("abc", ["context", "groups", "org", "group_name"], VECTORS["abc/d2"])
    assert run([flag], User(groups={"org": ["d2"]}))["B"][0] == "hit"
    assert run([flag], User(groups={"org": "d2"}))["B"][0] == "off"


def test_float_ranges_truncate():
    flag = e9()
    flag["segments"][0]["bucket"]["allocations"] = [
        {"range": [11.9, 12.5], "distributions": [{"variant": "control", "range": [0.7, 42949673.9]}]}]
    assert run([flag], User(device_id="d2"))["e9"][0] == "control"
