"""A fresh clone installs and runs as the README says: `make demo` compiles nothing, the pyproject
raises no deprecation warning, `amplitude-flagd --version` and the distribution's version work.

Needs the package registry (the clone's own virtualenv is built from scratch); about a minute.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.real_servers,
    pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"),
]


def run(argv, cwd, timeout=300, env=None):
    result = subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, **(env or {})))
    assert result.returncode == 0, "%s failed:\n%s\n%s" % (argv, result.stdout[-3000:], result.stderr[-3000:])
    return result


def test_a_fresh_clone_builds_without_warnings_and_make_demo_installs_no_server_it_does_not_run(tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "--quiet", "--depth", "1", "file://" + str(ROOT), str(clone)], tmp_path)
    version = re.search(r'^version = "([^"]+)"', (clone / "pyproject.toml").read_text(), re.M).group(1)

    # The wheel builds in an isolated environment, as `pip install .` does; our pyproject warns of nothing.
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(clone)],
                tmp_path)
    output = built.stdout + built.stderr
    assert "Deprecat" not in output and "deprecat" not in output, output[-3000:]
    wheels = list((tmp_path / "dist").glob("amplitude_experiment_shared-%s-*.whl" % version))
    assert len(wheels) == 1

    # `make demo` on a machine with nothing installed: its own .venv, the demo extra only.
    # A user's shell: no PYTHONPATH, no venv, and not inside another make (CI runs this under
    # `make test`, whose MAKELEVEL would make the demo's make print "Entering directory" lines).
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    started = time.monotonic()
    demo = subprocess.run(["make", "demo", "PYTHON=%s" % _base_python()], cwd=str(clone), env=env,
                          capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert demo.stdout.rstrip().endswith("demo OK"), demo.stdout[-3000:]
    print("make demo on a fresh clone, install included: %.1f s" % elapsed)
    python = clone / ".venv" / "bin" / "python"
    installed = run([str(python), "-m", "pip", "list", "--format=freeze"], clone, env=env).stdout.lower()
    assert "gunicorn==" in installed
    for server in ("uwsgi", "pyuwsgi", "celery"):
        assert "\n%s==" % server not in "\n" + installed, installed

    flagd = run([str(clone / ".venv" / "bin" / "amplitude-flagd"), "--version"], clone, env=env).stdout
    assert flagd.startswith("amplitude-flagd %s " % version), flagd
    from_python = run([str(python), "-c", "from amplitude_experiment.version import distribution_version; "
                                          "print(distribution_version())"], tmp_path, env=env).stdout
    assert from_python.strip() == version


def _base_python() -> str:
    """An interpreter outside any virtualenv, as on a fresh machine (venv's base, else this one)."""
    base = Path(sys.base_prefix) / "bin" / ("python%d.%d" % sys.version_info[:2])
    return str(base) if base.exists() else sys.executable
