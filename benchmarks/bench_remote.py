"""Remote evaluation throughput: ``fetch_v2`` requests per second, ours and the reference's, one run.

Both clients, with their default configs apart from the server URL, call the same stand-in
(tests/stand_in.py) in a process of its own, from 1 thread and from 8. The stand-in answers
either at once or after a fixed server time, which stands for the network and Amplitude's own
latency: with it, throughput measures concurrency; without it, mostly client CPU on this machine.
The reference serialises every fetch on one connection by default (docs/compatibility.md, 'Connection pool'); ours
pools 10. The last row runs ours with ``connection_pool_max_size=1`` to show that the pool, not
anything else, makes the difference. Read the ratios: the machine is shared and noisy.

``python benchmarks/bench_remote.py [seconds-per-measurement]``
"""

import json
import os
import socket
import subprocess
import sys
from typing import List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "sdk"))

from _fetch_load import fetch_throughput  # noqa: E402
from reference_env import reference_python, reference_unavailable_reason, run_reference  # noqa: E402

SERVER_TIMES_MS = (0, 5)
THREADS = (1, 8)
VARIANTS = {
    "checkout-redesign": {"key": "treatment", "value": "treatment", "payload": {"color": "blue"},
                          "metadata": {"flagType": "experiment", "flagVersion": 12, "segmentName": "All Other Users"}},
    "new-pricing": {"key": "on", "value": "on", "metadata": {"flagType": "release", "flagVersion": 3}},
    "old-banner": {"key": "off", "metadata": {"default": True}},
    "search-ranking": {"key": "v2", "value": "v2", "payload": {"weights": [0.3, 0.7]}},
    "holdout": {"key": "off", "metadata": {"default": True, "flagType": "holdout-group"}},
}


def serve(server_time_ms: float) -> None:
    """Child-process mode: run the stand-in, print its URL, stop when stdin closes."""
    from stand_in import Answer, StandIn

    with StandIn() as server:
        # http.server writes the headers and the body separately; without TCP_NODELAY the body
        # waits for the client's delayed ACK (40 ms) and both SDKs measure that instead. Linux
        # gives accepted sockets the listening socket's TCP_NODELAY.
        server._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Its listen backlog of 5 makes the 6th simultaneous connect wait 1 s for a SYN retry.
        server._server.socket.listen(64)
        server.answer("POST", "/sdk/v2/vardata", Answer(200, VARIANTS, delay=server_time_ms / 1000.0))
        print(server.url, flush=True)
        sys.stdin.read()


def measure_ours(url: str, threads: int, seconds: float, pool_size: int = 0) -> Tuple[float, int]:
    """Requests per second of our client from ``threads`` threads, and how many fetches failed."""
    import amplitude_experiment

    out = fetch_throughput(amplitude_experiment, url, threads, seconds, pool_size)
    return out["requests"] / out["seconds"], int(out["errors"])


def measure_reference(url: str, threads: int, seconds: float) -> Tuple[float, int]:
    out = json.loads(run_reference(os.path.join(HERE, "_ref_remote.py"), timeout=seconds + 60,
                                   args=(url, str(threads), str(seconds))))
    return out["requests"] / out["seconds"], out["errors"]


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.8
    if reference_python() is None:
        print("reference SDK unavailable: %s" % reference_unavailable_reason())
        return 1
    rows: List[str] = []
    failures = 0
    for server_time in SERVER_TIMES_MS:
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(server_time)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip()
            if not url.startswith("http://127.0.0.1:"):
                raise RuntimeError("the stand-in did not start: %r" % url)
            for threads in THREADS:
                theirs, their_errors = measure_reference(url, threads, seconds)
                ours, our_errors = measure_ours(url, threads, seconds)
                failures += their_errors + our_errors
                rows.append("| %d ms | %d | %.0f | %.0f | **%.2fx** |" % (server_time, threads, theirs, ours, ours / theirs))
            ours_one, errors_one = measure_ours(url, THREADS[-1], seconds, pool_size=1)
            failures += errors_one
            rows.append("| %d ms | %d | | %.0f (pool of 1) | %.2fx |" % (server_time, THREADS[-1], ours_one, ours_one / theirs))
        finally:
            server.stdin.close()
            server.wait(timeout=10)
    print("fetch_v2 against a local stand-in; %.1f s per measurement; default configs.\n" % seconds)
    print("| server time | threads | reference req/s | ours req/s | ours / reference |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\ntarget: >= 1x from 1 thread, >= 3x from 8 threads. Fetches that failed: %d" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(float(sys.argv[2]))
    else:
        sys.exit(main())
