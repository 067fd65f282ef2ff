"""Ours and the reference SDK against the same stand-in: same outcomes, same requests on the wire."""

import json
import logging
import os

import pytest

from amplitude_experiment import RemoteEvaluationClient, RemoteEvaluationConfig, User
from amplitude_experiment.remote.fetch_options import FetchOptions
from remote_support import VARDATA, ok
from stand_in import Answer

pytestmark = pytest.mark.differential

REFERENCE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ref_remote_cases.py")
VALUES = {
    "string": {"key": "on", "value": "on", "payload": {"p": [1, "x"]}, "metadata": {"flagVersion": 3}},
    "bool": {"key": "t", "value": True},
    "int": {"key": "i", "value": 10},
    "float": {"key": "f", "value": 10.2},
    "list": {"key": "l", "value": [1, 2, 3]},
    "object": {"key": "o", "value": {"k": "v", "n": None}},
    "null": {"key": "n", "value": None},
    "bare": {},
    "off": {"key": "off", "metadata": {"default": True, "deployed": False}},
}
USER = {"user_id": "u1", "device_id": "d1", "user_properties": {"plan": "pro", "n": 1.5, "ü": "日本"},
        "groups": {"org": ["acme"]}, "cohort_ids": ["c1"]}
# (answer, fetch_retries, FetchOptions arguments, attempts)
CASES = [
    (ok(VALUES), 0, None, 1),
    (ok(VALUES), 0, [True, False, ["string", "日本", "a b"]], 1),
    (ok(VALUES), 0, [False, True, []], 1),
    (Answer(400, b"bad"), 0, None, 1),
    (Answer(404, b"missing"), 2, None, 1),
    (Answer(429, b"slow down"), 0, None, 1),
    (Answer(500, b"oops"), 0, None, 1),
    (Answer(503, b"oops"), 1, None, 2),
    (Answer(200, b"<html>garbage</html>"), 0, None, 1),
]
HEADERS = ("Authorization", "Content-Type", "X-Amp-Exp-Track", "X-Amp-Exp-Exposure-Track", "X-Amp-Exp-Flag-Keys")


def outcome_of(fetch):
    try:
        variants = fetch()
    except Exception as error:
        return {"raised": "error", "type": type(error).__name__}
    if variants is None:
        return {"none": True}
    return {"variants": {k: [v.key, v.value, v.payload, v.metadata] for k, v in variants.items()}}


def wire(seen):
    return [(s.method, s.path, s.query, {h: s.headers.get(h) for h in HEADERS}, s.body) for s in seen]


def arm(stand_in):
    answers = []
    for answer, _, _, attempts in CASES:
        answers.extend([answer] * attempts)
    stand_in.answer("POST", VARDATA, *answers, Answer(599, b"script exhausted"))


def test_outcomes_and_requests_match_the_reference(stand_in):
    from reference_env import reference_python, reference_unavailable_reason, run_reference

    if reference_python() is None:
        pytest.skip("reference SDK unavailable: %s" % reference_unavailable_reason())
    arm(stand_in)
    stdin = json.dumps([{"retries": retries, "options": options, "user": USER} for _, retries, options, _ in CASES])
    theirs = json.loads(run_reference(REFERENCE_SCRIPT, stdin.encode(), timeout=120, args=(stand_in.url,)))
    their_wire = wire(stand_in.seen(VARDATA))

    arm(stand_in)
    ours = []
    logging.getLogger("Amplitude").disabled = True
    try:
        for _, retries, options, _ in CASES:
            config = RemoteEvaluationConfig(server_url=stand_in.url, fetch_retries=retries,
                                            fetch_retry_backoff_min_millis=10)
            with RemoteEvaluationClient("differential-key", config) as client:
                fetch_options = FetchOptions(*options) if options is not None else None
                ours.append(outcome_of(lambda: client.fetch_v2(User(**USER), fetch_options)))
    finally:
        logging.getLogger("Amplitude").disabled = False
    our_wire = wire(stand_in.seen(VARDATA))[len(their_wire):]

    assert len(their_wire) == sum(case[3] for case in CASES)
    assert [next(iter(outcome)) for outcome in theirs] == [
        "variants", "variants", "variants", "none", "none", "variants", "variants", "raised", "variants"]
    assert theirs[5] == theirs[6] == theirs[8] == {"variants": {}}
    for case, (mine, reference) in enumerate(zip(ours, theirs)):
        if "raised" in reference:  # the exception types differ by design (docs/compatibility.md)
            assert "raised" in mine, (case, mine, reference)
        else:
            assert mine == reference, case
    assert our_wire == their_wire
