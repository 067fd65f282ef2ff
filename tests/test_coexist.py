"""Beside Amplitude's own package: both install the import name amplitude_experiment into one directory.

A site directory is built in tmp with our package and a dist-info of Amplitude's ``amplitude-experiment``
claiming the same files, as pip leaves it after installing both.
"""

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEIR_INIT = b'"""Amplitude\'s own package, standing in."""\n'


def site_with_both(tmp_path: Path, theirs_in_place: bool) -> Path:
    site = tmp_path / "site"
    shutil.copytree(str(ROOT / "sdk" / "amplitude_experiment"), str(site / "amplitude_experiment"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "amplitude_experiment-1.13.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: amplitude-experiment\nVersion: 1.13.0\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(THEIR_INIT).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text("amplitude_experiment/__init__.py,sha256=%s,%d\n" % (digest, len(THEIR_INIT)))
    if theirs_in_place:
        (site / "amplitude_experiment" / "__init__.py").write_bytes(THEIR_INIT)
    return site


def run(site: Path, argv, key: str = "server-coexist-key"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), AMPLITUDE_DEPLOYMENT_KEY=key)
    return subprocess.run([sys.executable] + argv, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)


def test_flagd_refuses_to_run_when_amplitudes_package_replaced_ours(tmp_path):
    result = run(site_with_both(tmp_path, theirs_in_place=True), ["-m", "flagd", "--version"])
    assert result.returncode != 0
    assert "amplitude-flagd cannot run: Amplitude's amplitude-experiment 1.13.0 was installed after " \
           "amplitude-experiment-shared" in result.stderr
    assert "pip uninstall -y amplitude-experiment amplitude-experiment-shared" in result.stderr


def test_shared_mode_and_flagd_warn_when_both_are_installed_but_ours_is_in_place(tmp_path):
    site = site_with_both(tmp_path, theirs_in_place=False)
    script = ("import logging; from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig; "
              "LocalEvaluationClient('server-coexist-key', LocalEvaluationConfig(flag_source='auto', "
              "shm_prefix='aet-coexist-none'))")
    sdk = run(site, ["-c", script])
    assert sdk.returncode == 0, sdk.stderr
    assert sdk.stderr.count("both provide the import name amplitude_experiment") == 1, sdk.stderr
    assert "uninstalling or upgrading it will break this SDK" in sdk.stderr
    flagd = run(site, ["-m", "flagd", "--version"])
    assert flagd.returncode == 0 and flagd.stdout.startswith("amplitude-flagd "), flagd.stderr


def test_nothing_is_said_without_amplitudes_package():
    from amplitude_experiment._coexist import conflict_message

    assert conflict_message() is None
