"""Shared mode: per-evaluate overhead, publish-to-every-worker latency, per-worker memory vs the reference.

1. Overhead: ``evaluate_v2(user, [one key])`` on the same 1000-flag config (benchmarks/flaggen.py,
   seed 7), from an in-process FlagSet (a source that returns it) and from flagd's snapshot
   (``flag_source="flagd"``). Interleaved repeats, best of each; target: shared <= +0.5 us.
2. Latency: a preloaded client (created and started before fork, like gunicorn ``preload_app``) in 8
   forked workers that each evaluate about every millisecond; the time from the start of
   ``publish()`` until the last worker serves the new version (CLOCK_MONOTONIC is host-wide).
3. Memory: USS (psutil ``memory_full_info``) of worker processes holding the 1000 flags after
   evaluating 200 users: ours in shared mode and in poll mode, in a fresh interpreter, and the
   forked workers of (2); the reference (amplitude-experiment 1.13.0, its own interpreter via
   reference_env.py) polling a local stand-in flags server. "flags" = USS minus the same
   interpreter's USS with the SDK imported and no client.

Usage: python benchmarks/bench_shared.py [--workers 8] [--rounds 5] [--quick]
"""

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
import timeit
import uuid
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _flags_server import serve_flags  # noqa: E402

FLAG_COUNT = 1000
SEED = 7
KEY = "server-BENCH" + uuid.uuid4().hex[:8]
PREFIX = "bench-" + uuid.uuid4().hex[:8]

# Runs under either interpreter (ours or the reference's): the same API, from argv.
CHILD = r'''
import gc, os, sys
sys.path.insert(0, sys.argv[4])
from flaggen import build_user, generate_users
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
mode, server_url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
users = [build_user(spec, User) for spec in generate_users(11, 200)]
client = None
if mode != "baseline":
    options = dict(server_url=server_url)
    if mode.startswith("flagd") or mode == "poll":
        options.update(flag_source=mode.split("-")[0], shm_prefix=prefix)
    client = LocalEvaluationClient(os.environ["BENCH_KEY"], LocalEvaluationConfig(**options))
    client.start()
if mode.endswith("preload"):  # gunicorn preload_app: started in the master, which forks a worker
    gc.freeze()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        os._exit(0)
while True:
    if client is not None:
        for user in users:
            client.evaluate_v2(user)
    print("ready %d" % os.getpid(), flush=True)
    if sys.stdin.readline() != "again\n":
        break
'''


def document(flags: List[Dict[str, Any]], marker: str) -> Dict[str, Any]:
    """A flagd document with a ``bench-marker`` flag whose variant tells workers which publish they serve."""
    marker_flag = {"key": "bench-marker", "metadata": {"deployed": True, "evaluationMode": "local",
                                                       "flagType": "release", "flagVersion": 1},
                   "segments": [{"variant": marker}], "variants": {marker: {"key": marker, "value": marker}}}
    return {"flags": flags + [marker_flag], "source": "bench", "fetched_at_ns": time.time_ns(),
            "flag_count": len(flags) + 1, "poll_interval_ms": 30000}


# --- 1. overhead ----------------------------------------------------------------------------


class StaticSource:
    """An in-process FlagSet: the baseline shared mode is compared with."""

    def __init__(self, flags: Any) -> None:
        self._flags = flags

    def start(self) -> None:
        pass

    def current(self) -> Any:
        return self._flags

    def stop(self) -> None:
        pass

    def status(self) -> Dict[str, Any]:
        return {"source": "static"}


def bench_overhead(flags: List[Dict[str, Any]], quick: bool) -> Dict[str, float]:
    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
    from amplitude_experiment.evaluation import compile_flags
    from amplitude_experiment.snapshot import SnapshotWriter

    with SnapshotWriter(PREFIX, KEY) as writer:
        writer.publish(document(flags, "r0"))
        shared = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="flagd", shm_prefix=PREFIX))
        shared.start()
        static = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="poll"))
        static._source = StaticSource(compile_flags(document(flags, "r0")["flags"]))
        user = User(user_id="u1", device_id="d1", country="Germany")
        keys = [flags[0]["key"]]
        assert shared.evaluate_v2(user, keys) == static.evaluate_v2(user, keys)
        number = 5000 if quick else 20000
        best: Dict[str, float] = {}
        for _ in range(5 if quick else 9):  # interleaved, so drift on a shared machine hits both
            for name, client in (("static", static), ("shared", shared)):
                seconds = timeit.timeit(lambda: client.evaluate_v2(user, keys), number=number)
                best[name] = min(best.get(name, 1e9), seconds / number * 1e6)
            for name, client in (("static current()", static), ("shared current()", shared)):
                seconds = timeit.timeit(client._source.current, number=number * 10)
                best[name] = min(best.get(name, 1e9), seconds / (number * 10) * 1e6)
        shared.stop()
    return best


# --- 2. latency -----------------------------------------------------------------------------


def worker_loop(client: Any, user: Any, conn: Any) -> None:
    """Evaluate about every millisecond; report when a new marker variant is served."""
    served = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        variant = client.evaluate_v2(user, ["bench-marker"]).get("bench-marker")
        value = variant.value if variant is not None else None
        if value != served:
            seen_ns = time.monotonic_ns()
            served = value
            os.write(conn, ("%s %d\n" % (value, seen_ns)).encode())
            if value == "stop":
                return
        time.sleep(0.001)


def bench_latency(flags: List[Dict[str, Any]], workers: int, rounds: int) -> Tuple[Dict[str, List[float]], List[int]]:
    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
    from amplitude_experiment.snapshot import SnapshotWriter

    results: Dict[str, List[float]] = {}
    uss: List[int] = []
    with SnapshotWriter(PREFIX, KEY) as writer:
        writer.publish(document(flags, "r0"))
        client = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="flagd", shm_prefix=PREFIX))
        client.start()  # in the "master", before fork
        user = User(user_id="u1")
        read_fd, write_fd = os.pipe()
        pids = []
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                try:
                    worker_loop(client, user, write_fd)
                finally:
                    os._exit(0)
            pids.append(pid)
        os.close(write_fd)
        reader = Lines(read_fd)
        try:
            collect(reader, "r0", workers)
            for label, size in (("1000 flags", flags), ("10 flags", flags[:10])):
                times = []
                for n in range(1, rounds + 1):
                    marker = "%s-%d" % (label.split()[0], n)
                    started = time.monotonic_ns()
                    writer.publish(document(size, marker))
                    seen = collect(reader, marker, workers)
                    times.append((max(seen) - started) / 1e6)
                results[label] = times
            import psutil

            writer.publish(document(flags, "final"))  # every worker holds its own decode of a post-fork version
            collect(reader, "final", workers)
            uss = [psutil.Process(pid).memory_full_info().uss for pid in pids]
            writer.publish(document([], "stop"))
            collect(reader, "stop", workers)
        finally:
            for pid in pids:
                reap(pid)
            os.close(read_fd)
    return results, uss


class Lines:
    """Lines from the workers' shared pipe (raw reads: select() must see every unread byte)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def next(self, deadline: float) -> str:
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise TimeoutError
            self.pending += os.read(self.fd, 65536)
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()


def collect(lines: Lines, marker: str, workers: int, seconds: float = 60) -> List[int]:
    """Monotonic times at which each worker first served ``marker``."""
    deadline = time.monotonic() + seconds
    seen: List[int] = []
    while len(seen) < workers:
        try:
            value, at = lines.next(deadline).split()
        except TimeoutError:
            raise RuntimeError("only %d of %d workers served %s in time" % (len(seen), workers, marker)) from None
        if value == marker:
            seen.append(int(at))
    return seen


def reap(pid: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)


# --- 3. memory ------------------------------------------------------------------------------


def child_uss(python: str, mode: str, server_url: str, between: Any = None) -> List[int]:
    """Start a worker, wait until it has loaded and evaluated, return its USS; with ``between``,
    call it, let the worker evaluate again and measure once more."""
    import psutil

    env = dict(os.environ, BENCH_KEY=KEY)
    process = subprocess.Popen([python, "-c", CHILD, mode, server_url, PREFIX, HERE], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/")
    lines = Lines(process.stdout.fileno())
    readings = []
    try:
        for step in range(2 if between is not None else 1):
            if step:
                between()
                process.stdin.write(b"again\n")
                process.stdin.flush()
            word, pid = lines.next(time.monotonic() + 120).split()
            readings.append(psutil.Process(int(pid)).memory_full_info().uss)
        return readings
    finally:
        process.stdin.close()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench_memory(flags: List[Dict[str, Any]]) -> Dict[str, List[int]]:
    from amplitude_experiment.snapshot import SnapshotWriter
    from reference_env import reference_python, reference_unavailable_reason

    server = serve_flags(json.dumps(flags).encode())
    url = "http://127.0.0.1:%d" % server.server_address[1]
    results: Dict[str, List[int]] = {}
    try:
        with SnapshotWriter(PREFIX, KEY) as writer:
            writer.publish(document(flags, "r0"))
            for mode in ("baseline", "flagd", "poll"):
                results["ours " + mode] = child_uss(sys.executable, mode, url)
            results["ours flagd-preload"] = child_uss(sys.executable, "flagd-preload", url,
                                                      lambda: writer.publish(document(flags, "r1")))
        reference = reference_python()
        if reference is None:
            print("reference unavailable: %s" % reference_unavailable_reason())
        else:
            for mode in ("baseline", "reference", "reference-preload"):
                results["reference " + mode] = child_uss(reference, mode, url)
    finally:
        server.shutdown()
    return results


def bench_decode(flags: List[Dict[str, Any]]) -> Tuple[float, float]:
    """What one worker spends on a new version: mapping it (header and directory checked), then,
    only if it evaluates every flag, compiling all of them from the mapping (ms, best of 3)."""
    from amplitude_experiment.evaluation import FlagSet
    from amplitude_experiment.snapshot import SnapshotReader, SnapshotWriter

    mapping = compile_ms = 1e9
    with SnapshotWriter(PREFIX, KEY) as writer:
        reader = SnapshotReader(PREFIX, KEY)
        for n in range(3):
            version = writer.publish(document(flags, "d%d" % n))
            started = time.perf_counter()
            table = reader.read(version)
            mapped = time.perf_counter()
            FlagSet(table).all_flags()
            mapping = min(mapping, (mapped - started) * 1e3)
            compile_ms = min(compile_ms, (time.perf_counter() - mapped) * 1e3)
    return mapping, compile_ms


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke)")
    args = parser.parse_args()

    from amplitude_experiment.snapshot import remove_all
    from flaggen import generate_flags

    flags = generate_flags(SEED, FLAG_COUNT)
    try:
        best = bench_overhead(flags, args.quick)
        print("### evaluate_v2, 1 flag requested, %d-flag config (best of interleaved repeats)\n" % FLAG_COUNT)
        print("| source | evaluate_v2 | source.current() |\n|---|---|---|")
        for name in ("static", "shared"):
            print("| %s | %.2f us | %.3f us |" % ("in-process FlagSet" if name == "static" else "flagd snapshot (shared)",
                                                best[name], best[name + " current()"]))
        overhead = best["shared"] - best["static"]
        print("\nshared-mode overhead per evaluate: %+.3f us (target <= 0.5 us; current() difference %+.3f us)\n"
              % (overhead, best["shared current()"] - best["static current()"]))

        latency, worker_uss = bench_latency(flags, args.workers, args.rounds)
        decode, compile_ms = bench_decode(flags)
        print("### publish -> all %d forked workers serving the new version (workers evaluate every ~1 ms)\n"
              % args.workers)
        print("| snapshot | median | max | all rounds (ms) |\n|---|---|---|---|")
        for label, times in latency.items():
            print("| %s | %.1f ms | %.1f ms | %s |" % (label, statistics.median(times), max(times),
                                                    " ".join("%.1f" % t for t in times)))
        print("\none worker's cost of a new %d-flag version: mapping and checking it %.2f ms; compiling every flag "
              "(only a worker that evaluates them all) %.1f ms (%d workers share %d CPUs)"
              % (FLAG_COUNT, decode, compile_ms, args.workers, os.cpu_count() or 0))

        memory = bench_memory(flags)
        mib = 1024 * 1024
        print("\n### per-worker private memory (USS), %d flags, 200 users evaluated\n" % FLAG_COUNT)
        print("| worker | USS | minus the same interpreter's baseline |\n|---|---|---|")
        rows = [("ours, flag_source=flagd, fresh interpreter", "ours flagd", 0, "ours baseline"),
                ("ours, flag_source=poll, fresh interpreter", "ours poll", 0, "ours baseline"),
                ("reference 1.13.0 (polls), fresh interpreter", "reference reference", 0, "reference baseline"),
                ("ours, flagd, forked from a preloaded master (gc.freeze)", "ours flagd-preload", 0, None),
                ("ours, same worker after a version published post-fork", "ours flagd-preload", 1, None),
                ("reference, forked from a preloaded master (gc.freeze)", "reference reference-preload", 0, None)]
        for label, key, step, base in rows:
            if key in memory:
                extra = "%.1f MiB" % ((memory[key][step] - memory[base][0]) / mib) if base else "-"
                print("| %s | %.1f MiB | %s |" % (label, memory[key][step] / mib, extra))
        print("| ours, flagd, the %d latency workers (forked from this benchmark), mean | %.1f MiB | - |"
              % (len(worker_uss), statistics.mean(worker_uss) / mib))
    finally:
        remove_all(PREFIX, KEY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
