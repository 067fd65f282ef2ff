"""Reference side of the cohort differential test: runs under the reference SDK's interpreter.

stdin, line 1: ``{"url": <stand-in base URL>, "api_key", "secret_key", "max_cohort_size", "users": [...]}``;
the stand-in serves the flags and the cohorts. The reference starts with cohort sync (downloading
every cohort), evaluates every user, prints one JSON line, waits for a line on stdin (the test
changes the cohorts meanwhile), runs its periodic cohort refresh once, evaluates again and prints a
second line. A result is ``[[flag_key, key, value, payload, metadata], ...]`` plus the user's
sorted ``cohort_ids`` and ``group_cohort_ids`` after the call.
"""

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quiet import quiet_logger  # noqa: E402
from flaggen import build_user  # noqa: E402

from amplitude_experiment import CohortSyncConfig, LocalEvaluationClient, LocalEvaluationConfig, User  # noqa: E402


def evaluate_all(client, users):
    out = []
    for spec in users:
        user = build_user(spec, User)
        try:
            variants = client.evaluate_v2(user)
            rows = [[k, v.key, v.value, v.payload, v.metadata] for k, v in variants.items()]
        except Exception as error:
            rows = {"error": "%s: %s" % (type(error).__name__, error)}
        groups = {t: {n: sorted(ids) for n, ids in names.items()} for t, names in (user.group_cohort_ids or {}).items()}
        out.append([rows, sorted(user.cohort_ids) if user.cohort_ids is not None else None, groups])
    return out


def main():
    request = json.loads(sys.stdin.readline())
    config = LocalEvaluationConfig(
        server_url=request["url"], flag_config_polling_interval_millis=3_600_000,
        logger=quiet_logger("reference-cohort-differential", logging.CRITICAL),
        cohort_sync_config=CohortSyncConfig(request["api_key"], request["secret_key"],
                                            max_cohort_size=request["max_cohort_size"],
                                            cohort_server_url=request["url"]))
    client = LocalEvaluationClient("server-key", config)
    client.start()
    try:
        print(json.dumps(evaluate_all(client, request["users"])), flush=True)
        sys.stdin.readline()
        client.deployment_runner._DeploymentRunner__update_cohorts()  # the 60 s refresh, now
        print(json.dumps(evaluate_all(client, request["users"])), flush=True)
    finally:
        client.stop()


if __name__ == "__main__":
    main()
