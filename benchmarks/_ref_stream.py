"""Reference side of the streaming differential test and bench_stream: runs under the reference
SDK's interpreter (.refvenv) with ``stream_updates=True``.

argv: the stand-in's URL (flag stream and polls), then a JSON file ``{"users": [<flaggen user spec>]}``.
stdin, one command per line: ``step <name>`` waits (bounded) until the flag ``zz-step`` answers
``<name>``, i.e. the pushed list that carries it is stored, then writes one JSON line
``{"order": [storage order], "results": [<per user: [[flag_key, key, value, payload, metadata], ...]>]}``;
``wait <name>`` only waits and writes ``{"at": <time.time() when seen>}``; ``quit`` exits.
It writes ``started`` once ``start()`` returned. It ends with ``os._exit``: the reference's
``stop()`` leaves its stream thread running (docs/streaming.md).
"""

import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quiet import quiet_logger  # noqa: E402
from flaggen import build_user  # noqa: E402

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User  # noqa: E402

STEP_FLAG = "zz-step"
WAIT_SECONDS = 20.0


def _step(client) -> object:
    variant = client.evaluate_v2(User(user_id="step"), [STEP_FLAG]).get(STEP_FLAG)
    return variant.value if variant is not None else None


def _wait(client, name: str) -> float:
    deadline = time.monotonic() + WAIT_SECONDS
    while _step(client) != name:  # bounded by the deadline
        if time.monotonic() > deadline:
            raise RuntimeError("the reference never stored step %s" % name)
        time.sleep(0.002)
    return time.time()


def main() -> None:
    url = sys.argv[1]
    with open(sys.argv[2]) as handle:
        users = [build_user(spec, User) for spec in json.load(handle)["users"]]
    config = LocalEvaluationConfig(server_url=url, stream_server_url=url, stream_updates=True,
                                   logger=quiet_logger("reference-stream", logging.CRITICAL))
    client = LocalEvaluationClient("server-key", config)
    client.start()
    print("started", flush=True)
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "quit":
            break
        seen_at = _wait(client, name)
        if command == "wait":
            print(json.dumps({"at": seen_at}), flush=True)
            continue
        results = [[[key, v.key, v.value, v.payload, v.metadata] for key, v in client.evaluate_v2(user).items()]
                   for user in users]
        order = list(client.flag_config_storage.get_flag_configs())
        print(json.dumps({"order": order, "results": results}), flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
