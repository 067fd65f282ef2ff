"""One exposure per user per host: workers hand tracked results to flagd, which deduplicates host-wide
and delivers them (issue 14). Real flagd and worker processes against the analytics stand-in."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any, Dict, List

import pytest
from flagd_kit import ROOT, run_cli
from stand_in import Answer, StandIn
from waiting import wait_until

from amplitude_experiment.snapshot import SnapshotReader, key_hash
from flagd.event_counters import read_counters, remove_queue

pytestmark = pytest.mark.multiprocess

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_events_worker.py")
ANALYTICS_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
PATH = "/2/httpapi"
USERS = 200
WORKERS = 8

FLAGS = [
    {"key": "checkout", "metadata": {"flagType": "experiment", "flagVersion": 4, "experimentKey": "exp-4"},
     "variants": {"control": {"key": "control", "value": "control"}, "treatment": {"key": "treatment", "value": "treatment"}},
     "bucket": None,
     "segments": [
         {"metadata": {"segmentName": "odd plan"},
          "conditions": [[{"selector": ["context", "user", "user_properties", "plan"], "op": "is", "values": ["pro"]}]],
          "variant": "treatment"},
         {"metadata": {"segmentName": "All Other Users"}, "variant": "control"}]},
    {"key": "banner", "metadata": {"flagType": "release", "flagVersion": 2},
     "variants": {"on": {"key": "on", "value": "on"}}, "segments": [{"variant": "on"}]},
    {"key": "slots", "metadata": {"flagType": "mutual-exclusion-group", "flagVersion": 1},
     "variants": {"a": {"key": "a", "value": "a"}}, "segments": [{"variant": "a", "metadata": {"segmentName": "s"}}]},
    {"key": "quiet", "metadata": {"flagType": "release", "flagVersion": 1},
     "variants": {"off": {"key": "off", "metadata": {"default": True}}}, "segments": [{"variant": "off"}]},
]
for _flag in FLAGS:
    if _flag.get("bucket", 0) is None:
        del _flag["bucket"]


@pytest.fixture
def stand_in():
    with StandIn() as server:
        server.answer("POST", PATH, Answer(200, {"code": 200}))
        yield server


@pytest.fixture
def flags_file(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(FLAGS))
    return str(path)


@pytest.fixture(autouse=True)
def _remove_queue(shm_prefix, deployment_key):
    """Message queues are not files under /dev/shm: unlink this test's (the kernel allows few per user)."""
    yield
    remove_queue(shm_prefix, key_hash(deployment_key))


def start_flagd(flagd, flags_file, stand_in, analytics_key=ANALYTICS_KEY, *extra):
    env = {"AMPLITUDE_ANALYTICS_API_KEY": analytics_key} if analytics_key else {}
    process = flagd("--flags-file", flags_file, "--analytics-server-url", stand_in.url + PATH,
                    "--analytics-flush-interval-ms", "100", *extra, env=env).start()
    process.wait_version(1)
    process.wait_log("event=events_relay" if analytics_key else "event=ready")
    return process


def run_workers(shm_prefix, deployment_key, stand_in, count=WORKERS, users=USERS, pace=True, first=0,
                env=None) -> List[Dict[str, Any]]:
    """``count`` workers each tracking the same ``users`` users (twice each); their channel statuses."""
    environment = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=deployment_key, **(env or {}))
    processes = [subprocess.Popen([sys.executable, WORKER, shm_prefix, stand_in.url + PATH, str(first), str(users),
                                   "1" if pace else "0"], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(count)]
    statuses = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-3000:]
            statuses.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return statuses


def exposures(stand_in, api_key=ANALYTICS_KEY) -> List[Dict[str, Any]]:
    return [event for request in stand_in.seen(PATH) if request.json()["api_key"] == api_key
            for event in request.json()["events"] if event["event_type"] == "[Experiment] Exposure"]


def counters(shm_prefix, deployment_key):
    reader = SnapshotReader(shm_prefix, deployment_key)
    assert reader.attach()
    return read_counters(reader.words)


# Each user's exposed flags: checkout, banner and slots (quiet serves a default: no exposure).
EXPOSED_FLAGS = 3


def test_with_flagd_each_user_is_exposed_once_per_host(flagd, flags_file, stand_in, shm_prefix, deployment_key):
    daemon = start_flagd(flagd, flags_file, stand_in)
    statuses = run_workers(shm_prefix, deployment_key, stand_in)
    assert [status["fallbacks"] for status in statuses] == [dict.fromkeys(
        ("queue_full", "queue_missing", "too_large", "unencodable"), 0)] * WORKERS
    assert [status["sent_to_flagd"] for status in statuses] == [USERS] * WORKERS
    assert all(status["flagd_delivers"] for status in statuses)
    wait_until(lambda: len(exposures(stand_in)) >= USERS * EXPOSED_FLAGS, 30, "flagd to deliver every exposure")
    shown = json.loads(run_cli("status", "--json", "--shm-prefix", shm_prefix, key=deployment_key).stdout)["events"]
    assert (shown["delivers"], shown["received"], shown["deduplicated"]) == (True, USERS * WORKERS, USERS * (WORKERS - 1))
    assert shown["queue_capacity"] == shown["kernel_msg_max"] and shown["worker_fallbacks"] == 0
    assert daemon.terminate() == 0
    sent = Counter((event["user_id"], event["event_properties"]["[Experiment] Flag Key"]) for event in exposures(stand_in))
    assert len(sent) == USERS * EXPOSED_FLAGS
    assert set(sent.values()) == {1}  # exactly one per (user, flag) from 8 workers
    report = counters(shm_prefix, deployment_key)
    assert report["received"] == USERS * WORKERS
    assert report["deduplicated"] == USERS * (WORKERS - 1)
    assert report["sent"] == USERS * EXPOSED_FLAGS and report["failed"] == 0
    assert report["delivers"] is False  # a stopped flagd stops advertising
    assert ANALYTICS_KEY not in daemon.log() and "event=analytics_api_key origin=environment" in daemon.log()


def test_without_flagd_delivering_each_worker_sends_its_own(flagd, flags_file, stand_in, shm_prefix,
                                                           deployment_key):
    start_flagd(flagd, flags_file, stand_in, analytics_key="")  # flags from flagd, no analytics key
    statuses = run_workers(shm_prefix, deployment_key, stand_in)
    assert [status["not_advertised"] for status in statuses] == [USERS] * WORKERS
    sent = Counter((event["user_id"], event["event_properties"]["[Experiment] Flag Key"]) for event in exposures(stand_in))
    assert len(sent) == USERS * EXPOSED_FLAGS
    assert set(sent.values()) == {WORKERS}


def test_a_worker_with_another_analytics_key_delivers_itself(flagd, flags_file, stand_in, shm_prefix,
                                                             deployment_key):
    start_flagd(flagd, flags_file, stand_in)
    statuses = run_workers(shm_prefix, deployment_key, stand_in, count=1, users=5,
                           env={"WORKER_ANALYTICS_KEY": "another-key-0123456"})
    assert statuses[0]["not_advertised"] == 5 and statuses[0]["sent_to_flagd"] == 0
    assert len(exposures(stand_in, "another-key-0123456")) == 5 * EXPOSED_FLAGS


def test_flagd_absent_workers_deliver(flagd, flags_file, stand_in, shm_prefix, deployment_key):
    daemon = start_flagd(flagd, flags_file, stand_in)
    daemon.terminate()  # its snapshot stays; it no longer advertises an analytics key
    statuses = run_workers(shm_prefix, deployment_key, stand_in, count=2, users=20)
    assert [status["not_advertised"] for status in statuses] == [20, 20]
    assert len(exposures(stand_in)) == 2 * 20 * EXPOSED_FLAGS


def test_a_flagd_without_a_key_takes_back_what_a_killed_one_advertised(flagd, flags_file, stand_in, shm_prefix,
                                                                         deployment_key):
    start_flagd(flagd, flags_file, stand_in).kill()
    assert counters(shm_prefix, deployment_key)["delivers"] is True  # SIGKILL: nobody took it back
    start_flagd(flagd, flags_file, stand_in, analytics_key="")
    assert counters(shm_prefix, deployment_key)["delivers"] is False
    statuses = run_workers(shm_prefix, deployment_key, stand_in, count=1, users=3)
    assert statuses[0]["not_advertised"] == 3 and len(exposures(stand_in)) == 3 * EXPOSED_FLAGS


def test_queue_full_falls_back_counted_and_flagd_learns_of_it(flagd, flags_file, stand_in, shm_prefix,
                                                               deployment_key):
    daemon = start_flagd(flagd, flags_file, stand_in)
    daemon.signal(signal.SIGSTOP)  # flagd reads nothing: the queue fills up
    worker = subprocess.Popen(
        [sys.executable, WORKER, shm_prefix, stand_in.url + PATH, "0", "30", "0"], cwd=ROOT,
        env=dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=deployment_key, WORKER_ONE_MORE="1"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = json.loads(worker.stdout.readline())
        daemon.signal(signal.SIGCONT)
        capacity = counters(shm_prefix, deployment_key)["queue_capacity"]
        assert status["sent_to_flagd"] == capacity
        assert status["fallbacks"]["queue_full"] == 30 - capacity == status["delivered_here"]
        assert status["last_problem"] == "queue_full"
        wait_until(lambda: counters(shm_prefix, deployment_key)["received"] == capacity, 10, "flagd to read the queue")
        out, err = worker.communicate("go\n", timeout=60)  # the next result carries the count to flagd
        assert worker.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["sent_to_flagd"] == capacity + 1
    finally:
        daemon.signal(signal.SIGCONT)
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    report = wait_until(lambda: counters(shm_prefix, deployment_key)["received"] == capacity + 1
                        and counters(shm_prefix, deployment_key), 10, "the last message")
    assert report["worker_fallbacks"] == 30 - capacity
    # The worker delivered its fallbacks itself, flagd the queued ones: every user once.
    wait_until(lambda: len(exposures(stand_in)) >= 31 * EXPOSED_FLAGS - 2, 30, "every exposure")
    users = Counter(event["user_id"] for event in exposures(stand_in) if event["user_id"] != "one-more")
    assert len(users) == 30 and set(users.values()) == {EXPOSED_FLAGS}


def test_sigkill_loses_at_most_what_flagd_held(flagd, flags_file, stand_in, shm_prefix, deployment_key):
    first = start_flagd(flagd, flags_file, stand_in, ANALYTICS_KEY, "--analytics-flush-interval-ms", "60000")
    run_workers(shm_prefix, deployment_key, stand_in, count=1, users=4, pace=True)  # read, held in a batch
    wait_until(lambda: counters(shm_prefix, deployment_key)["received"] == 4, 10, "flagd to read 4 results")
    first.signal(signal.SIGSTOP)  # stops reading: what workers send now stays in the kernel queue
    statuses = run_workers(shm_prefix, deployment_key, stand_in, count=1, users=6, first=100, pace=False)
    assert statuses[0]["sent_to_flagd"] == 6
    held = counters(shm_prefix, deployment_key)
    first.signal(signal.SIGKILL)
    first.wait()
    assert held["received"] == 4 and held["sent"] == 0
    second = start_flagd(flagd, flags_file, stand_in)
    wait_until(lambda: len(exposures(stand_in)) >= 6 * EXPOSED_FLAGS, 20, "the unread results to be delivered")
    second.terminate()
    users = Counter(event["user_id"] for event in exposures(stand_in))
    # The 6 unread messages are delivered once each; the 4 flagd held in its batch are what SIGKILL lost.
    assert users == Counter({"user-%d" % index: EXPOSED_FLAGS for index in range(100, 106)})


REFERENCE_SCRIPT = r"""
import json, logging, os, sys
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.assignment import AssignmentConfig
from amplitude_experiment.exposure.exposure_config import ExposureConfig
from amplitude_experiment.local.evaluate_options import EvaluateOptions

url, api_key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
quiet = logging.getLogger("reference-events")
quiet.addHandler(logging.NullHandler())
quiet.propagate = False
analytics = dict(api_key=api_key, server_url=url + "/2/httpapi", flush_queue_size=1000, flush_interval_millis=60000)
client = LocalEvaluationClient("server-key", LocalEvaluationConfig(
    server_url=url, flag_config_polling_interval_millis=3600000, logger=quiet,
    assignment_config=AssignmentConfig(send_evaluated_props=True, **analytics),
    exposure_config=ExposureConfig(**analytics)))
client.start()
for index in range(count):  # the users of tests/flagd/_events_worker.py
    user = User(user_id="user-%d" % index, device_id="device-%d" % index, country="DE",
                user_properties={"plan": "pro" if index % 2 else "free"}, groups={"org": ["org-%d" % (index % 7)]})
    client.evaluate_v2(user, options=EvaluateOptions(tracks_exposure=True))
    client.evaluate_v2(user, options=EvaluateOptions(tracks_exposure=True))
for service in (client.assignment_service, client.exposure_service):
    for future in service.amplitude.flush() or []:
        if future is not None:
            future.result(timeout=20)
os._exit(0)  # the analytics SDK's exit hook would wait for its idle consumer thread
"""


def test_events_are_the_references_field_by_field(flagd, flags_file, stand_in, shm_prefix, deployment_key, tmp_path):
    """flagd's events for 8 workers are the events Amplitude's SDK sends from one process (but for
    ``time``: the evaluation time here, the analytics client's clock there), and those of one
    process of ours without flagd."""
    import reference_env

    if reference_env.reference_python() is None:
        pytest.skip("reference SDK unavailable: %s" % reference_env.reference_unavailable_reason())
    users = 20
    daemon = start_flagd(flagd, flags_file, stand_in)
    run_workers(shm_prefix, deployment_key, stand_in, count=WORKERS, users=users, env={"WORKER_ASSIGNMENT": "1"})
    wait_until(lambda: len(_events(stand_in, ANALYTICS_KEY)) >= users * (EXPOSED_FLAGS + 1), 20, "flagd's events")
    daemon.terminate()
    via_flagd = _events_by_insert_id(stand_in, ANALYTICS_KEY)

    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, FLAGS))
    script = tmp_path / "reference_events.py"
    script.write_text(REFERENCE_SCRIPT)
    reference_env.run_reference(str(script), timeout=120, args=(stand_in.url, "reference-key-0123456789abcdef", str(users)))
    reference = _events_by_insert_id(stand_in, "reference-key-0123456789abcdef")
    assert sorted(via_flagd) == sorted(reference)
    for insert_id, event in reference.items():
        assert via_flagd[insert_id] == event, insert_id
    assert sum(event["event_type"] == "[Experiment] Assignment" for event in reference.values()) == users

    stand_in.requests.clear()
    start_flagd(flagd, flags_file, stand_in, analytics_key="")
    run_workers(shm_prefix, deployment_key, stand_in, count=1, users=users, env={"WORKER_ASSIGNMENT": "1"})
    assert _events_by_insert_id(stand_in, ANALYTICS_KEY) == via_flagd


def _events(stand_in, api_key) -> List[Dict[str, Any]]:
    return [event for request in stand_in.seen(PATH) if request.json()["api_key"] == api_key
            for event in request.json()["events"]]


def _events_by_insert_id(stand_in, api_key) -> Dict[str, Dict[str, Any]]:
    events: Dict[str, Dict[str, Any]] = {}
    for event in _events(stand_in, api_key):
        event.pop("time")  # each run evaluates (and the reference sends) at its own time
        assert event["insert_id"] not in events, "sent twice: %s" % event["insert_id"]
        events[event["insert_id"]] = event
    return events
