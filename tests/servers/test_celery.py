"""examples/celery with a real Celery prefork worker (4 pool processes) and a real flagd.

The broker is kombu's filesystem transport (the example's celeryconfig.py), so no broker server is
needed. A test-only ``rendezvous`` task (celery_rendezvous.py) makes each of the 4 pool processes
evaluate once per round; flagd publishes a change and every process serves it on its next task.
"""

import importlib.util
import os
from pathlib import Path

import pytest

from harness import EXAMPLES, VENV_BIN, WORKERS, Process, run_shared_mode_scenario

celery = pytest.importorskip("celery", reason="Celery is not installed (pip install celery)")
ResultTimeout = pytest.importorskip("celery.exceptions").TimeoutError

pytestmark = pytest.mark.real_servers

HERE = Path(__file__).resolve().parent
ROUND_TIMEOUT = 60.0


def _client_app(data_dir: Path):
    """A Celery app that only sends tasks and reads results, with the example's broker settings."""
    previous = os.environ.get("CELERY_EXAMPLE_DIR")
    os.environ["CELERY_EXAMPLE_DIR"] = str(data_dir)
    try:
        spec = importlib.util.spec_from_file_location("example_celeryconfig", EXAMPLES / "celery" / "celeryconfig.py")
        config = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(config)
    finally:
        if previous is None:
            del os.environ["CELERY_EXAMPLE_DIR"]
        else:
            os.environ["CELERY_EXAMPLE_DIR"] = previous
    app = celery.Celery("test-client")
    app.config_from_object(config)
    return app


def test_every_celery_pool_process_serves_flagds_change(tmp_path, stand_in, shm_prefix):
    data_dir = tmp_path / "celery"
    client = _client_app(data_dir)
    rounds = iter(range(1000))

    def start(env):
        env.update(
            CELERY_EXAMPLE_DIR=str(data_dir),
            PYTHONPATH=os.pathsep.join([str(EXAMPLES / "celery"), str(HERE), env["PYTHONPATH"]]),
        )
        argv = [str(VENV_BIN / "celery"), "-A", "celery_rendezvous", "worker", "--pool", "prefork",
                "--concurrency", str(WORKERS), "--loglevel", "info", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-O", "fair", "--hostname", "test-%s@127.0.0.1" % shm_prefix]
        server = Process("celery", argv, tmp_path, env, cwd=EXAMPLES / "celery")

        def every_worker(workers):
            """One rendezvous round: WORKERS tasks at once, each held until all have checked in.

            kombu's filesystem broker can lose a message on a heavily loaded machine (seen once in
            CI: one of four tasks never ran); a round whose answers do not all arrive is sent again,
            once. What the answers must say is unchanged.
            """
            for attempt in range(2):
                folder = tmp_path / ("round-%d" % next(rounds))
                folder.mkdir()
                results = [client.send_task("rendezvous", args=(str(folder), WORKERS, ROUND_TIMEOUT))
                           for _ in range(WORKERS)]
                try:
                    answers = [result.get(timeout=ROUND_TIMEOUT + 30) for result in results]
                    break
                except ResultTimeout:
                    if attempt == 1:
                        raise
            by_pid = {}
            for answer in answers:
                by_pid.setdefault(answer["pid"], []).append(answer)
            assert set(by_pid) == workers, ("each task should run in its own pool process", answers, server.log())
            return by_pid

        return server, every_worker

    server = run_shared_mode_scenario(tmp_path, stand_in, shm_prefix, start)
    log = server.log()
    assert "Traceback" not in log, log
