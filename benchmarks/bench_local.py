"""Local evaluation: ours against the reference SDK (amplitude-experiment 1.13.0) in the same run.

Flag sets and users come from flaggen (deterministic). Our client loads its flags through its own
poller from a 127.0.0.1 server; the reference runs in its own interpreter (benchmarks/_ref_bench.py).
Each number is the best per-call time over several perf_counter loops; read the ratios, the machine
is shared. Prints a markdown table; ``--check`` exits 1 when a target is missed.

Targets (issue 2): evaluate_v2 of all 100 flags >= 15x the reference's evaluate_v2 and >= 5x its
bare engine; one flag out of 1000 >= 1000x its evaluate_v2 and >= 5x its bare engine; compiling a
1000-flag config >= 30x its parsing.
"""

import json
import os
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


def ours(sets, user_specs, one_key):
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
                keys = [one_key]
                out["evaluate_v2/one-of-1000"] = measure(lambda i: client.evaluate_v2(users[i % count], keys))
                out["engine/one-of-1000"] = measure(lambda i: evaluate(flag_set, contexts[i % count], keys))
                out["parse/1000"] = measure(lambda i: compile_flags(flags), repeats=3)
        finally:
            client.stop()
            server.shutdown()
            server.server_close()
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
]


def main() -> int:
    check = "--check" in sys.argv[1:]
    sets = {str(size): flaggen.generate_flags(100 + size, size, prefix="b%d-" % size) for size in SIZES}
    user_specs = flaggen.generate_users(7, USERS)
    one_key = one_key_of(sets["1000"])
    if reference_env.reference_python() is None:
        print("reference SDK unavailable, ratios skipped: %s" % reference_env.reference_unavailable_reason())
        theirs = {}
    else:
        request = json.dumps({"sets": sets, "users": user_specs, "one_key": one_key}).encode()
        theirs = json.loads(reference_env.run_reference(os.path.join(HERE, "_ref_bench.py"), request, timeout=900))
    mine = ours(sets, user_specs, one_key)

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
