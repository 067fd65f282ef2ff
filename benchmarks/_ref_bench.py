"""Reference side of bench_local.py: runs under the reference SDK's interpreter (.refvenv).

stdin: ``{"sets": {"10": flags, "100": flags, "1000": flags}, "users": [flaggen user specs], "one_key": key,
"simple": flaggen.generate_simple_flags(1000)}``.
stdout: ``{case: microseconds per call}`` for the reference's evaluate_v2, its bare engine (its
topological_sort plus EvaluationEngine.evaluate on a prepared context, as evaluate_v2 does each
call) and its parsing of a 1000-flag config (``EvaluationFlag.schema().load(list, many=True)``, what
its flag_config_api does with a poll response).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quiet import quiet_logger  # noqa: E402
from _timing import measure  # noqa: E402
from flaggen import build_user  # noqa: E402

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User  # noqa: E402
from amplitude_experiment.evaluation.engine import EvaluationEngine  # noqa: E402
from amplitude_experiment.evaluation.topological_sort import topological_sort  # noqa: E402
from amplitude_experiment.evaluation.types import EvaluationFlag  # noqa: E402
from amplitude_experiment.util.user import user_to_evaluation_context  # noqa: E402


def client_with(flags):
    client = LocalEvaluationClient("server-key", LocalEvaluationConfig(logger=quiet_logger("reference-bench")))
    for flag in EvaluationFlag.schema().load(flags, many=True):  # what its poller stores (docs/compatibility.md, 'Storage order')
        client.flag_config_storage.put_flag_config(flag)
    return client


def main():
    request = json.loads(sys.stdin.buffer.read())
    users = [build_user(spec, User) for spec in request["users"]]
    contexts = [user_to_evaluation_context(user) for user in users]
    count = len(users)
    one = [request["one_key"]]
    engine = EvaluationEngine()
    out = {}
    for size, flags in sorted(request["sets"].items(), key=lambda item: int(item[0])):
        client = client_with(flags)
        stored = client.flag_config_storage.get_flag_configs()
        out["evaluate_v2/%s" % size] = measure(lambda i: client.evaluate_v2(users[i % count]))
        out["engine/%s" % size] = measure(lambda i: engine.evaluate(contexts[i % count], topological_sort(stored, None)))
        if size == "1000":
            out["evaluate_v2/one-of-1000"] = measure(lambda i: client.evaluate_v2(users[i % count], set(one)))
            out["engine/one-of-1000"] = measure(lambda i: engine.evaluate(contexts[i % count], topological_sort(stored, one)))
            out["parse/1000"] = measure(lambda i: EvaluationFlag.schema().load(flags, many=True), repeats=3)
            out["parse-from-dict/1000"] = measure(lambda i: [EvaluationFlag.from_dict(f) for f in flags], repeats=3)
    simple = request["simple"]
    simple_client = client_with(simple)
    one_each = [{flag["key"]} for flag in simple]
    keys_count = len(one_each)
    out["simple/one-of-1000-cycling"] = measure(
        lambda i: simple_client.evaluate_v2(users[i % count], one_each[(i * 7919) % keys_count]))
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
