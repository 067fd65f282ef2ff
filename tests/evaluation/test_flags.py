"""Evaluating one flag (docs/compatibility.md, 'Evaluating a flag', 'Metadata'): segments in order, variants, defaults, metadata merge."""

from _flagkit import condition, e_flag, run

from amplitude_experiment import User

ALWAYS_FALSE = [[condition(["context", "user", "user_id"], "is", ["nobody"])]]


def flag_with(segments, variants=None, metadata=None):
    flag = {"key": "F", "segments": segments,
            "variants": variants if variants is not None else {
                "on": {"key": "on", "value": "on"}, "off": {"key": "off", "metadata": {"default": True}}}}
    if metadata is not None:
        flag["metadata"] = metadata
    return flag


def test_first_matching_segment_wins():
    flag = flag_with([{"conditions": ALWAYS_FALSE, "variant": "off"}, {"variant": "on"}, {"variant": "off"}])
    assert run([flag])["F"][0] == "on"


def test_no_segment_yields_means_absent():
    assert run([flag_with([{"conditions": ALWAYS_FALSE, "variant": "on"}])]) == {}
    assert run([flag_with([])]) == {}


def test_segment_naming_a_missing_variant_continues():
    flag = flag_with([{"variant": "ghost", "metadata": {"segmentName": "a"}},
                      {"variant": "on", "metadata": {"segmentName": "b"}}])
    assert run([flag])["F"] == ("on", "on", None, {"segmentName": "b"})


def test_segment_without_variant_continues():
    assert run([flag_with([{"metadata": {"segmentName": "a"}}, {"variant": "off"}])])["F"][0] == "off"


def test_metadata_merge_order_variant_over_segment_over_flag():
    flag = flag_with([{"variant": "on", "metadata": {"m": "segment", "s": 1}}],
                     variants={"on": {"key": "on", "metadata": {"m": "variant", "v": 2}}},
                     metadata={"m": "flag", "f": 0})
    assert run([flag])["F"][3] == {"m": "variant", "f": 0, "s": 1, "v": 2}
    flag["variants"]["on"].pop("metadata")
    assert run([flag])["F"][3] == {"m": "segment", "f": 0, "s": 1}
    flag["segments"][0].pop("metadata")
    assert run([flag])["F"][3] == {"m": "flag", "f": 0}
    flag.pop("metadata")
    assert run([flag])["F"][3] == {}


def test_metadata_key_order_is_flag_then_segment_then_variant():
    flag = flag_with([{"variant": "on", "metadata": {"segmentName": "s", "flagVersion": 9}}],
                     variants={"on": {"key": "on", "metadata": {"default": False}}},
                     metadata={"flagType": "release", "flagVersion": 1})
    assert list(run([flag])["F"][3]) == ["flagType", "flagVersion", "segmentName", "default"]


def test_default_variant_is_returned_with_its_metadata():
    flag = e_flag(condition(["context", "user", "user_id"], "is", ["vip"]))
    assert run([flag], User(user_id="x"))["F"] == (
        "off", None, None, {"flagType": "release", "flagVersion": 1, "segmentName": "All Other Users", "default": True})


def test_values_and_payloads_keep_their_json_types():
    variants = {"t": {"key": "t", "value": True, "payload": [1, {"a": None}]},
                "n": {"key": "n", "value": 10, "payload": 0.5},
                "o": {"key": "o", "value": {"obj": 1}, "payload": ""}}
    for key, variant in variants.items():
        flag = flag_with([{"variant": key}], variants=variants)
        assert run([flag])["F"] == (key, variant["value"], variant["payload"], {})


def test_result_key_comes_from_the_variant_not_the_map():
    flag = flag_with([{"variant": "on"}], variants={"on": {"key": "renamed", "value": "v"}})
    assert run([flag])["F"][0] == "renamed"
    flag = flag_with([{"variant": "on"}], variants={"on": {}})
    assert run([flag])["F"] == (None, None, None, {})


def test_returned_metadata_is_a_fresh_dict_each_time(stand_in):
    from stand_in import Answer

    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig

    flag = flag_with([{"variant": "on", "metadata": {"segmentName": "s"}}], metadata={"flagVersion": 1})
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, [flag]))
    client = LocalEvaluationClient("key", LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll"))
    client.start()
    try:
        first = client.evaluate_v2(User())["F"]
        first.metadata["segmentName"] = "mutated"
        second = client.evaluate_v2(User())["F"]
        assert second.metadata == {"flagVersion": 1, "segmentName": "s"}
        assert (second.key, second.value, second.payload) == ("on", "on", None)
    finally:
        client.stop()
