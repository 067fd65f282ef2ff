"""Run every benchmark (benchmarks/bench_*.py), each in its own process, and print their tables.

Each benchmark compares ours with the reference SDK in the same run and prints ratios; the
machines are shared and noisy, so ratios are what to read, not absolute times.
bench_openfeature.py needs the ``openfeature`` extra (the test extra has it) and skips without it.
"""

import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    selected = sys.argv[1:]
    failed = []
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        name = os.path.basename(path)[len("bench_"):-3]
        if selected and name not in selected:
            continue
        print("\n## %s\n" % name, flush=True)
        if subprocess.call([sys.executable, path]) != 0:
            failed.append(name)
    if failed:
        print("\nfailed: %s" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
