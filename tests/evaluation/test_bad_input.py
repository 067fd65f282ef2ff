"""Bad input never raises from evaluate_v2: odd users, odd keys, odd configs."""

import logging
import math

import pytest

import flaggen
from _flagkit import condition, e_flag
from stand_in import Answer

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User, Variant


class Weird:
    def __str__(self):
        raise RuntimeError("no str for you")


class Falsy:
    def __bool__(self):
        raise RuntimeError("no bool either")


def deep_list(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


ODD_USERS = {
    "int ids": User(user_id=5, device_id=7),
    "float ids": User(user_id=1.5, device_id=float("nan")),
    "bool ids": User(user_id=True, device_id=False),
    "all None": User(),
    "nested dict properties": User(user_properties={"p": {"a": {"b": {"c": [1, {"d": None}]}}}, "tags": {"x": 1}}),
    # Start with a match for the generator's "\\w+@\\w+": on a megabyte with no "@" that search is
    # quadratic (in the reference too), which is Python's re, not the engine.
    "huge strings": User(user_id="a@b " + "u" * 1_000_000, device_id="d" * 1_000_000,
                         user_properties={"plan": "a@b " + "x" * 1_000_000, "tags": "[" + "1," * 100_000 + "1]"}),
    "non-ASCII": User(user_id="ユーザー", device_id="😀", country="Türkiye", user_properties={"plan": "straße"}),
    # Lone surrogates only where nothing hashes them; bucketing on them is test_lone_surrogate_bucketing.
    "lone surrogates": User(user_properties={"plan": "\ud83d", "email": "a\udc00@example.com"}, country="\udfff"),
    "user_properties not a dict": User(user_properties="plan=pro"),
    "user_properties a list": User(user_properties=["a", "b"]),
    "groups a list": User(groups=["org"]),
    "groups a string": User(groups="org"),
    "unhashable group name": User(groups={"org": [["acme"]]}, group_properties={"org": {"acme": {}}}),
    "group_properties a list": User(groups={"org": ["acme"]}, group_properties=["x"]),
    "group_properties wrong depth": User(groups={"org": ["acme"]}, group_properties={"org": "gold"}),
    "group_cohort_ids odd": User(groups={"org": ["acme"]}, group_cohort_ids={"org": 5}),
    "cohort_ids a string": User(cohort_ids="c1"),
    "deep JSON string": User(user_properties={"tags": "[" * 100_000 + "]" * 100_000, "plan": "[" * 100_000}),
    "deep Python list": User(user_properties={"tags": deep_list(50_000), "meta": deep_list(50_000)}),
    "huge int in JSON string": User(user_properties={"tags": "[" + "9" * 5000 + "]", "n": "9" * 5000}),
    "objects with raising dunders": User(user_properties={"plan": Weird(), "n": Falsy(), "tags": [Weird()]}),
    "sets, bytes, tuples": User(user_properties={"tags": {"a", "b"}, "plan": b"pro", "n": (1, 2)}, device_id=b"d"),
    "infinities": User(user_properties={"n": math.inf, "score": -math.inf}),
}
for name, value in (("extra attribute", ["a"]), ("extra none", None), ("extra object", Weird())):
    user = User(user_id="u1")
    setattr(user, "extra_attr", value)
    ODD_USERS[name] = user


@pytest.fixture(scope="module")
def flags():
    generated = flaggen.generate_flags(11, 60, prefix="g-")
    bad_regex = e_flag(condition(["context", "user", "user_id"], "regex match", ["(unclosed", "[z-a]"]), key="bad-regex")
    negated = e_flag(condition(["context", "user", "user_id"], "regex does not match", ["*"]), key="bad-negated")
    ints = e_flag(condition(["context", "user", "user_id"], "is", ["5"]), key="int-id")
    return generated + [bad_regex, negated, ints]


@pytest.fixture
def client(stand_in, flags):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, flags))
    logger = logging.getLogger("bad-input-test")
    config = LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll", logger=logger)
    client = LocalEvaluationClient("key", config)
    client.start()
    yield client
    client.stop()


@pytest.mark.parametrize("name", sorted(ODD_USERS))
def test_odd_users_never_raise(client, flags, name):
    user = ODD_USERS[name]
    for flag_keys in (None, [flags[0]["key"]], [f["key"] for f in flags[:7]] + ["nope"]):
        result = client.evaluate_v2(user, flag_keys)
        assert isinstance(result, dict)
        assert all(isinstance(v, Variant) and isinstance(v.metadata, dict) for v in result.values())


def test_most_flags_still_evaluate_for_odd_users(client, flags):
    """A flag that fails on odd input is left out; the rest are evaluated."""
    for name in ("lone surrogates", "objects with raising dunders", "deep Python list", "huge strings"):
        assert len(client.evaluate_v2(ODD_USERS[name])) > len(flags) // 2, name


def test_int_ids_coerce_like_the_reference(client):
    assert client.evaluate_v2(User(user_id=5), ["int-id"])["int-id"].key == "on"


def test_invalid_regex_never_raises(client):
    assert client.evaluate_v2(User(user_id="x"), ["bad-regex"])["bad-regex"].key == "off"
    assert client.evaluate_v2(User(user_id="x"), ["bad-negated"])["bad-negated"].key == "on"


@pytest.mark.parametrize("flag_keys", [["nope"], ["nope", None, 5], [None], [["unhashable"]], "zzz", 5, iter(["nope"]),
                                       {"nope": 1}], ids=repr)
def test_odd_flag_keys(client, flag_keys):
    assert client.evaluate_v2(User(user_id="u"), flag_keys) == {}


def test_none_user_and_non_user_objects(client, flags):
    for user in (None, {"user_id": "u1"}, "u1", 5):
        assert isinstance(client.evaluate_v2(user), dict)


def test_empty_config(stand_in):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, []))
    client = LocalEvaluationClient("key", LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll"))
    client.start()
    try:
        assert client.evaluate_v2(User(user_id="u")) == {}
        assert client.evaluate_v2(User(user_id="u"), ["a"]) == {}
    finally:
        client.stop()


def test_config_failing_validation_keeps_nothing_and_never_raises(stand_in, caplog):
    bad = [{"key": "f", "variants": {}, "segments": [{"conditions": [[{"selector": ["a"], "op": "is", "values": [5]}]]}]}]
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, bad))
    logger = logging.getLogger("bad-config-test")
    client = LocalEvaluationClient("key", LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll", logger=logger))
    with caplog.at_level(logging.ERROR, logger="bad-config-test"):
        client.start()
    try:
        assert client.evaluate_v2(User(user_id="u")) == {}
        assert "'f'" in caplog.text
    finally:
        client.stop()


SURROGATE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import flaggen
from amplitude_experiment import User
from amplitude_experiment.evaluation import compile_flags, evaluate
from amplitude_experiment.local._context import user_to_context
flags = compile_flags(flaggen.generate_flags(11, 60, prefix="g-"))
for device_id in ("\ud800", "a\udfffb", "\ud83d\ude00\ud83d"):
    results, failures = evaluate(flags, user_to_context(User(user_id="u1", device_id=device_id)))
    assert failures and results, (len(failures), len(results))
# A salt with a lone surrogate (JSON "\\ud800"): rejected naming the flag, or the flag is left out.
from amplitude_experiment.evaluation import FlagConfigError
salted = {"key": "salted", "variants": {"on": {"key": "on"}}, "segments": [{"variant": "on", "bucket": {
    "selector": ["context", "user", "device_id"], "salt": "\ud800", "allocations": [
        {"range": [0, 100], "distributions": [{"variant": "on", "range": [0, 42949673]}]}]}}]}
plain = {"key": "plain", "variants": {"on": {"key": "on"}}, "segments": [{"variant": "on"}]}
try:
    salted_set = compile_flags([salted, plain])
except FlagConfigError as error:
    assert error.flag_key == "salted", error
else:
    results, failures = evaluate(salted_set, user_to_context(User(device_id="d1")))
    assert list(results) == ["plain"] and [key for key, _ in failures] == ["salted"], (results, failures)
print("ok")
"""


def test_lone_surrogate_bucketing_does_not_crash_the_process():
    """A device_id or salt with a lone surrogate (a mis-decoded cookie, a JSON "\\ud800" escape) must
    not take the process down (mmh3 5.x segfaults on such a str): the reference raises
    UnicodeEncodeError; ours leaves the bucketed flags out, or rejects the config naming the flag.
    Run in a child so that a crash fails this test instead of killing the test session."""
    import os
    import subprocess
    import sys

    benchmarks = os.path.dirname(flaggen.__file__)
    done = subprocess.run([sys.executable, "-c", SURROGATE_SCRIPT, benchmarks], capture_output=True, timeout=120)
    assert done.returncode == 0, "exit %d: %s" % (done.returncode, done.stderr.decode(errors="replace")[-800:])
    assert done.stdout.strip() == b"ok"


def test_random_garbage_users_never_raise(client):
    import random

    rng = random.Random(8)
    pool = [None, 0, 1, -1.5, math.nan, True, False, "", "x", "\ud800", "[", "[1, 2]", "1.2.3-", [], [None], ["a", 1],
            [[1]], {}, {"org": ["a"]}, {"org": "a"}, {"org": [["a"]]}, {"org": {"a": {"tier": "gold"}}}, {"a": {"b": {}}},
            ("t",), {"s"}, b"b", Weird(), Falsy(), deep_list(200)]
    fields = ["device_id", "user_id", "country", "version", "user_properties", "groups", "group_properties",
              "group_cohort_ids", "cohort_ids", "library"]
    for _ in range(1500):
        user = User()
        for name in fields:
            if rng.random() < 0.5:
                setattr(user, name, pool[rng.randrange(len(pool))])
        if rng.random() < 0.3:
            user.user_properties = {key: pool[rng.randrange(len(pool))] for key in ("plan", "n", "tags", "beta", "meta")}
        assert isinstance(client.evaluate_v2(user), dict)
