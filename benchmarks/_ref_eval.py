"""Reference side of the differential test: runs under the reference SDK's interpreter (.refvenv).

stdin: ``{"cases": [{"flags": [...], "users": [<flaggen user spec>], "subsets": [[key, ...], ...]}]}``;
a case with ``"update": [...]`` serves those flags from the second poll on (storage order, docs/compatibility.md, 'Storage order').
For each case the flags are served from a throwaway HTTP server on 127.0.0.1, so the reference
loads them through its own poller and parser (``LocalEvaluationClient.start()``); then every user
is evaluated with ``evaluate_v2`` for the whole config and for each key subset (passed as a list),
then with the deprecated ``evaluate`` (whole config, default/undeployed variants filtered, docs/compatibility.md, 'Deprecated filters').

stdout: ``{"cases": [[<per user: [<per call: result>]>]]}`` where a result is the list of
``[flag_key, key, value, payload, metadata]`` in the order of the returned dict, or
``{"error": "<exception type>: <message>"}`` when the call raised.
"""

import json
import logging
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _flags_server import serve_flags  # noqa: E402
from _quiet import quiet_logger  # noqa: E402
from flaggen import build_user  # noqa: E402

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User  # noqa: E402


def _result(variants):
    return [[flag_key, v.key, v.value, v.payload, v.metadata] for flag_key, v in variants.items()]


def _call(client, user, keys, deprecated=False):
    try:
        if deprecated:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _result(client.evaluate(user, keys))
        return _result(client.evaluate_v2(user, keys))
    except Exception as error:  # the reference raises on cycles and bad regexes; report, don't die
        return {"error": "%s: %s" % (type(error).__name__, error)}


def run_case(case):
    bodies = [json.dumps(case["flags"]).encode()]
    if case.get("update") is not None:
        bodies.append(json.dumps(case["update"]).encode())
    server = serve_flags(*bodies)
    try:
        config = LocalEvaluationConfig(
            server_url="http://127.0.0.1:%d" % server.server_address[1],
            flag_config_polling_interval_millis=200 if len(bodies) > 1 else 3_600_000,
            logger=quiet_logger("reference-differential", logging.CRITICAL),
        )
        client = LocalEvaluationClient("server-key", config)
        client.start()
        try:
            if len(bodies) > 1:  # wait (bounded) for the second poll to be stored
                wanted = sorted(flag["key"] for flag in case["update"])
                deadline = time.monotonic() + 20
                while sorted(client.flag_config_storage.get_flag_configs()) != wanted:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the reference never stored the update")
                    time.sleep(0.02)
            out = []
            for spec in case["users"]:
                calls = [_call(client, build_user(spec, User), None)]
                for keys in case.get("subsets", ()):
                    calls.append(_call(client, build_user(spec, User), list(keys)))
                calls.append(_call(client, build_user(spec, User), None, deprecated=True))
                out.append(calls)
            return out
        finally:
            client.stop()
    finally:
        server.shutdown()
        server.server_close()


def main():
    request = json.loads(sys.stdin.buffer.read())
    results = [run_case(case) for case in request["cases"]]
    sys.stdout.write(json.dumps({"cases": results}))


if __name__ == "__main__":
    main()
