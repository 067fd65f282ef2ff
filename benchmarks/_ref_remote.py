"""Reference side of bench_remote.py: runs under the reference SDK's interpreter (.refvenv).

argv: ``<server_url> <threads> <seconds> [<connection_pool_max_size>]``. Each thread calls
``fetch_v2`` in a loop until the time is up, with the reference's default config apart from the
server URL (and the pool size when given). stdout: ``{"requests": n, "seconds": s, "errors": e}``.
"""

import json
import sys

import amplitude_experiment

from _fetch_load import fetch_throughput


def main() -> None:
    url, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    pool_size = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    print(json.dumps(fetch_throughput(amplitude_experiment, url, threads, seconds, pool_size)))


if __name__ == "__main__":
    main()
