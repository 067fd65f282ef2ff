"""One cold start of a local client: runs under our interpreter or the reference's (stdlib only).

argv: flags URL. Imports the SDK and builds a user first (not timed), then times
``Experiment.initialize_local`` + ``start()`` + the first ``evaluate_v2(user)`` of every flag, as
a freshly started worker pays it, and prints the microseconds.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quiet import quiet_logger  # noqa: E402
from flaggen import build_user, generate_users  # noqa: E402

from amplitude_experiment import Experiment, LocalEvaluationConfig, User  # noqa: E402


def main() -> None:
    url = sys.argv[1]
    user = build_user(generate_users(7, 1)[0], User)
    logger = quiet_logger("init-child")
    options = dict(server_url=url, flag_config_polling_interval_millis=3_600_000, logger=logger)
    try:
        config = LocalEvaluationConfig(flag_source="poll", **options)  # ours: no flagd here
    except TypeError:
        config = LocalEvaluationConfig(**options)  # the reference
    started = time.perf_counter()
    client = Experiment.initialize_local("server-init-key", config)
    client.start()
    variants = client.evaluate_v2(user)
    elapsed = time.perf_counter() - started
    assert variants, "no flags were loaded from %s" % url
    print(int(elapsed * 1e6), flush=True)
    client.stop()


if __name__ == "__main__":
    main()
