"""Differential test of streaming: the same pushed flag lists give the same storage order and the
same evaluation results in the reference (``stream_updates=True``, its own interpreter,
benchmarks/_ref_stream.py) as in ours, in poll mode with streaming and in shared mode through
flagd ``--stream``. All three read the same stand-in stream, so every push reaches all at once.
"""

import json
import os
import subprocess
import threading

import pytest

import flaggen
import reference_env
from stand_in import Answer, EventStream
from waiting import wait_until

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from flagd.config import Config
from flagd.daemon import Daemon

pytestmark = pytest.mark.differential

REF_SCRIPT = os.path.join(os.path.dirname(reference_env.__file__), "_ref_stream.py")
STEP_FLAG = "zz-step"
KEY = "server-key"


def step_flag(name):
    return {"key": STEP_FLAG, "variants": {name: {"key": name, "value": name}}, "segments": [{"variant": name}]}


def pushed_lists():
    """Named flag lists: an update that reorders, drops, changes and adds flags, the first list
    reversed (every key kept: positions must not move), then the update again."""
    first, second = flaggen.generate_update(41, 40)
    lists = [first, second, list(reversed(first)), second]
    return [("step-%d" % index, flags + [step_flag("step-%d" % index)]) for index, flags in enumerate(lists)]


def normalise(variants):
    return json.loads(json.dumps([[key, v.key, v.value, v.payload, v.metadata] for key, v in variants.items()]))


class Ours:
    """One of our clients and how to read its storage order."""

    def __init__(self, client, order):
        self.client = client
        self.order = order

    def wait_and_evaluate(self, name, users):
        def step():
            variant = self.client.evaluate_v2(User(user_id="step"), [STEP_FLAG]).get(STEP_FLAG)
            return variant is not None and variant.value == name

        wait_until(step, 20, "step %s stored" % name)
        return {"order": self.order(), "results": [normalise(self.client.evaluate_v2(user)) for user in users]}


def test_pushed_lists_give_the_reference_results_and_storage_order(stand_in, shm_prefix, tmp_path):
    python = reference_env.reference_python()
    if python is None:
        pytest.skip("reference SDK unavailable: %s" % reference_env.reference_unavailable_reason())
    lists = pushed_lists()
    user_specs = flaggen.generate_users(4141, 120)
    users = [flaggen.build_user(spec, User) for spec in user_specs]
    (tmp_path / "users.json").write_text(json.dumps({"users": user_specs}))
    stand_in.answer("GET", "/sdk/stream/v1/flags", EventStream(initial=lists[0][1], keep_alive_every=1.0))
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, lists[0][1]))

    reference = subprocess.Popen([python, REF_SCRIPT, stand_in.url, str(tmp_path / "users.json")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=reference_env.environment(),
                                 text=True)
    poll_client = LocalEvaluationClient(KEY, LocalEvaluationConfig(
        server_url=stand_in.url, stream_server_url=stand_in.url, stream_updates=True, flag_source="poll"))
    daemon = Daemon(Config(deployment_key=KEY, shm_prefix=shm_prefix, server_url=stand_in.url,
                           stream_server_url=stand_in.url, stream=True))
    flagd = threading.Thread(target=daemon.run, name="test-flagd", daemon=True)
    shared_client = None
    try:
        assert reference.stdout.readline().strip() == "started"
        poll_client.start()
        flagd.start()
        shared_client = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix))
        shared_client.start()
        ours = {
            "poll": Ours(poll_client, lambda: list(poll_client._source.current().catalog.keys())),
            "shared": Ours(shared_client, lambda: list(shared_client._source.current().catalog.keys())),
        }
        stand_in.wait_streams(3)  # the reference's, our poll-mode client's and flagd's: one each
        # The same request: the reference's (its client started first) and ours, but for the port.
        requests = [dict(request.headers, Host=None) for request in stand_in.seen("/sdk/stream/v1/flags")]
        assert len(requests) == 3 and requests[1] == requests[0] and requests[2] == requests[0], requests
        compared = 0
        for index, (name, flags) in enumerate(lists):
            if index:
                assert stand_in.push(flags) == 3
            reference.stdin.write("step %s\n" % name)
            reference.stdin.flush()
            theirs = json.loads(reference.stdout.readline())
            for mode, side in ours.items():
                mine = side.wait_and_evaluate(name, users)
                assert mine["order"] == theirs["order"], (mode, name)
                for user_index, (a, b) in enumerate(zip(mine["results"], theirs["results"])):
                    assert a == b, (mode, name, user_specs[user_index])
                compared += sum(len(result) for result in mine["results"])
        assert compared > 10_000
        # The stream carried every change: no side polled (the reference, ours and flagd share the stand-in).
        assert stand_in.seen("/sdk/v2/flags") == []
    finally:
        reference.stdin.write("quit\n")
        reference.stdin.close()
        reference.wait(20)
        poll_client.stop()
        if shared_client is not None:
            shared_client.stop()
        daemon._stop = True
        daemon._nudge()
        flagd.join(10)
