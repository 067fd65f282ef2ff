"""Cohort targeting with a 1,000,000-member user cohort: flagd + 8 workers vs the reference SDK.

A stand-in (tests/stand_in.py) serves one flag targeting the cohort ("in" for members) and one
twin flag with a plain condition instead, plus the cohort at /sdk/v1/cohort/big. Measured:

* per-worker USS growth: each worker (our SDK, ``flag_source="flagd"``, no cohort config)
  measures its USS (Private_Clean + Private_Dirty) and anonymous memory before its first cohort
  lookup and after 20,000 of them; the reference's growth is measured in one process of its own
  (``CohortSyncConfig``: it downloads the cohort into a Python set per process);
* lookup cost per cohort condition: ``evaluate_v2`` of the cohort flag minus that of its twin,
  in this process, from flagd's shared memory (members and non-members alternating);
* cohort download requests per refresh interval for the host, while 8 workers run;
* from a cohort change at the stand-in to all 8 workers serving it: after flagd is told to
  refresh (SIGHUP) and, separately, the bound a refresh interval adds.

Usage: python benchmarks/bench_cohort.py [--members 1000000] [--workers 8] [--interval-ms 4000]
"""

import argparse
import json
import os
import signal
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

from reference_env import environment, reference_python, reference_unavailable_reason  # noqa: E402
from stand_in import Answer, StandIn, serve_cohort  # noqa: E402

KEY = "server-BENCHCOHORT" + uuid.uuid4().hex[:8]
API_KEY, SECRET = "bench-cohort-api-key", "bench-cohort-secret"
COHORT = "/sdk/v1/cohort/big"


def flags() -> List[Dict[str, Any]]:
    variants = {"in": {"key": "in", "value": "in"}, "out": {"key": "out", "value": "out"}}

    def flag(key: str, condition: Dict[str, Any]) -> Dict[str, Any]:
        return {"key": key, "variants": variants, "segments": [{"conditions": [[condition]], "variant": "in"},
                                                               {"variant": "out"}]}

    return [flag("cohort-flag", {"selector": ["context", "user", "cohort_ids"], "op": "set contains any",
                                 "values": ["big"]}),
            flag("plain-flag", {"selector": ["context", "user", "platform"], "op": "is", "values": ["iOS"]})]


USS = r'''
def uss():
    values = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if parts and parts[0] in ("Private_Clean:", "Private_Dirty:", "Anonymous:"):
                values[parts[0]] = int(parts[1]) * 1024
    return values.get("Private_Clean:", 0) + values.get("Private_Dirty:", 0), values.get("Anonymous:", 0)
'''

WORKER = USS + r'''
import gc, json, os, sys, time
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
client = LocalEvaluationClient(os.environ["AMPLITUDE_DEPLOYMENT_KEY"],
                               LocalEvaluationConfig(flag_source="flagd", shm_prefix=sys.argv[1]))
client.start()
ids = ["user-%d" % (i * 104729 % 2000000) for i in range(20000)]  # half are members
client.evaluate_v2(User(user_id="warm-up"), ["plain-flag"])
gc.collect()
print(json.dumps({"ready": uss()}), flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "lookup":
        # A fresh User per request, as a server builds one: what stays is what the client keeps.
        members = sum(client.evaluate_v2(User(user_id=i), ["cohort-flag"])["cohort-flag"].value == "in" for i in ids)
        print(json.dumps({"members": members}), flush=True)
    elif command == "measure":
        gc.collect()
        print(json.dumps({"after": uss()}), flush=True)
    elif command == "watch":
        newcomer = User(user_id="newcomer")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and client.evaluate_v2(newcomer, ["cohort-flag"])["cohort-flag"].value != "in":
            time.sleep(0.002)
        print(json.dumps({"seen_at": time.monotonic()}), flush=True)
'''

REFERENCE = USS + r'''
import gc, json, logging, sys
from amplitude_experiment import CohortSyncConfig, LocalEvaluationClient, LocalEvaluationConfig, User
logger = logging.getLogger("bench-cohort-reference")
logger.addHandler(logging.NullHandler())
logger.propagate = False
url = sys.argv[1]
gc.collect()
before = uss()
client = LocalEvaluationClient("server-key", LocalEvaluationConfig(
    server_url=url, flag_config_polling_interval_millis=3600000, logger=logger,
    cohort_sync_config=CohortSyncConfig(sys.argv[2], sys.argv[3], cohort_server_url=url)))
client.start()
members = sum(client.evaluate_v2(User(user_id="user-%d" % (i * 104729 % 2000000)), ["cohort-flag"])["cohort-flag"].value
              == "in" for i in range(20000))
gc.collect()
print(json.dumps({"before": before, "after": uss(), "members": members}), flush=True)
client.stop()
'''


def _readline(process: subprocess.Popen, timeout: float) -> Optional[Dict[str, Any]]:
    result: List[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return json.loads(result[0]) if result and result[0] else None


def _ask(workers: List[subprocess.Popen], command: str, timeout: float = 120) -> List[Dict[str, Any]]:
    for worker in workers:
        worker.stdin.write(command + "\n")
        worker.stdin.flush()
    answers = [_readline(worker, timeout) for worker in workers]
    if any(answer is None for answer in answers):
        raise RuntimeError("a worker did not answer %r: %s" % (command, workers[0].stderr.read()[-2000:]))
    return answers  # type: ignore[return-value]


def lookup_cost(prefix: str, rounds: int = 5) -> Dict[str, float]:
    """µs per evaluate_v2 of the cohort flag with flagd's cohorts and without them (the caller's
    cohort ids, as when no cohorts are published), best of ``rounds``, in this process's CPU time
    (the machine is shared: waiting for a core is not the lookup's cost)."""
    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User

    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="flagd", shm_prefix=prefix))
    client.start()
    users = [User(user_id="user-%d" % (i * 104729 % 2000000), cohort_ids=[]) for i in range(20000)]
    lookup = client._cohort_membership
    best: Dict[str, float] = {}
    keys = ["cohort-flag"]
    for mode in ("with cohorts", "without") * rounds:
        client._cohort_membership = lookup if mode == "with cohorts" else None
        started = time.thread_time()
        for user in users:
            client.evaluate_v2(user, keys)
        elapsed = (time.thread_time() - started) / len(users) * 1e6
        best[mode] = min(best.get(mode, elapsed), elapsed)
    client._cohort_membership = lookup
    view = lookup()
    started = time.thread_time()
    for user in users:
        view.cohorts_containing("User", user.user_id, ("big",))
    best["membership"] = (time.thread_time() - started) / len(users) * 1e6
    return best


def run_reference(server: StandIn) -> Optional[Dict[str, Any]]:
    python = reference_python()
    if python is None:
        print("reference unavailable: %s" % reference_unavailable_reason())
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(REFERENCE)
    try:
        started = time.monotonic()
        completed = subprocess.run([python, handle.name, server.url, API_KEY, SECRET], capture_output=True, text=True,
                                   timeout=600, env=environment())
        if completed.returncode != 0:
            print("reference failed: %s" % completed.stderr[-2000:])
            return None
        result = json.loads(completed.stdout)
        result["seconds"] = time.monotonic() - started
        return result
    finally:
        os.unlink(handle.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--interval-ms", type=int, default=4000, help="flagd's --cohort-poll-interval-ms")
    parser.add_argument("--window-s", type=float, default=12.0)
    args = parser.parse_args()
    members = ["user-%d" % i for i in range(args.members)]
    prefix = "bench-cohort-" + uuid.uuid4().hex[:8]
    with StandIn() as server, tempfile.TemporaryDirectory() as scratch:
        server.answer("GET", "/sdk/v2/flags", Answer(200, flags()))
        script = serve_cohort(server, "big", members, last_modified=1)
        worker_path = os.path.join(scratch, "worker.py")
        with open(worker_path, "w") as handle:
            handle.write(WORKER)
        env = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=KEY, AMPLITUDE_COHORT_API_KEY=API_KEY,
                   AMPLITUDE_COHORT_SECRET_KEY=SECRET)
        started = time.monotonic()
        flagd = subprocess.Popen(
            [sys.executable, "-m", "flagd", "run", "--server-url", server.url, "--cohort-server-url", server.url,
             "--cohort-poll-interval-ms", str(args.interval_ms), "--poll-interval-ms", "1000", "--shm-prefix", prefix,
             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        workers: List[subprocess.Popen] = []
        try:
            from amplitude_experiment.snapshot import SnapshotReader

            reader = SnapshotReader(prefix, KEY)
            deadline = time.monotonic() + 300
            while reader.current_version() == 0:
                if time.monotonic() > deadline or flagd.poll() is not None:
                    raise RuntimeError("flagd did not publish")
                time.sleep(0.05)
            first_publish_s = time.monotonic() - started
            workers = [subprocess.Popen([sys.executable, worker_path, prefix], cwd=scratch, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                       for _ in range(args.workers)]
            ready = [_readline(worker, 120) for worker in workers]
            if any(answer is None for answer in ready):
                raise RuntimeError("a worker did not start: %s" % workers[0].stderr.read()[-2000:])
            window_start = len(server.seen(COHORT))
            window_started = time.monotonic()
            found = _ask(workers, "lookup")
            after = _ask(workers, "measure")
            cost = lookup_cost(prefix)
            remaining = args.window_s - (time.monotonic() - window_started)
            if remaining > 0:
                time.sleep(remaining)  # the measurement window itself, not a synchronisation
            window_requests = len(server.seen(COHORT)) - window_start
            window = time.monotonic() - window_started
            # A change at the stand-in: flagd asked at once (SIGHUP), then every worker must serve it.
            for worker in workers:
                worker.stdin.write("watch\n")
                worker.stdin.flush()
            changed_at = time.monotonic()
            script.update(members + ["newcomer"], 2)
            flagd.send_signal(signal.SIGHUP)
            seen = [_readline(worker, 180) for worker in workers]
            if any(answer is None for answer in seen):
                raise RuntimeError("a worker never served the change")
            propagation = max(answer["seen_at"] for answer in seen) - changed_at
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(10)
            flagd.terminate()
            flagd.wait(30)
            from amplitude_experiment.snapshot import remove_all

            remove_all(prefix, KEY)
            lock = "/dev/shm/%s.%s.lock" % (prefix, reader.index_name.split(".")[-2])
            if os.path.exists(lock):
                os.unlink(lock)
        reference = run_reference(server)
    mib = 1024 * 1024
    uss_growth = [(a["after"][0] - r["ready"][0]) / mib for a, r in zip(after, ready)]
    anon_growth = [(a["after"][1] - r["ready"][1]) / mib for a, r in zip(after, ready)]
    print("%d-member user cohort, %d workers, flagd cohort interval %d ms; flagd's first publish %.1f s after start "
          "(download, hashing, member file)\n" % (args.members, args.workers, args.interval_ms, first_publish_s))
    print("| measure | ours | reference 1.13.0 | target |")
    print("|---|---:|---:|---|")
    ref_growth = "%.1f MiB (%.0f s to start)" % ((reference["after"][0] - reference["before"][0]) / mib,
                                                 reference["seconds"]) if reference else "n/a"
    print("| USS growth per worker after 20,000 cohort lookups | max %.2f MiB (mean %.2f; anonymous max %.2f) | %s "
          "| <= 2 MiB |" % (max(uss_growth), sum(uss_growth) / len(uss_growth), max(anon_growth), ref_growth))
    print("| lookup cost per cohort condition (evaluate_v2 with flagd's cohorts - without) | %.2f us (%.2f - %.2f; "
          "the membership lookup alone %.2f us) | | <= 2 us |" % (
              cost["with cohorts"] - cost["without"], cost["with cohorts"], cost["without"], cost["membership"]))
    intervals = window / (args.interval_ms / 1000.0)
    print("| cohort requests per refresh interval, whole host | %.2f (%d in %.1f s = %.1f intervals) | %d "
          "(one per process) | 1 per cohort |" % (window_requests / intervals, window_requests, window, intervals,
                                                  args.workers))
    print("| cohort change -> all %d workers serve it (after flagd asks) | %.2f s | | |" % (args.workers, propagation))
    print("| ... at most, with the refresh interval | %.2f s | | |" % (propagation + args.interval_ms / 1000.0))
    print("\nmembers found per worker: %s; reference: %s" % (sorted({f["members"] for f in found}),
                                                            reference["members"] if reference else "n/a"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
