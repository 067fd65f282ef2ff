"""A stand-in application worker: evaluates the ``marker`` flag in shared mode until stdin closes.

Usage: _worker.py SHM_PREFIX MAX_SECONDS (key in AMPLITUDE_DEPLOYMENT_KEY). Prints ``value=<v>``
whenever the evaluated value changes, ``count=<n>`` when asked ("count" on stdin), and a JSON
summary at the end: evaluations, errors (exceptions or a missing marker after the first value).
"""

import json
import os
import select
import sys
import time

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User


def main() -> int:
    prefix, max_seconds = sys.argv[1], float(sys.argv[2])
    client = LocalEvaluationClient(os.environ["AMPLITUDE_DEPLOYMENT_KEY"],
                                   LocalEvaluationConfig(flag_source="flagd", shm_prefix=prefix))
    client.start()
    user = User(user_id="u1", device_id="d1")
    evaluations = errors = 0
    last = None
    problems = []
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        try:
            variant = client.evaluate_v2(user).get("marker")
            value = variant.value if variant is not None else None
        except Exception as error:  # counted, reported at the end
            errors += 1
            problems.append(repr(error))
            value = last
        evaluations += 1
        if value is None and last is not None:
            errors += 1
            problems.append("marker disappeared after %r" % last)
        if value != last and value is not None:
            last = value
            print("value=%s" % value, flush=True)
        if evaluations % 20 == 0:
            readable, _, _ = select.select([sys.stdin], [], [], 0)
            if readable:
                line = sys.stdin.readline()
                if not line:
                    break
                print("count=%d" % evaluations, flush=True)
        time.sleep(0.002)  # a worker that also does other work; keeps 2 shared cores usable
    print(json.dumps({"evaluations": evaluations, "errors": errors, "last": last, "problems": problems[:5]}),
          flush=True)
    client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
