"""Push to serve over the flag stream: flagd --stream + N shared-mode workers vs N reference processes.

The stand-in (tests/stand_in.py) serves ``GET /sdk/stream/v1/flags``; each round it pushes a flag
list whose flag ``marker`` answers a new value, and every worker, evaluating ``marker`` in a loop,
reports the wall-clock time it first served it. A round's latency is push -> the last of the N
workers serving it; median and p99 over the rounds.

* ours: one ``python -m flagd run --stream`` and N worker processes with ``flag_source="flagd"``
  (one stream connection for the host);
* reference: N processes of amplitude-experiment 1.13.0 with ``stream_updates=True`` (one stream
  connection each);
* ours per process: N processes of ours with ``stream_updates=True, flag_source="poll"`` (what the
  reference does, with our SDK).

Usage: python benchmarks/bench_stream.py [--workers 8] [--pushes 50]
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

from bench_flagd import published_flagd  # noqa: E402
from reference_env import environment, reference_python, reference_unavailable_reason  # noqa: E402
from stand_in import Answer, EventStream, StandIn  # noqa: E402

STREAM_PATH = "/sdk/stream/v1/flags"
FLAGS_PATH = "/sdk/v2/flags"
KEY = "server-BENCH" + uuid.uuid4().hex[:8]
#: Flags besides the marker in every pushed list (a realistic config, not one flag).
OTHER_FLAGS = 50

# Runs under either interpreter: ours in shared mode (prefix given) or the reference streaming.
WORKER = r'''
import json, os, select, sys, time
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
server_url, prefix = sys.argv[1], sys.argv[2]
if prefix in ("-", "poll"):  # the reference, or ours streaming in each process
    options = dict(server_url=server_url, stream_server_url=server_url, stream_updates=True)
    if prefix == "poll":
        options["flag_source"] = "poll"
else:
    options = dict(flag_source="flagd", shm_prefix=prefix)
client = LocalEvaluationClient(os.environ["AMPLITUDE_DEPLOYMENT_KEY"], LocalEvaluationConfig(**options))
client.start()
user = User(user_id="u1")
def marker():
    variant = client.evaluate_v2(user, ["marker"]).get("marker")
    return variant.value if variant is not None else None
last = marker()
print(json.dumps({"value": last, "at": time.time()}), flush=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    value = marker()
    if value != last:
        last = value
        print(json.dumps({"value": value, "at": time.time()}), flush=True)
    readable, _, _ = select.select([sys.stdin], [], [], 0.002)
    if readable and not sys.stdin.readline():
        break
sys.stdout.flush()
os._exit(0)  # the reference's stop() leaves its stream thread running
'''


def flag_list(value: str) -> List[Dict[str, Any]]:
    flags = [{"key": "marker", "variants": {value: {"key": value, "value": value}}, "segments": [{"variant": value}]}]
    for index in range(OTHER_FLAGS):
        flags.append({"key": "flag-%d" % index, "metadata": {"flagType": "release", "flagVersion": 1},
                      "variants": {"on": {"key": "on", "value": "on"}, "off": {"key": "off"}},
                      "segments": [{"conditions": [[{"selector": ["context", "user", "country"], "op": "is",
                                                     "values": ["DE", "FR"]}]], "variant": "on"},
                                   {"variant": "off"}]})
    return flags


class Workers:
    """N worker processes, each reporting (value, wall time) lines read by a thread into a queue."""

    def __init__(self, python: str, script: str, count: int, server_url: str, prefix: str, env: Dict[str, str]):
        env = dict(env, AMPLITUDE_DEPLOYMENT_KEY=KEY)
        self.processes = [
            subprocess.Popen([python, script, server_url, prefix], cwd=tempfile.gettempdir(), env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(count)
        ]
        self.queues: List["queue.Queue[Dict[str, Any]]"] = []
        for process in self.processes:
            lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
            threading.Thread(target=self._read, args=(process, lines), daemon=True).start()
            self.queues.append(lines)

    @staticmethod
    def _read(process: subprocess.Popen, lines: "queue.Queue[Dict[str, Any]]") -> None:
        for line in process.stdout:
            lines.put(json.loads(line))

    def wait_value(self, value: str, timeout: float = 30.0) -> List[float]:
        """Each worker's wall time of first serving ``value``."""
        deadline = time.monotonic() + timeout
        times = []
        for lines in self.queues:
            while True:
                report = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                if report["value"] == value:
                    times.append(report["at"])
                    break
        return times

    def stop(self) -> None:
        for process in self.processes:
            try:
                process.stdin.close()
            except OSError:
                pass
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def rounds(server: StandIn, workers: Workers, pushes: int) -> Dict[str, Any]:
    workers.wait_value("v0", timeout=60)
    latencies = []
    for round_index in range(1, pushes + 1):
        value = "v%d" % round_index
        pushed_at = time.time()
        server.push(flag_list(value))
        served = workers.wait_value(value)
        latencies.append(max(served) - pushed_at)
        time.sleep(0.02)  # spacing between rounds, not a synchronisation
    latencies.sort()
    return {
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "streams": server.streams_opened,
        "polls": len(server.seen(FLAGS_PATH)),
    }


def run_ours(server: StandIn, script: str, count: int, pushes: int) -> Dict[str, Any]:
    prefix = "bench-stream-" + uuid.uuid4().hex[:8]
    with published_flagd(KEY, prefix, "--stream", "--server-url", server.url, "--stream-server-url", server.url):
        workers = Workers(sys.executable, script, count, server.url, prefix, dict(os.environ))
        try:
            return rounds(server, workers, pushes)
        finally:
            workers.stop()


def run_reference(server: StandIn, script: str, count: int, pushes: int) -> Optional[Dict[str, Any]]:
    python = reference_python()
    if python is None:
        print("reference unavailable: %s" % reference_unavailable_reason())
        return None
    workers = Workers(python, script, count, server.url, "-", environment())
    try:
        return rounds(server, workers, pushes)
    finally:
        workers.stop()


def run_ours_per_process(server: StandIn, script: str, count: int, pushes: int) -> Dict[str, Any]:
    workers = Workers(sys.executable, script, count, server.url, "poll", dict(os.environ))
    try:
        return rounds(server, workers, pushes)
    finally:
        workers.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--keep-alive-s", type=float, default=1.0,
                        help="the stand-in's keep-alive period")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "worker.py")
        with open(script, "w") as handle:
            handle.write(WORKER)
        rows = []
        for name, runner in (("ours: flagd --stream + %d workers (shared)" % args.workers, run_ours),
                             ("reference 1.13.0: %d processes, stream_updates=True" % args.workers, run_reference),
                             ("ours: %d processes, stream_updates=True (poll mode)" % args.workers,
                              run_ours_per_process)):
            with StandIn() as server:
                server.answer("GET", STREAM_PATH, EventStream(initial=flag_list("v0"), keep_alive_every=args.keep_alive_s,
                                                              max_seconds=600))
                server.answer("GET", FLAGS_PATH, Answer(200, flag_list("v0")))
                rows.append((name, runner(server, script, args.workers, args.pushes)))
    print("%d pushes of %d flags, a keep-alive every %.1f s; latency = push -> the last of %d workers serving it\n"
          % (args.pushes, OTHER_FLAGS + 1, args.keep_alive_s, args.workers))
    print("| setup | median ms | p99 ms | max ms | stream connections | polls |")
    print("|---|---|---|---|---|---|")
    for name, result in rows:
        if result is None:
            print("| %s | n/a | n/a | n/a | n/a | n/a |" % name)
        else:
            print("| %s | %.1f | %.1f | %.1f | %d | %d |" % (name, result["median_ms"], result["p99_ms"],
                                                            result["max_ms"], result["streams"], result["polls"]))
    ours, reference = rows[0][1], rows[1][1]
    if ours and reference:
        print("\nreference / ours: median %.2fx, p99 %.2fx; stream connections per host %d vs %d"
              % (reference["median_ms"] / ours["median_ms"], reference["p99_ms"] / ours["p99_ms"],
                 ours["streams"], reference["streams"]))
    return 0 if ours and ours["p99_ms"] <= 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
