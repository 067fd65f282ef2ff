"""`make demo` (examples/demo.py) end to end: it must pass, on its own, well inside a minute."""

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import ROOT

pytestmark = pytest.mark.real_servers


def test_demo_runs_clean_and_fast():
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, str(ROOT / "examples" / "demo.py")], cwd=str(ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert text.rstrip().endswith("demo OK"), text
    assert "flag requests from the workers: 0" in text
    assert text.count("new-dashboard = on ") == 4, text
    assert time.monotonic() - started < 45, "the demo should finish well under a minute"
