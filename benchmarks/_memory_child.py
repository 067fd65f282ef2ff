"""Memory of a client holding flags: runs under our interpreter or the reference's (stdlib only).

argv: flags URL, mode ("baseline" or "client"). Loads the flags through the SDK's own poller,
evaluates every flag for 200 users (so every flag is compiled, in an SDK that compiles lazily)
and prints this process's USS in bytes (Private_Clean + Private_Dirty of /proc/self/smaps_rollup)
after a full collection. "baseline" imports the SDK and builds the users, nothing more.
"""

import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quiet import quiet_logger  # noqa: E402
from flaggen import build_user, generate_users  # noqa: E402

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User  # noqa: E402


def uss() -> int:
    total = 0
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    users = [build_user(spec, User) for spec in generate_users(11, 200)]
    logger = quiet_logger("memory-child")
    client = None
    if mode == "client":
        options = dict(server_url=url, flag_config_polling_interval_millis=3_600_000, logger=logger)
        try:
            config = LocalEvaluationConfig(flag_source="poll", **options)  # ours: never look for flagd here
        except TypeError:
            config = LocalEvaluationConfig(**options)  # the reference
        client = LocalEvaluationClient("server-memory-key", config)
        client.start()
        for user in users:
            client.evaluate_v2(user)
    gc.collect()
    print(uss(), flush=True)
    if client is not None:
        client.stop()


if __name__ == "__main__":
    main()
