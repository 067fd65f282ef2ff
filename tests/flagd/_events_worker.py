"""A worker process that tracks exposures of users through the SDK in shared mode (tests/flagd/test_host_events.py).

argv: prefix, analytics URL, first user, user count, pace (1: before each evaluation, wait until
flagd's queue holds fewer than half its capacity, as a server between requests would; 0: send as
fast as it evaluates). The deployment key comes from AMPLITUDE_DEPLOYMENT_KEY, the analytics key
from WORKER_ANALYTICS_KEY. Prints one JSON line: the channel's status once every result went to
flagd or to this process's analytics client, then stops the client
(which delivers whatever this process kept for itself). With WORKER_ONE_MORE it first waits for
a line on stdin, tracks one more user and prints the status again.
"""

import json
import os
import sys
import time

from amplitude_experiment import AssignmentConfig, LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.exposure import ExposureConfig
from amplitude_experiment.local.evaluate_options import EvaluateOptions

PACE_LIMIT_SECONDS = 5.0


def main() -> None:
    prefix, url, first, count, pace = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    analytics_key = os.environ.get("WORKER_ANALYTICS_KEY", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
    analytics = dict(api_key=analytics_key, server_url=url, flush_queue_size=200, flush_interval_millis=200,
                     flush_max_retries=2)
    assignment = AssignmentConfig(send_evaluated_props=True, **analytics) if os.environ.get("WORKER_ASSIGNMENT") else None
    client = LocalEvaluationClient(os.environ["AMPLITUDE_DEPLOYMENT_KEY"], LocalEvaluationConfig(
        flag_source="flagd", shm_prefix=prefix, exposure_config=ExposureConfig(**analytics),
        assignment_config=assignment))
    client.start()
    channel = client._tracker._host  # the test's pacing looks at the queue the worker sends to
    expose = EvaluateOptions(tracks_exposure=True)
    for index in range(first, first + count):
        if pace:
            _wait_for_room(channel)
        user = User(user_id="user-%d" % index, device_id="device-%d" % index, country="DE",
                    user_properties={"plan": "pro" if index % 2 else "free"}, groups={"org": ["org-%d" % (index % 7)]})
        client.evaluate_v2(user, options=expose)
        client.evaluate_v2(user, options=expose)  # a repeat: this process's own dedup keeps it here
    client._tracker.flush(20)  # results that found the queue full are sent or delivered: counted
    status = client.flag_source_status["events"]
    sys.stdout.write(json.dumps(status) + "\n")
    sys.stdout.flush()
    if os.environ.get("WORKER_ONE_MORE"):  # on a line from the test: one more user, then the status again
        sys.stdin.readline()
        client.evaluate_v2(User(user_id="one-more"), options=expose)
        sys.stdout.write(json.dumps(client.flag_source_status["events"]) + "\n")
        sys.stdout.flush()
    client.stop(timeout=20)


def _wait_for_room(channel) -> None:
    queue = channel._queue
    if queue is None:
        return
    deadline = time.monotonic() + PACE_LIMIT_SECONDS
    while queue.current_messages >= queue.max_messages // 2 and time.monotonic() < deadline:
        time.sleep(0.0005)  # bounded: a server's next request, not a stand-in for synchronization


if __name__ == "__main__":
    main()
