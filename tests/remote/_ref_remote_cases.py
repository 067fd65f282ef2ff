"""Reference side of test_remote_differential.py: runs under the reference SDK's interpreter.

argv: ``<server_url>``; stdin: a JSON list of cases ``{"retries": n, "options": [a, e, keys] | null,
"user": {attributes}}``. Each case uses a fresh client (so one case's connection state, quirk Q1,
cannot leak into the next). stdout: one outcome per case: ``{"variants": {key: [key, value,
payload, metadata]}}``, ``{"none": true}`` or ``{"raised": "<exception type>"}``.
"""

import json
import logging
import sys

from amplitude_experiment import RemoteEvaluationClient, RemoteEvaluationConfig, User
from amplitude_experiment.remote.fetch_options import FetchOptions


def main() -> None:
    url = sys.argv[1]
    logging.getLogger("Amplitude").disabled = True
    outcomes = []
    for case in json.loads(sys.stdin.read()):
        config = RemoteEvaluationConfig(server_url=url, fetch_retries=case["retries"],
                                        fetch_retry_backoff_min_millis=10)
        client = RemoteEvaluationClient("differential-key", config)
        options = FetchOptions(*case["options"]) if case["options"] is not None else None
        try:
            variants = client.fetch_v2(User(**case["user"]), options)
        except Exception as error:
            outcomes.append({"raised": type(error).__name__})
        else:
            if variants is None:
                outcomes.append({"none": True})
            else:
                outcomes.append({"variants": {k: [v.key, v.value, v.payload, v.metadata] for k, v in variants.items()}})
        client.close()
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main()
