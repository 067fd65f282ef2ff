"""examples/uwsgi/uwsgi.ini with a real uWSGI (master, 4 workers, app loaded before the fork).

The same scenario as the gunicorn test: flagd publishes a change and every worker serves it on its
next request, with flagd the only poller on the host. No lazy-apps, and no py-call-osafterfork: the
shared-mode client needs no post-fork hook.
"""

import pytest

from harness import EXAMPLES, VENV_BIN, WORKERS, Process, http_server, run_shared_mode_scenario

pytestmark = [
    pytest.mark.real_servers,
    pytest.mark.skipif(not (VENV_BIN / "uwsgi").exists(),
                       reason="uWSGI is not installed in this venv (the uwsgi and test extras install pyuwsgi, a prebuilt wheel)"),
]


@pytest.mark.parametrize("ini", ["uwsgi.ini", "uwsgi.lazy-apps.ini"], ids=["master-forks-app", "lazy-apps"])
def test_every_uwsgi_worker_serves_flagds_change(tmp_path, stand_in, shm_prefix, ini):
    ini_path = EXAMPLES / "uwsgi" / ini
    text = ini_path.read_text()
    assert "processes = %d" % WORKERS in text and "master = true" in text
    if ini == "uwsgi.ini":
        assert "\nlazy-apps" not in text and "\npy-call-osafterfork" not in text

    def start(env):
        env["UWSGI_EXAMPLE_BIND"] = "127.0.0.1:%s" % env["PORT"]
        return Process("uwsgi", [str(VENV_BIN / "uwsgi"), "--ini", str(ini_path)], tmp_path, env)

    server = run_shared_mode_scenario(tmp_path, stand_in, shm_prefix, http_server(start))
    log = server.log()
    assert "Traceback" not in log, log
    if ini == "uwsgi.ini":
        # The app really was loaded once, in the master, before the workers were forked.
        assert log.count("WSGI app 0 (mountpoint='') ready") == 1, log
