"""examples/gunicorn with a real gunicorn (4 sync workers) and a real flagd polling a stand-in API.

flagd publishes a change and every worker serves it on its next request; the API sees flagd's polls
only, one per interval for the whole host.
"""

import pytest

from harness import EXAMPLES, VENV_BIN, WORKERS, Process, http_server, run_shared_mode_scenario

pytestmark = pytest.mark.real_servers


@pytest.mark.parametrize("config", ["gunicorn.conf.py", "gunicorn.nopreload.conf.py"], ids=["preload", "no-preload"])
def test_every_gunicorn_worker_serves_flagds_change(tmp_path, stand_in, shm_prefix, config):
    def start(env):
        # gunicorn 24+ opens a control socket in $XDG_RUNTIME_DIR (else ~/.gunicorn): one per test.
        env.update(GUNICORN_BIND="127.0.0.1:%s" % env["PORT"], GUNICORN_WORKERS=str(WORKERS),
                   XDG_RUNTIME_DIR=str(tmp_path))
        return Process("gunicorn", [str(VENV_BIN / "gunicorn"), "-c", str(EXAMPLES / "gunicorn" / config),
                                    "wsgi_app:application"], tmp_path, env)

    server = run_shared_mode_scenario(tmp_path, stand_in, shm_prefix, http_server(start))
    log = server.log()
    assert "Traceback" not in log, log
