"""Reference side of bench_remote.py: runs under the reference SDK's interpreter (.refvenv).

argv: ``<server_url> <threads> <seconds> [<connection_pool_max_size>]``. Each thread calls
``fetch_v2`` in a loop until the time is up, with the reference's default config apart from the
server URL (and the pool size when given). stdout: ``{"requests": n, "seconds": s, "errors": e}``.
"""

import json
import sys
import threading
import time

from amplitude_experiment import RemoteEvaluationClient, RemoteEvaluationConfig, User


def main() -> None:
    url, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    options = {"server_url": url}
    if len(sys.argv) > 4:
        options["connection_pool_max_size"] = int(sys.argv[4])
    client = RemoteEvaluationClient("bench-deployment-key", RemoteEvaluationConfig(**options))
    user = User(user_id="bench-user", device_id="bench-device", user_properties={"plan": "pro"})
    client.fetch_v2(user)  # connect before the clock starts, as bench_remote.py does for ours
    counts, errors = [0] * threads, [0] * threads
    deadline = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < deadline:
            if not client.fetch_v2(user):
                errors[index] += 1
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    client.close()
    print(json.dumps({"requests": sum(counts), "seconds": elapsed, "errors": sum(errors)}))


if __name__ == "__main__":
    main()
