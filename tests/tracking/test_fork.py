"""Each process sends its own events; a fork child never re-sends what its parent had buffered."""

import os
import subprocess
import sys
import time
import textwrap

import pytest
from stand_in import Answer

pytestmark = pytest.mark.multiprocess

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, threading
    from amplitude_experiment import AssignmentConfig, User, Variant
    from amplitude_experiment.tracking import EvaluationTracker, ProcessAnalytics

    handed_over = threading.Event()

    class Analytics(ProcessAnalytics):
        def track(self, event):
            super().track(event)
            handed_over.set()

    config = AssignmentConfig(api_key="k", server_url=sys.argv[1], flush_queue_size=100, flush_interval_millis=60000)
    tracker = EvaluationTracker(logging.getLogger("fork-test"), config, sink_factory=lambda c: Analytics(c.api_key, c))
    variants = {"f": Variant("on", key="on", metadata={})}
    tracker.track(User(user_id="parent-before-fork"), variants, False)
    assert handed_over.wait(10)  # now buffered in the parent's analytics client, not yet sent

    pid = os.fork()
    if pid == 0:
        tracker.track(User(user_id="child"), variants, False)
        tracker.flush(10)
        sys.exit(0)  # a normal exit: the analytics SDK's exit hooks run in the child too
    _, status = os.waitpid(pid, 0)
    tracker.track(User(user_id="parent-after-fork"), variants, False)
    tracker.flush(10)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_each_process_sends_its_own_events_once(stand_in, tmp_path):
    stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}))
    script = tmp_path / "fork_tracking.py"
    script.write_text(SCRIPT)
    finished = subprocess.run(
        [sys.executable, str(script), stand_in.url + "/2/httpapi"], capture_output=True, text=True, timeout=20
    )
    assert finished.returncode == 0, finished.stderr
    users = sorted(event["user_id"] for request in stand_in.seen("/2/httpapi") for event in request.json()["events"])
    assert users == ["child", "parent-after-fork", "parent-before-fork"]


EXIT_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from amplitude_experiment import AssignmentConfig, User, Variant
    from amplitude_experiment.tracking import EvaluationTracker

    config = AssignmentConfig(api_key="k", server_url=sys.argv[1], flush_queue_size=100, flush_interval_millis=60000)
    tracker = EvaluationTracker(logging.getLogger("exit-test"), config)
    for i in range(50):
        tracker.track(User(user_id="user-%d" % i), {"f": Variant("on", key="on", metadata={})}, False)
    # no flush and no stop(): the interpreter's exit still delivers what was tracked
    """
)


def test_interpreter_exit_delivers_tracked_events(stand_in, tmp_path):
    stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}))
    script = tmp_path / "exit_tracking.py"
    script.write_text(EXIT_SCRIPT)
    finished = subprocess.run(
        [sys.executable, str(script), stand_in.url + "/2/httpapi"], capture_output=True, text=True, timeout=20
    )
    assert finished.returncode == 0, finished.stderr
    users = {event["user_id"] for request in stand_in.seen("/2/httpapi") for event in request.json()["events"]}
    assert users == {"user-%d" % i for i in range(50)}


SHARED_MODE_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, threading
    from amplitude_experiment import AssignmentConfig, LocalEvaluationClient, LocalEvaluationConfig, User

    url, prefix, key = sys.argv[1:4]
    config = LocalEvaluationConfig(
        flag_source="flagd",
        shm_prefix=prefix,
        assignment_config=AssignmentConfig(api_key="k", server_url=url, flush_queue_size=100, flush_interval_millis=60000),
        logger=logging.getLogger("shared-mode-test"),
    )
    client = LocalEvaluationClient(key, config)  # built before fork, as gunicorn's preload_app does
    client.start()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("amplitude_experiment")]
    children = []
    for name in ("child-1", "child-2"):
        pid = os.fork()
        if pid == 0:
            assert client.evaluate_v2(User(user_id=name))["f1"].key == "on"
            client.stop(timeout=10)
            sys.exit(0)
        children.append(pid)
    sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_shared_mode_client_built_before_fork_tracks_in_each_child(stand_in, shm_prefix, tmp_path):
    from amplitude_experiment.snapshot import SnapshotWriter

    key = "server-tracking-fork-test-key-01"
    flag = {
        "key": "f1",
        "metadata": {"flagType": "release", "flagVersion": 1},
        "variants": {"on": {"key": "on", "value": "on"}},
        "segments": [{"variant": "on"}],
    }
    stand_in.answer("POST", "/2/httpapi", Answer(200, {"code": 200}))
    script = tmp_path / "shared_mode_tracking.py"
    script.write_text(SHARED_MODE_SCRIPT)
    with SnapshotWriter(shm_prefix, key, poll_interval_ms=1000) as writer:
        writer.publish({"flags": [flag], "source": "test", "fetched_at_ns": time.time_ns(), "flag_count": 1, "poll_interval_ms": 1000})
        finished = subprocess.run(
            [sys.executable, str(script), stand_in.url + "/2/httpapi", shm_prefix, key],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert finished.returncode == 0, finished.stderr
    users = sorted(event["user_id"] for request in stand_in.seen("/2/httpapi") for event in request.json()["events"])
    assert users == ["child-1", "child-2"]
