"""Upstream flag requests per poll interval: 8 workers behind one flagd vs 8 reference clients.

Both setups poll a local stand-in of ``GET /sdk/v2/flags`` (tests/stand_in.py) serving
examples/flags.json, with the same poll interval. After every worker has started and evaluated
once, the stand-in's request count is read at the start and end of a fixed window.

* ours: one ``python -m flagd run`` plus 8 worker processes using our SDK with
  ``flag_source="auto"`` (they find flagd's snapshot and do not poll);
* reference: 8 worker processes using amplitude-experiment 1.13.0, each polling on its own
  (run by ``reference_env.reference_python()`` in its own interpreter).

Usage: python benchmarks/bench_flagd.py [--workers 8] [--interval-ms 1000] [--window-s 6]
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Dict, Iterator, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

from reference_env import reference_python, reference_unavailable_reason  # noqa: E402
from stand_in import Answer, StandIn  # noqa: E402

FLAGS_PATH = "/sdk/v2/flags"
KEY = "server-BENCH" + uuid.uuid4().hex[:8]

# Runs under either interpreter: our SDK (with flag_source/shm_prefix) or the reference.
WORKER = r'''
import json, os, select, sys, time
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
server_url, interval_ms, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = dict(server_url=server_url, flag_config_polling_interval_millis=interval_ms)
if prefix != "-":
    options.update(flag_source="auto", shm_prefix=prefix)
client = LocalEvaluationClient(os.environ["AMPLITUDE_DEPLOYMENT_KEY"], LocalEvaluationConfig(**options))
client.start()
user = User(user_id="alice@example.com", device_id="d2", country="Germany", version="2.1.0")
first = client.evaluate_v2(user)
print(json.dumps({"ready": sorted(first)}), flush=True)
evaluations = errors = 0
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if len(client.evaluate_v2(user)) != len(first):
            errors += 1
    except Exception:
        errors += 1
    evaluations += 1
    readable, _, _ = select.select([sys.stdin], [], [], 0.01)  # ~100 evaluations/s per worker
    if readable and not sys.stdin.readline():
        break
print(json.dumps({"evaluations": evaluations, "errors": errors}), flush=True)
client.stop()
'''


class Workers:
    """N worker processes; knows when all have evaluated once and collects their summaries."""

    def __init__(self, python: str, script: str, count: int, server_url: str, interval_ms: int, prefix: str):
        env = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=KEY)
        self.processes = [
            subprocess.Popen([python, script, server_url, str(interval_ms), prefix], cwd=tempfile.gettempdir(),
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for _ in range(count)
        ]

    def wait_ready(self, timeout: float = 60.0) -> List[List[str]]:
        deadline = time.monotonic() + timeout
        flags = []
        for process in self.processes:
            line = _readline(process, deadline)
            if not line:
                raise RuntimeError("a worker failed to start: %s" % process.stderr.read()[-2000:])
            flags.append(json.loads(line)["ready"])
        return flags

    def finish(self, timeout: float = 30.0) -> List[Dict[str, int]]:
        for process in self.processes:
            process.stdin.close()
        deadline = time.monotonic() + timeout
        results = []
        for process in self.processes:
            line = _readline(process, deadline)
            process.wait(max(0.1, deadline - time.monotonic()))
            results.append(json.loads(line) if line else {"evaluations": 0, "errors": -1})
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _readline(process: subprocess.Popen, deadline: float) -> Optional[str]:
    result: List[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    return result[0].strip() if result and result[0] else None


def measure(server: StandIn, workers: Workers, window_s: float, interval_ms: int) -> Dict[str, float]:
    flags = workers.wait_ready()
    start = len(server.seen(FLAGS_PATH))
    time.sleep(window_s)  # the measurement window itself, not a synchronisation
    requests = len(server.seen(FLAGS_PATH)) - start
    results = workers.finish()
    return {
        "requests": requests,
        "startup_requests": start,
        "per_interval": requests / (window_s * 1000.0 / interval_ms),
        "evaluations": sum(r["evaluations"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "flags_seen": len(flags[0]) if flags else 0,
    }


@contextlib.contextmanager
def published_flagd(key: str, prefix: str, *options: str) -> Iterator[subprocess.Popen]:
    """``flagd run`` with ``options`` under ``prefix``, once it published its first version; on
    exit it is stopped and its shared-memory files are removed."""
    flagd = subprocess.Popen(
        [sys.executable, "-m", "flagd", "run", *options, "--shm-prefix", prefix, "--log-level", "warning"],
        cwd=ROOT, env=dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=key), stdout=subprocess.DEVNULL)
    try:
        from amplitude_experiment.snapshot import SnapshotReader

        reader = SnapshotReader(prefix, key)
        deadline = time.monotonic() + 30
        while reader.current_version() == 0:  # bounded by the deadline
            if time.monotonic() > deadline or flagd.poll() is not None:
                raise RuntimeError("flagd did not publish")
            time.sleep(0.05)
        yield flagd
    finally:
        flagd.terminate()
        flagd.wait(10)
        from amplitude_experiment.snapshot import remove_all

        remove_all(prefix, key)
        from flagd.config import Config

        lock = "/dev/shm/%s.%s.lock" % (prefix, Config(deployment_key=key).key_hash)
        if os.path.exists(lock):
            os.unlink(lock)


def run_ours(server: StandIn, script: str, count: int, interval_ms: int, window_s: float) -> Dict[str, float]:
    prefix = "bench-flagd-" + uuid.uuid4().hex[:8]
    with published_flagd(KEY, prefix, "--server-url", server.url, "--poll-interval-ms", str(interval_ms)):
        workers = Workers(sys.executable, script, count, server.url, interval_ms, prefix)
        try:
            return measure(server, workers, window_s, interval_ms)
        finally:
            workers.kill()


def run_reference(server: StandIn, script: str, count: int, interval_ms: int, window_s: float) -> Optional[Dict[str, float]]:
    python = reference_python()
    if python is None:
        print("reference unavailable: %s" % reference_unavailable_reason())
        return None
    workers = Workers(python, script, count, server.url, interval_ms, "-")
    try:
        return measure(server, workers, window_s, interval_ms)
    finally:
        workers.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--window-s", type=float, default=6.0)
    args = parser.parse_args()
    with open(os.path.join(ROOT, "examples", "flags.json"), "rb") as handle:
        flags_body = handle.read()
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "worker.py")
        with open(script, "w") as handle:
            handle.write(WORKER)
        rows = []
        for name, runner in (("ours: flagd + %d workers (auto)" % args.workers, run_ours),
                             ("reference 1.13.0: %d clients" % args.workers, run_reference)):
            with StandIn() as server:
                server.answer("GET", FLAGS_PATH, Answer(200, flags_body))
                result = runner(server, script, args.workers, args.interval_ms, args.window_s)
            rows.append((name, result))
    print("poll interval %d ms, window %.1f s (%.1f intervals), flags from examples/flags.json\n"
          % (args.interval_ms, args.window_s, args.window_s * 1000 / args.interval_ms))
    print("| setup | requests before the window (start-up) | upstream requests in window | per interval "
          "| evaluations | errors |")
    print("|---|---|---|---|---|---|")
    for name, result in rows:
        if result is None:
            print("| %s | n/a | n/a | n/a | n/a | n/a |" % name)
        else:
            print("| %s | %d | %d | %.2f | %d | %d |" % (
                name, result["startup_requests"], result["requests"], result["per_interval"],
                result["evaluations"], result["errors"]))
    ours, reference = rows[0][1], rows[1][1]
    if ours and reference and ours["per_interval"]:
        print("\nreference / ours upstream requests: %.1fx" % (reference["per_interval"] / ours["per_interval"]))
    return 0 if ours and ours["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
