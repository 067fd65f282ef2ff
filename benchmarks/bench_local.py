"""Local evaluation: ours against the reference SDK (amplitude-experiment 1.13.0) in the same run.

Flag sets and users come from flaggen (deterministic). Our client loads its flags through its own
poller from a 127.0.0.1 server; the reference runs in its own interpreter (benchmarks/_ref_bench.py).
Each number is the best per-call time over several perf_counter loops; read the ratios, the machine
is shared. Prints a markdown table; ``--check`` exits 1 when a target is missed.

Targets: evaluate_v2 of all 100 flags >= 15x the reference's evaluate_v2 and >= 5x its bare
engine; one flag out of 1000 (one key as a list, and as a set) >= 1000x its evaluate_v2 and >= 5x
its bare engine; compiling a 1000-flag config >= 30x its parsing; ``initialize_local`` + ``start()``
+ the first ``evaluate_v2(user)`` of a 1000-flag config over HTTP >= 30x the reference's (the
median of 5 fresh processes each, imports done before the clock starts).

The simple shape other SDKs are compared on (1000 flags, each one rule of two conditions and a
50/50 rollout, ``flaggen.generate_simple_flags``): one flag of 1000 with a different key each call
(<= 5 us) and the memory of a process holding all 1000 compiled (<= 5 MB; USS of a process that
loaded and evaluated them, minus the same interpreter's USS with the SDK imported and no client).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flaggen  # noqa: E402
import reference_env  # noqa: E402
from _flags_server import serve_flags  # noqa: E402
from _timing import measure  # noqa: E402

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User  # noqa: E402
from amplitude_experiment.evaluation import compile_flags, evaluate  # noqa: E402
from amplitude_experiment.local._context import user_to_context  # noqa: E402

SIZES = (10, 100, 1000)
USERS = 200


def one_key_of(flags):
    """A typical single-flag request: an experiment behind a holdout or mutual-exclusion group."""
    for flag in flags:
        if "exp" in flag["key"] and flag.get("dependencies"):
            return flag["key"]
    return flags[0]["key"]


INIT_RUNS = 5


def cold_start_us(python, url):
    """Median over fresh processes of initialize_local + start() + the first evaluate_v2(user)."""
    script = os.path.join(HERE, "_init_child.py")
    runs = []
    for _ in range(INIT_RUNS):
        if python is None:
            out = subprocess.run([sys.executable, script, url], capture_output=True, check=True, timeout=300).stdout
        else:
            out = reference_env.run_reference(script, args=(url,), timeout=300)
        runs.append(int(out))
    runs.sort()
    return float(runs[len(runs) // 2])


def memory_bytes(python, url):
    """USS of a process holding the flags at ``url``, minus that interpreter's baseline."""
    script = os.path.join(HERE, "_memory_child.py")
    if python is None:
        run = lambda mode: subprocess.run([sys.executable, script, url, mode], capture_output=True,  # noqa: E731
                                          check=True, timeout=300).stdout
    else:
        run = lambda mode: reference_env.run_reference(script, args=(url, mode), timeout=300)  # noqa: E731
    return min(int(run("client")) for _ in range(2)) - min(int(run("baseline")) for _ in range(2))


def ours(sets, user_specs, one_key, simple_url, simple_keys):
    users = [flaggen.build_user(spec, User) for spec in user_specs]
    contexts = [user_to_context(user) for user in users]
    count = len(users)
    out = {}
    for size, flags in sets.items():
        server = serve_flags(json.dumps(flags).encode())
        config = LocalEvaluationConfig(server_url="http://127.0.0.1:%d" % server.server_address[1], flag_source="poll",
                                       flag_config_polling_interval_millis=3_600_000)
        client = LocalEvaluationClient("server-key", config)
        client.start()
        try:
            assert len(client.evaluate_v2(users[0])) > 0
            out["evaluate_v2/%s" % size] = measure(lambda i: client.evaluate_v2(users[i % count]))
            flag_set = compile_flags(flags)
            out["engine/%s" % size] = measure(lambda i: evaluate(flag_set, contexts[i % count]))
            if size == "100":
                out["context"] = measure(lambda i: user_to_context(users[i % count]))
            if size == "1000":
                keys, key_set = [one_key], {one_key}
                out["evaluate_v2/one-of-1000"] = measure(lambda i: client.evaluate_v2(users[i % count], keys))
                out["evaluate_v2/one-of-1000-set"] = measure(lambda i: client.evaluate_v2(users[i % count], key_set))
                out["engine/one-of-1000"] = measure(lambda i: evaluate(flag_set, contexts[i % count], keys))
                out["parse/1000"] = measure(lambda i: compile_flags(flags), repeats=3)
        finally:
            client.stop()
            server.shutdown()
            server.server_close()
    config = LocalEvaluationConfig(server_url=simple_url, flag_source="poll", flag_config_polling_interval_millis=3_600_000)
    with LocalEvaluationClient("server-simple", config) as client:
        client.start()
        one_each = [[key] for key in simple_keys]
        keys_count = len(one_each)
        out["simple/one-of-1000-cycling"] = measure(
            lambda i: client.evaluate_v2(users[i % count], one_each[(i * 7919) % keys_count]))
    out["simple/memory-bytes"] = memory_bytes(None, simple_url)
    return out


ROWS = [
    # (label, our case, reference case, target ratio or None)
    ("evaluate_v2, 10 flags", "evaluate_v2/10", "evaluate_v2/10", None),
    ("evaluate_v2, all 100 flags vs its evaluate_v2", "evaluate_v2/100", "evaluate_v2/100", 15),
    ("evaluate_v2, all 100 flags vs its bare engine", "evaluate_v2/100", "engine/100", 5),
    ("evaluate_v2, all 1000 flags vs its evaluate_v2", "evaluate_v2/1000", "evaluate_v2/1000", None),
    ("evaluate_v2, 1 flag of 1000 vs its evaluate_v2", "evaluate_v2/one-of-1000", "evaluate_v2/one-of-1000", 1000),
    ("evaluate_v2, 1 flag of 1000 vs its bare engine", "evaluate_v2/one-of-1000", "engine/one-of-1000", 5),
    ("engine only, 100 flags (both engines, prepared context)", "engine/100", "engine/100", None),
    ("compile 1000-flag config vs its schema load", "parse/1000", "parse/1000", 30),
    ("compile 1000-flag config vs its from_dict per flag", "parse/1000", "parse-from-dict/1000", None),
    ("evaluate_v2, 1 flag of 1000 as a set vs its bare engine", "evaluate_v2/one-of-1000-set", "engine/one-of-1000", 5),
    ("initialize_local + start() + first evaluate_v2, 1000 flags over HTTP", "init/1000", "init/1000", 30),
    ("simple shape: evaluate_v2, 1 flag of 1000, a different key each call", "simple/one-of-1000-cycling",
     "simple/one-of-1000-cycling", None),
]

#: Absolute targets of the simple shape (ours, whatever the reference does).
SIMPLE_TARGETS = {"simple/one-of-1000-cycling": 5.0}
MEMORY_TARGET_BYTES = 5 * 1024 * 1024


def main() -> int:
    check = "--check" in sys.argv[1:]
    sets = {str(size): flaggen.generate_flags(100 + size, size, prefix="b%d-" % size) for size in SIZES}
    user_specs = flaggen.generate_users(7, USERS)
    one_key = one_key_of(sets["1000"])
    simple = flaggen.generate_simple_flags(1000)
    simple_keys = [flag["key"] for flag in simple]
    init_server = serve_flags(json.dumps(sets["1000"]).encode())
    simple_server = serve_flags(json.dumps(simple).encode())
    init_url = "http://127.0.0.1:%d" % init_server.server_address[1]
    simple_url = "http://127.0.0.1:%d" % simple_server.server_address[1]
    if reference_env.reference_python() is None:
        print("reference SDK unavailable, ratios skipped: %s" % reference_env.reference_unavailable_reason())
        theirs = {}
    else:
        request = json.dumps({"sets": sets, "users": user_specs, "one_key": one_key, "simple": simple}).encode()
        theirs = json.loads(reference_env.run_reference(os.path.join(HERE, "_ref_bench.py"), request, timeout=900))
        theirs["simple/memory-bytes"] = memory_bytes(reference_env.reference_python(), simple_url)
        theirs["init/1000"] = cold_start_us(reference_env.reference_python(), init_url)
    mine = ours(sets, user_specs, one_key, simple_url, simple_keys)
    mine["init/1000"] = cold_start_us(None, init_url)

    print("%d users cycled; one flag = %r; best of repeated perf_counter loops\n" % (USERS, one_key))
    print("| case | ours µs | reference µs | ratio | target | |")
    print("|---|---:|---:|---:|---:|---|")
    missed = []
    for label, our_case, their_case, target in ROWS:
        our_us = mine[our_case]
        their_us = theirs.get(their_case)
        ratio = their_us / our_us if their_us else None
        verdict = ""
        if target is not None and ratio is not None:
            verdict = "ok" if ratio >= target else "MISSED"
            if ratio < target:
                missed.append(label)
        print("| %s | %.2f | %s | %s | %s | %s |" % (
            label, our_us, "%.2f" % their_us if their_us else "-", "%.1fx" % ratio if ratio else "-",
            ">= %dx" % target if target else "", verdict))
    for case, target in SIMPLE_TARGETS.items():
        if mine[case] > target:
            missed.append("%s above %.1f µs" % (case, target))
    ours_memory, their_memory = mine["simple/memory-bytes"], theirs.get("simple/memory-bytes")
    print("\n| simple shape, 1000 flags compiled in a process | ours | reference | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    print("| memory (USS growth) | %.1f MB | %s | %s | <= 5 MB |" % (
        ours_memory / 1048576, "%.1f MB" % (their_memory / 1048576) if their_memory else "-",
        "%.1fx less" % (their_memory / ours_memory) if their_memory and ours_memory > 0 else "-"))
    if ours_memory > MEMORY_TARGET_BYTES:
        missed.append("simple-shape memory above 5 MB")
    print("\nWhere our evaluate_v2 time goes (µs): building the context from the User, the engine on a")
    print("prepared context, and the rest (result Variants with fresh metadata dicts, bookkeeping).\n")
    print("| call | evaluate_v2 | context | engine | rest |")
    print("|---|---:|---:|---:|---:|")
    for label, suffix in (("all 100 flags", "100"), ("1 flag of 1000", "one-of-1000")):
        total, engine_us = mine["evaluate_v2/" + suffix], mine["engine/" + suffix]
        print("| %s | %.2f | %.2f | %.2f | %.2f |" % (
            label, total, mine["context"], engine_us, total - engine_us - mine["context"]))
    if missed:
        print("\nmissed targets: %s" % "; ".join(missed))
    return 1 if (check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
