"""The reference SDK (amplitude-experiment==1.13.0) in a throwaway virtual environment.

Used only as an oracle by the differential tests and the benchmarks, never at run time. Both
packages are called ``amplitude_experiment``, so the reference always runs in its own interpreter:
``run_reference(script, stdin)`` executes a script with the reference venv's Python.
"""

import os
import subprocess
import sys
import threading
from typing import Optional

REFERENCE_REQUIREMENT = "amplitude-experiment==1.13.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("AMPLITUDE_REFERENCE_VENV", os.path.join(ROOT, ".refvenv"))
_lock = threading.Lock()
_failure: Optional[str] = None


def reference_python() -> Optional[str]:
    """Path of a Python that imports the reference SDK, creating the venv once; None if it cannot be installed.

    Why it failed is in :func:`reference_unavailable_reason`.
    """
    global _failure
    python = os.path.join(VENV, "bin", "python")
    marker = os.path.join(VENV, ".reference-installed")
    with _lock:
        if os.path.exists(marker):
            return python
        if _failure is not None:
            return None
        try:
            if not os.path.exists(python):
                subprocess.run([sys.executable, "-m", "venv", VENV], check=True, capture_output=True, timeout=300)
            subprocess.run(
                [python, "-m", "pip", "install", "--quiet", REFERENCE_REQUIREMENT],
                check=True, capture_output=True, timeout=600,
            )
            subprocess.run([python, "-c", "import amplitude_experiment"], check=True, capture_output=True, timeout=60,
                           env=environment())
        except (subprocess.SubprocessError, OSError) as error:
            detail = getattr(error, "stderr", b"") or b""
            _failure = "%s could not be installed: %s %s" % (
                REFERENCE_REQUIREMENT, error, detail.decode(errors="replace")[-500:])
            return None
        open(marker, "w").close()
        return python


def environment() -> dict:
    """This process's environment without PYTHONPATH, which could put our package ahead of the reference's."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def reference_unavailable_reason() -> str:
    return _failure or "not tried"


def run_reference(script: str, stdin: bytes = b"", timeout: float = 600, args: tuple = ()) -> bytes:
    """Run ``script`` (a path) under the reference's Python; returns its stdout, raises on failure."""
    python = reference_python()
    if python is None:
        raise RuntimeError(reference_unavailable_reason())
    completed = subprocess.run([python, script, *args], input=stdin, capture_output=True, timeout=timeout,
                               env=environment())
    if completed.returncode != 0:
        raise RuntimeError("reference script %s failed: %s" % (script, completed.stderr.decode(errors="replace")[-2000:]))
    return completed.stdout
