"""Auto mode in a preloading gunicorn master switches to flagd's snapshot although it never evaluates.

The master builds the client at preload and, with no flagd yet, polls Amplitude on its poller
thread; only workers evaluate. When flagd starts, every process of the server must stop polling:
the stand-in attributes each upstream request to the process that sent it, and after flagd is
ready only flagd may appear.
"""

import time

import pytest

from harness import (DEPLOYMENT_KEY, EXAMPLES, FLAG_KEY, FLAGS_PATH, VENV_BIN, Flagd, Process, base_env, flag,
                     free_port, get_json, responses_from_every_worker, wait_for_workers)
from stand_in import Answer
from waiting import wait_until

pytestmark = pytest.mark.real_servers

WORKERS = 2
CLIENT_POLL_MS = 200
FLAGD_POLL_MS = 300


def requests_by_pid(stand_in, since: float):
    counts = {}
    for seen in stand_in.seen(FLAGS_PATH):
        if seen.at >= since:
            counts[seen.pid] = counts.get(seen.pid, 0) + 1
    return counts


def test_a_preloading_master_that_never_evaluates_stops_polling_when_flagd_appears(tmp_path, stand_in, shm_prefix):
    stand_in.record_pids = True
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag(FLAG_KEY, "control")]))
    port = free_port()
    env = base_env(shm_prefix, AMPLITUDE_FLAG_SOURCE="auto", AMPLITUDE_SERVER_URL=stand_in.url,
                   AMPLITUDE_POLL_INTERVAL_MS=str(CLIENT_POLL_MS), GUNICORN_BIND="127.0.0.1:%d" % port,
                   GUNICORN_WORKERS=str(WORKERS), XDG_RUNTIME_DIR=str(tmp_path))
    server = Process("gunicorn", [str(VENV_BIN / "gunicorn"), "-c", str(EXAMPLES / "gunicorn" / "gunicorn.conf.py"),
                                  "wsgi_app:application"], tmp_path, env)
    flagd = None
    try:
        workers = wait_for_workers(server, WORKERS)
        url = "http://127.0.0.1:%d/?user_id=u1" % port
        wait_until(lambda: _answer(url), 60, "gunicorn to answer")
        responses_from_every_worker(lambda: get_json(url), workers)  # each worker evaluates once: it polls too
        # Without flagd, the master polls on its own (it built the client at preload).
        wait_until(lambda: requests_by_pid(stand_in, 0).get(server.pid, 0) >= 3, 30, "the master to poll")

        flagd = Flagd(tmp_path, shm_prefix, FLAGD_POLL_MS, server_url=stand_in.url)
        flagd.wait_ready()
        # One client poll interval (plus a request in flight) for each process to notice, then a window
        # of many client intervals in which nobody but flagd may ask.
        window_start = time.monotonic() + 1.0
        window_end = window_start + 15 * CLIENT_POLL_MS / 1000.0
        wait_until(lambda: time.monotonic() >= window_end and stand_in.seen(FLAGS_PATH), 30, "the window to pass")
        counts = {pid: n for pid, n in requests_by_pid(stand_in, window_start).items()}
        assert counts.get(flagd.process.pid, 0) >= 3, counts  # flagd does poll
        others = {pid: n for pid, n in counts.items() if pid != flagd.process.pid}
        assert others == {}, "after flagd started, these processes still polled: %s (master %d, workers %s)" % (
            others, server.pid, sorted(workers))
        # Nobody evaluated in the window, yet every process reports the snapshot now.
        answers = responses_from_every_worker(lambda: get_json(url), workers)
        assert all(a["snapshot_version"] for pid_answers in answers.values() for a in pid_answers), answers
    finally:
        status = server.stop()
        if flagd is not None:
            flagd.stop()
    assert status == 0, server.log()
    assert DEPLOYMENT_KEY not in server.log()


def _answer(url):
    try:
        return get_json(url, timeout=2)
    except OSError:
        return None
