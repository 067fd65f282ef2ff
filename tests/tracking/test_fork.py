"""Each process sends its own events; a fork child never re-sends what its parent had buffered."""

import os
import subprocess
import sys
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
