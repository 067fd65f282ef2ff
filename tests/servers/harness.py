"""What the real-server tests share: flagd and server processes that always stop, and bounded polling.

Every process runs in its own session (process group) and is stopped by :meth:`Process.stop`:
SIGTERM to the group, a bounded wait, then SIGKILL. Every wait polls a real condition with a deadline.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import psutil

from amplitude_experiment.snapshot import SnapshotReader
from stand_in import Answer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VENV_BIN = Path(sys.executable).parent
FLAGS_PATH = "/sdk/v2/flags"
DEPLOYMENT_KEY = "server-realservers-test-key"
FLAG_KEY = "demo-flag"
WORKERS = 4
POLL_INTERVAL_MS = 300

sys.path.insert(0, str(ROOT / "tests" / "systemd"))
from fake_systemd import FakeSystemd  # noqa: E402
from waiting import wait_until  # noqa: E402


def flag(key: str, variant: str) -> Dict[str, Any]:
    """A flag that gives every user ``variant`` (in the API's shape)."""
    return {
        "key": key,
        "metadata": {"flagType": "release", "flagVersion": 1, "deployed": True, "evaluationMode": "local"},
        "variants": {variant: {"key": variant, "value": variant}, "off": {"key": "off", "metadata": {"default": True}}},
        "segments": [{"variant": variant}],
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: Dict[str, str], cwd: Optional[Path] = None):
        self.name = name
        self.log_path = log_dir / ("%s.log" % name)
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            list(argv), env=env, cwd=str(cwd) if cwd else None, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> Set[int]:
        """Pids of the direct children (the workers of a pre-fork master)."""
        try:
            return {child.pid for child in psutil.Process(self.pid).children() if child.status() != psutil.STATUS_ZOMBIE}
        except psutil.NoSuchProcess:
            return set()

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM the main process (as systemd's KillMode=mixed does), wait up to ``timeout`` s for
        it, then SIGKILL whatever is left of its group. Returns the main process's exit status."""
        try:
            if self.alive():
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            self._kill_group()
            return self.popen.wait(5)
        finally:
            self._log.close()

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers: workers the master left behind
        except (ProcessLookupError, PermissionError):
            pass


def base_env(shm_prefix: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "GUNICORN_", "UWSGI_"))}
    env.update(
        AMPLITUDE_DEPLOYMENT_KEY=DEPLOYMENT_KEY,
        AMPLITUDE_SHM_PREFIX=shm_prefix,
        PATH="%s:%s" % (VENV_BIN, env.get("PATH", "")),
        # This checkout's SDK and flagd first (not an editable install of another checkout), then
        # whatever the caller's PYTHONPATH adds.
        PYTHONPATH=os.pathsep.join([str(ROOT / "sdk"), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Flagd:
    """``python -m flagd run`` against a URL or a file, readiness seen through a fake NOTIFY_SOCKET."""

    def __init__(self, log_dir: Path, shm_prefix: str, poll_interval_ms: int, server_url: Optional[str] = None,
                 flags_file: Optional[Path] = None, extra_args: Sequence[str] = (), env: Optional[Dict[str, str]] = None):
        self.systemd = FakeSystemd().__enter__()
        argv = [sys.executable, "-m", "flagd", "run", "--poll-interval-ms", str(poll_interval_ms),
                "--shm-prefix", shm_prefix, "--state-dir", str(log_dir / "flagd-state")]
        if server_url:
            argv += ["--server-url", server_url, "--request-timeout-ms", "5000"]
        if flags_file:
            argv += ["--flags-file", str(flags_file)]
        argv += list(extra_args)
        process_env = base_env(shm_prefix, NOTIFY_SOCKET=self.systemd.address)
        process_env.update(env or {})
        try:
            self.process = Process("flagd", argv, log_dir, process_env, cwd=ROOT)
        except BaseException:
            self.systemd.__exit__(None, None, None)
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            self.systemd.wait_for(
                lambda ms: any("READY" in m.fields for m in ms) or not self.process.alive(), timeout, "READY=1")
        except AssertionError:
            raise AssertionError("flagd not ready:\n" + self.process.log())
        assert self.process.alive(), "flagd exited:\n" + self.process.log()

    def stop(self) -> Optional[int]:
        try:
            return self.process.stop()
        finally:
            self.systemd.__exit__(None, None, None)


def get_json(url: str, timeout: float = 5.0) -> Dict[str, Any]:
    """One request on a new connection (so the kernel may hand it to any worker)."""
    request = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for_workers(server: Process, count: int, timeout: float = 60.0) -> Set[int]:
    """The pids of ``count`` live workers of ``server``'s master, once they all exist."""
    def ready() -> Optional[Set[int]]:
        if not server.alive():
            raise AssertionError("%s exited:\n%s" % (server.name, server.log()))
        pids = server.children()
        return pids if len(pids) == count else None

    return wait_until(ready, timeout, "%d %s workers" % (count, server.name))


def responses_from_every_worker(ask: Callable[[], Dict[str, Any]], workers: Set[int], timeout: float = 60.0,
                                max_requests: int = 5000) -> Dict[int, List[Dict[str, Any]]]:
    """Ask until each worker in ``workers`` has answered at least once; every answer, by pid.

    Bounded by ``timeout`` and ``max_requests``; fails naming the workers that never answered.
    """
    by_pid: Dict[int, List[Dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    for _ in range(max_requests):
        answer = ask()
        by_pid.setdefault(answer["pid"], []).append(answer)
        if workers <= set(by_pid):
            return by_pid
        if time.monotonic() > deadline:
            break
    raise AssertionError("workers %s never answered (answers came from %s)" % (sorted(workers - set(by_pid)), sorted(by_pid)))


def polls_between(stand_in: Any, start: float, end: float) -> int:
    return sum(1 for request in stand_in.seen(FLAGS_PATH) if start <= request.at <= end)


def http_server(start_server: Callable[[Dict[str, str]], Process]) -> Callable[..., Any]:
    """Adapt an HTTP server for :func:`run_shared_mode_scenario`: it listens on ``env["PORT"]`` and
    answers ``GET /?user_id=`` with the example app's JSON."""
    def start(env: Dict[str, str]) -> Tuple[Process, Callable[[Set[int]], Dict[int, List[Dict[str, Any]]]]]:
        port = free_port()
        env["PORT"] = str(port)
        server = start_server(env)
        url = "http://127.0.0.1:%d/?user_id=u1" % port

        def every_worker(workers: Set[int]) -> Dict[int, List[Dict[str, Any]]]:
            wait_until(lambda: _answers(url), 60, "%s to answer on port %d" % (server.name, port))
            return responses_from_every_worker(lambda: get_json(url), workers)

        return server, every_worker

    return start


def run_shared_mode_scenario(tmp_path: Path, stand_in: Any, shm_prefix: str, start: Callable[..., Any]) -> Process:
    """flagd + a pre-fork server; a flag change reaches every worker; one upstream poller per host.

    ``start(env)`` starts the server with ``env`` and returns it with ``every_worker(pids)``, which
    has each of those worker processes evaluate once (at least) and returns the answers by pid.
    Workers run ``flag_source="auto"`` pointed at the stand-in, so any poll of theirs would be seen.
    """
    stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag(FLAG_KEY, "control")]))
    flagd = Flagd(tmp_path, shm_prefix, POLL_INTERVAL_MS, server_url=stand_in.url)
    server = None
    try:
        flagd.wait_ready()
        started = time.monotonic()
        env = base_env(shm_prefix, AMPLITUDE_FLAG_SOURCE="auto", AMPLITUDE_SERVER_URL=stand_in.url)
        server, every_worker = start(env)
        workers = wait_for_workers(server, WORKERS)

        before = every_worker(workers)
        for pid, answers in before.items():
            assert {a["variants"].get(FLAG_KEY) for a in answers} == {"control"}, (pid, answers)

        reader = SnapshotReader(shm_prefix, DEPLOYMENT_KEY)
        old_version = reader.current_version()
        assert old_version > 0
        stand_in.answer("GET", FLAGS_PATH, Answer(200, [flag(FLAG_KEY, "treatment")]))
        new_version = wait_until(lambda: reader.current_version() > old_version and reader.current_version(),
                                 10 + 5 * POLL_INTERVAL_MS / 1000, "flagd to publish the change")

        # Published: from now on every answer, from every worker, is the new snapshot's. Keep asking
        # for a few poll intervals, so the poll count below covers a window where a second poller
        # would show.
        soak_until = time.monotonic() + 4 * POLL_INTERVAL_MS / 1000.0
        for round_number in range(100):
            after = every_worker(workers)
            for pid, answers in after.items():
                assert {a["variants"].get(FLAG_KEY) for a in answers} == {"treatment"}, (round_number, pid, answers)
                assert min(a["snapshot_version"] for a in answers) >= new_version, (round_number, pid, answers)
            # The same workers answered before and after: none was restarted to pick up the change.
            assert set(after) == set(before) == workers == server.children()
            if time.monotonic() >= soak_until:
                break

        ended = time.monotonic()
        polls = polls_between(stand_in, started, ended)
        intervals = (ended - started) / (POLL_INTERVAL_MS / 1000.0)
        # One poller for the host: at most one poll per interval (+2 for the edges of the window).
        # Four workers polling as well would be several times that.
        assert polls <= intervals + 2, "%d polls in %.1f intervals" % (polls, intervals)
        assert polls >= intervals / 3 - 1, "flagd stopped polling: %d polls in %.1f intervals" % (polls, intervals)
    finally:
        server_status = server.stop() if server is not None else None
        flagd_status = flagd.stop()
    assert server_status == 0, server.log()
    assert flagd_status == 0, flagd.process.log()
    return server


def _answers(url: str) -> Optional[Dict[str, Any]]:
    try:
        return get_json(url, timeout=2)
    except OSError:
        return None
