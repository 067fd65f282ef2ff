"""The fetch_v2 load loop of bench_remote.py, shared by our side and the reference's (_ref_remote.py).

Standard library only: it runs under either interpreter, with that interpreter's
``amplitude_experiment`` passed in.
"""

import threading
import time
from typing import Any, Dict

MAX_REQUESTS_PER_THREAD = 200_000  # a bound on each loop besides the clock


def fetch_throughput(sdk: Any, url: str, threads: int, seconds: float, pool_size: int = 0) -> Dict[str, float]:
    """``{"requests", "seconds", "errors"}`` of ``threads`` threads calling ``fetch_v2`` for ``seconds``.

    ``sdk`` is the imported ``amplitude_experiment`` package; its default config is used apart from
    the server URL (and ``connection_pool_max_size`` when ``pool_size`` is given).
    """
    options: Dict[str, Any] = {"server_url": url}
    if pool_size:
        options["connection_pool_max_size"] = pool_size
    client = sdk.RemoteEvaluationClient("bench-deployment-key", sdk.RemoteEvaluationConfig(**options))
    user = sdk.User(user_id="bench-user", device_id="bench-device", user_properties={"plan": "pro"})
    client.fetch_v2(user)  # connect before the clock starts
    counts, errors = [0] * threads, [0] * threads
    deadline = time.monotonic() + seconds

    def loop(index: int) -> None:
        for _ in range(MAX_REQUESTS_PER_THREAD):
            if time.monotonic() >= deadline:
                return
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
    return {"requests": sum(counts), "seconds": elapsed, "errors": sum(errors)}
