"""flagd as a real process: start it, read its log, wait for versions in shared memory, stop or kill it."""

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from typing import Any, Dict, List, Optional

import pytest

from amplitude_experiment.snapshot import SnapshotReader
from waiting import wait_until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")


def marker_flags(value: str, extra: int = 0) -> List[Dict[str, Any]]:
    """A flag list whose flag ``marker`` gives every user the variant ``value``: workers report it,
    so a test sees which config a worker evaluates without knowing version numbers."""
    flags: List[Dict[str, Any]] = [{
        "key": "marker",
        "metadata": {"flagType": "release", "flagVersion": 1},
        "variants": {value: {"key": value, "value": value}, "off": {"key": "off", "metadata": {"default": True}}},
        "segments": [{"variant": value, "metadata": {"segmentName": "All Other Users"}}],
    }]
    for index in range(extra):
        flags.append({"key": "extra-%d" % index, "variants": {"on": {"key": "on"}},
                      "segments": [{"variant": "on"}]})
    return flags


class Flagd:
    """One ``python -m flagd run`` process with its stderr in a file."""

    def __init__(self, log_path: str, prefix: str, key: str, args: List[str], env: Dict[str, str]):
        self.log_path = log_path
        self.prefix = prefix
        self.key = key
        self.args = args
        self.env = env
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Flagd":
        env = dict(os.environ, **self.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flagd", "run", "--shm-prefix", self.prefix] + self.args,
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        return wait_until(lambda: self.log().count(text) >= count and self.log(), timeout, "log line %r" % text)

    def version(self) -> int:
        return SnapshotReader(self.prefix, self.key).current_version()

    def wait_version(self, version: int, timeout: float = 10.0) -> int:
        return wait_until(lambda: self.version() >= version and self.version(), timeout,
                          "snapshot version >= %d" % version)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def terminate(self, timeout: float = 10.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Worker:
    """A worker process evaluating the ``marker`` flag through the SDK in shared mode (tests/flagd/_worker.py)."""

    def __init__(self, prefix: str, key: str, seconds: float = 60.0):
        self.lines: List[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, WORKER, prefix, str(seconds)], cwd=ROOT,
            env=dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=key),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.strip())

    def values(self) -> List[str]:
        with self._lock:
            return [line.split("=", 1)[1] for line in self.lines if line.startswith("value=")]

    def wait_value(self, value: str, timeout: float = 10.0) -> None:
        wait_until(lambda: value in self.values(), timeout, "worker to evaluate %r (saw %s)" % (value, self.values()))

    def evaluations(self) -> int:
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        line = wait_until(lambda: self._last_count_line(), 10, "worker count")
        return int(line.split("=", 1)[1])

    def _last_count_line(self) -> Optional[str]:
        with self._lock:
            counts = [line for line in self.lines if line.startswith("count=")]
            if counts:
                self.lines.remove(counts[-1])
                return counts[-1]
        return None

    def finish(self, timeout: float = 10.0) -> Dict[str, Any]:
        """Stop the worker; returns its summary (evaluations, errors, last value)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        self.process.wait(timeout)
        self._thread.join(timeout)
        summary = [line for line in self.lines if line.startswith("{")]
        stderr = self.process.stderr.read() if self.process.stderr else ""
        assert summary, "worker exited without a summary: %s" % stderr[-2000:]
        result = json.loads(summary[-1])
        result["stderr"] = stderr
        return result

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def deployment_key() -> str:
    """A key of this test's own: its lock, state file and segments never meet another test's."""
    return "server-TESTKEY" + uuid.uuid4().hex


@pytest.fixture
def flagd(tmp_path, shm_prefix, deployment_key):
    """``flagd(*args, env={...})`` builds a flagd process for this test's key and prefix (not started)."""
    made: List[Any] = []

    def make(*args: str, env: Optional[Dict[str, str]] = None, key: Optional[str] = None) -> Flagd:
        environment = {"AMPLITUDE_DEPLOYMENT_KEY": key or deployment_key}
        environment.update(env or {})
        process = Flagd(str(tmp_path / ("flagd-%d.log" % len(made))), shm_prefix, key or deployment_key,
                        list(args), environment)
        made.append(process)
        return process

    yield make
    for process in made:
        process.cleanup()


@pytest.fixture
def worker(shm_prefix, deployment_key):
    """``worker()`` starts a shared-mode SDK worker process for this test's key and prefix."""
    made: List[Worker] = []

    def make(seconds: float = 60.0) -> Worker:
        process = Worker(shm_prefix, deployment_key, seconds)
        made.append(process)
        return process

    yield make
    for process in made:
        process.cleanup()


def run_cli(*args: str, key: str, timeout: float = 30.0, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python -m flagd <args>`` to completion (status, dump, a second run)."""
    environment = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=key, **(env or {}))
    return subprocess.run([sys.executable, "-m", "flagd"] + list(args), cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)
