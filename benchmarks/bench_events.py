"""Host-wide events: exposure events per user per host and day, and what tracking costs a worker.

1. Events: N worker processes (1, 8, 32) each evaluate the same users with exposure tracking, as
   when a user's requests land on every worker of a host within a day. Counted at a local
   analytics stand-in: ours with flagd delivering (one flagd per host, workers hand results over
   its event queue), ours without (flagd serves flags, each worker delivers its own), and the
   reference (amplitude-experiment 1.13.0, its own interpreter via reference_env.py, polling a
   local flags server). "paced": each worker waits while flagd's queue is half full, as requests
   spread over time would; "burst": all workers evaluate back to back at once (the 10-message
   queue overflows; each worker's pipeline thread waits up to 0.1 s for room, and delivers what
   still finds none itself, counted: "fb").
2. Cost in the worker: on the caller's thread, per tracked evaluation of a new result (a new user
   each call): the channel's send alone (msgpack + mq_send), ``track()`` handing the result to
   flagd, ``track()`` keeping it in the process (no flagd: copy and queue for the pipeline
   thread), and ``track()`` of a repeat (this process's dedup). Target: the send <= 5 us. Timed
   9 calls at a time, the queue emptied between blocks (untimed), so no reader competes for the
   two cores and no send finds the queue full.

Usage: python benchmarks/bench_events.py [--users 40] [--workers 1,8,32] [--quick]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _flags_server import serve_flags  # noqa: E402

KEY = "server-BENCH" + uuid.uuid4().hex[:8]
PREFIX = "bench-" + uuid.uuid4().hex[:8]
ANALYTICS_KEY = uuid.uuid4().hex
EXPOSED_FLAGS = 3
FLAGS = [
    {"key": "checkout", "metadata": {"flagType": "experiment", "flagVersion": 4, "experimentKey": "exp-4"},
     "variants": {"control": {"key": "control", "value": "control"}, "treatment": {"key": "treatment", "value": "treatment"}},
     "segments": [{"metadata": {"segmentName": "All Other Users"}, "variant": "treatment"}]},
    {"key": "banner", "metadata": {"flagType": "release", "flagVersion": 2},
     "variants": {"on": {"key": "on", "value": "on"}}, "segments": [{"variant": "on"}]},
    {"key": "slots", "metadata": {"flagType": "mutual-exclusion-group", "flagVersion": 1},
     "variants": {"a": {"key": "a", "value": "a"}}, "segments": [{"variant": "a", "metadata": {"segmentName": "s"}}]},
    {"key": "quiet", "metadata": {"flagType": "release", "flagVersion": 1},
     "variants": {"off": {"key": "off", "metadata": {"default": True}}}, "segments": [{"variant": "off"}]},
]

# Runs under either interpreter: argv = mode (ours|reference), server url, analytics url, users, pace, prefix.
CHILD = r'''
import json, os, sys, time
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.exposure.exposure_config import ExposureConfig
from amplitude_experiment.local.evaluate_options import EvaluateOptions
mode, server_url, analytics_url, users, pace, prefix = sys.argv[1:7]
analytics = dict(api_key=os.environ["BENCH_ANALYTICS_KEY"], server_url=analytics_url, flush_queue_size=200,
                 flush_interval_millis=200)
options = dict(server_url=server_url, exposure_config=ExposureConfig(**analytics))
if mode == "ours":
    options.update(flag_source="flagd", shm_prefix=prefix)
client = LocalEvaluationClient(os.environ["BENCH_KEY"], LocalEvaluationConfig(**options))
client.start()
channel = getattr(getattr(client, "_tracker", None), "_host", None)
expose = EvaluateOptions(tracks_exposure=True)
for index in range(int(users)):
    queue = channel._queue if channel is not None else None
    if pace == "1" and queue is not None:
        deadline = time.monotonic() + 5
        while queue.current_messages >= queue.max_messages // 2 and time.monotonic() < deadline:
            time.sleep(0.0005)
    client.evaluate_v2(User(user_id="user-%d" % index, device_id="device-%d" % index), options=expose)
if mode == "ours":
    client._tracker.flush(30)  # results that found the queue full went to flagd or here: counted
status = client.flag_source_status.get("events") if mode == "ours" else None
sys.stdout.write(json.dumps(status) + "\n")
sys.stdout.flush()
if mode == "ours":
    client.stop(20)
else:
    for service in (client.exposure_service,):
        for future in service.amplitude.flush() or []:
            if future is not None:
                future.result(timeout=20)
    os._exit(0)
'''


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 32 processes connecting at once must not be refused


class Analytics:
    """A local stand-in of the HTTP API v2 that counts exposure events by user."""

    def __init__(self) -> None:
        self.users: Counter = Counter()
        lock = threading.Lock()
        users = self.users

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with lock:
                    for event in body.get("events", []):
                        if event.get("event_type") == "[Experiment] Exposure":
                            users[event["user_id"]] += 1
                answer = b'{"code": 200}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/2/httpapi" % self.server.server_address[1]

    def per_user_flag(self, users: int) -> float:
        return sum(self.users.values()) / float(users * EXPOSED_FLAGS)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_flagd(flags_path: str, analytics_url: str, with_key: bool) -> subprocess.Popen:
    env = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=KEY)
    if with_key:
        env["AMPLITUDE_ANALYTICS_API_KEY"] = ANALYTICS_KEY
    process = subprocess.Popen([sys.executable, "-m", "flagd", "run", "--shm-prefix", PREFIX, "--flags-file", flags_path,
                                "--analytics-server-url", analytics_url, "--analytics-flush-interval-ms", "200"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    needle = "event=events_relay" if with_key else "event=ready"
    for line in process.stderr:  # bounded by flagd's own start-up; it exits on failure
        if needle in line:
            break
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process


def run_children(python: str, mode: str, count: int, server_url: str, analytics_url: str, users: int, pace: bool
                 ) -> List[Optional[Dict[str, Any]]]:
    env = dict(os.environ, BENCH_KEY=KEY, BENCH_ANALYTICS_KEY=ANALYTICS_KEY)
    if mode == "reference":
        env.pop("PYTHONPATH", None)
    children = [subprocess.Popen([python, "-c", CHILD, mode, server_url, analytics_url, str(users), "1" if pace else "0",
                                  PREFIX], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(count)]
    statuses = []
    for child in children:
        out, err = child.communicate(timeout=300)
        if child.returncode != 0:
            raise RuntimeError("%s child failed: %s" % (mode, err[-2000:]))
        statuses.append(json.loads(out.strip().splitlines()[-1]))
    return statuses


def wait_quiet(analytics: Analytics, seconds: float = 3.0) -> None:
    """Until no new event arrived for 0.5 s (flagd's flush interval is 0.2 s), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    last = -1
    while time.monotonic() < deadline:
        total = sum(analytics.users.values())
        if total == last:
            return
        last = total
        time.sleep(0.5)


def bench_events(worker_counts: List[int], users: int, reference: Optional[str]) -> List[List[str]]:
    from flagd.event_counters import remove_queue
    from amplitude_experiment.snapshot import key_hash

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        flags_path = os.path.join(directory, "flags.json")
        with open(flags_path, "w") as handle:
            json.dump(FLAGS, handle)
        flags_server = serve_flags(json.dumps(FLAGS).encode())
        server_url = "http://127.0.0.1:%d" % flags_server.server_address[1]
        try:
            for count in worker_counts:
                row = [str(count)]
                for label, with_key, pace in (("flagd paced", True, True), ("flagd burst", True, False),
                                              ("no flagd", False, False)):
                    analytics = Analytics()
                    daemon = start_flagd(flags_path, analytics.url, with_key)
                    try:
                        statuses = run_children(sys.executable, "ours", count, server_url, analytics.url, users, pace)
                        wait_quiet(analytics)
                    finally:
                        daemon.terminate()
                        daemon.wait(30)
                        analytics.close()
                    fallbacks = sum(sum(status["fallbacks"].values()) for status in statuses if status)
                    row.append("%.2f%s" % (analytics.per_user_flag(users), " (%d fb)" % fallbacks if with_key else ""))
                if reference:
                    analytics = Analytics()
                    try:
                        run_children(reference, "reference", count, server_url, analytics.url, users, False)
                        wait_quiet(analytics)
                    finally:
                        analytics.close()
                    row.append("%.2f" % analytics.per_user_flag(users))
                else:
                    row.append("n/a")
                rows.append(row)
                print("  ".join(row), flush=True)
        finally:
            flags_server.shutdown()
            flags_server.server_close()
            remove_queue(PREFIX, key_hash(KEY))
            subprocess.run([sys.executable, "-m", "flagd", "clean", "--shm-prefix", PREFIX], cwd=ROOT,
                           env=dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=KEY), capture_output=True)
    return rows


def timed_blocks(fn: Any, drain: Any, blocks: int, repeats: int, per_block: int = 9) -> float:
    """Best-of-``repeats`` microseconds per ``fn(index)`` call, timed ``per_block`` calls at a time
    (fewer than the queue holds) with ``drain()`` emptying the queue between blocks, untimed."""
    best = float("inf")
    index = 0
    for _ in range(repeats):
        total = 0.0
        for _ in range(blocks):
            started = time.perf_counter()
            for _ in range(per_block):
                fn(index)
                index += 1
            total += time.perf_counter() - started
            drain()
        best = min(best, total / (blocks * per_block))
    return best * 1e6


def bench_cost(quick: bool) -> Dict[str, float]:
    """Microseconds per call on the caller's thread, best of repeats."""
    import logging

    import posix_ipc

    from amplitude_experiment import User, Variant
    from amplitude_experiment.exposure import ExposureConfig
    from amplitude_experiment.snapshot import SnapshotWriter, key_hash, remove_all
    from amplitude_experiment.snapshot.layout import (W_ANALYTICS_ENDPOINT, W_ANALYTICS_KEY, analytics_endpoint_hash,
                                                      analytics_key_hash, queue_name)
    from amplitude_experiment.tracking import EvaluationTracker, canonicalize
    from amplitude_experiment.tracking.host_channel import KIND_EXPOSURE
    from flagd.event_counters import remove_queue
    from flagd.events import open_queue

    class Sink:
        def track(self, event: Any) -> None:
            pass

        def flush(self) -> List[Any]:
            return []

    url = "http://127.0.0.1:9/2/httpapi"
    prefix = PREFIX + "c"
    writer = SnapshotWriter(prefix, KEY)
    queue = open_queue(queue_name(prefix, KEY), None)
    writer.words[W_ANALYTICS_ENDPOINT] = analytics_endpoint_hash(url)
    writer.words[W_ANALYTICS_KEY] = analytics_key_hash(ANALYTICS_KEY)

    def drain() -> None:
        for _ in range(queue.max_messages):
            try:
                queue.receive(0)
            except posix_ipc.BusyError:
                return

    logger = logging.getLogger("bench.events")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    # What evaluate_v2 returns for FLAGS: three exposed flags and a default.
    variants = {"checkout": Variant("treatment", key="treatment", metadata={"flagType": "experiment", "flagVersion": 4,
                                                                          "experimentKey": "exp-4",
                                                                          "segmentName": "All Other Users"}),
                "banner": Variant("on", key="on", metadata={"flagType": "release", "flagVersion": 2}),
                "slots": Variant("a", key="a", metadata={"flagType": "mutual-exclusion-group", "flagVersion": 1,
                                                         "segmentName": "s"}),
                "quiet": Variant(None, key="off", metadata={"default": True, "flagType": "release", "flagVersion": 1})}
    blocks, repeats = (500, 3) if quick else (2000, 5)
    users = [User(user_id="user-%d" % index, device_id="device-%d" % index) for index in range(blocks * 9 * repeats * 2)]
    results: Dict[str, float] = {}
    try:
        config = ExposureConfig(api_key=ANALYTICS_KEY, server_url=url)
        routed = EvaluationTracker(logger, None, config, sink_factory=lambda c: Sink())
        routed.route_to_host(prefix, KEY)
        channel = routed._host
        canonicals = [canonicalize(user.user_id, user.device_id, variants) for user in users[:blocks * 9 * repeats]]
        results["send alone (encode + mq_send)"] = timed_blocks(
            lambda index: channel.send(KIND_EXPOSURE, users[index], variants, 1.8e12, canonicals[index]), drain, blocks,
            repeats)
        results["track() new result -> flagd"] = timed_blocks(
            lambda index: routed.track(users[index], variants, True), drain, blocks, repeats)
        here = EvaluationTracker(logger, None, ExposureConfig(api_key=ANALYTICS_KEY, server_url=url),
                                 sink_factory=lambda c: Sink(), max_pending=10 ** 7)
        results["track() new result -> own pipeline (no flagd)"] = timed_blocks(
            lambda index: here.track(users[index], variants, True), lambda: None, blocks, repeats)
        results["track() repeat (process dedup)"] = timed_blocks(
            lambda index: routed.track(users[0], variants, True), drain, blocks, repeats)
        results["fallbacks during the runs"] = float(sum(channel.fallbacks.values()))
        here.flush(5)
    finally:
        queue.close()
        remove_queue(prefix, key_hash(KEY))
        writer.close()
        remove_all(prefix, KEY)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--workers", default="1,8,32")
    parser.add_argument("--quick", action="store_true", help="1 and 8 workers, fewer repeats")
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "sdk"))
    sys.path.insert(0, ROOT)
    print("### Cost per tracked evaluation on the worker's thread (us, best of repeats)\n")
    costs = bench_cost(args.quick)
    for name, value in costs.items():
        print("%-48s %8.2f" % (name, value))
    print("%-48s %8.2f" % ("added by flagd routing (-> flagd minus own)",
                           costs["track() new result -> flagd"] - costs["track() new result -> own pipeline (no flagd)"]))
    from reference_env import reference_python, reference_unavailable_reason

    reference = reference_python()
    if reference is None:
        print("reference unavailable: %s" % reference_unavailable_reason())
    counts = [1, 8] if args.quick else [int(count) for count in args.workers.split(",")]
    print("\n### Exposure events per user and flag per host and day, %d users x %d exposed flags\n"
          % (args.users, EXPOSED_FLAGS))
    print("workers  ours+flagd paced  ours+flagd burst  ours, no flagd  reference")
    bench_events(counts, args.users, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
