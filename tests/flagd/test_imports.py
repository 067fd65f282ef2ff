"""flagd loads the parser and the file code, not the SDK's clients (issue 10, item 11)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NOT_LOADED = ["amplitude_experiment.remote", "amplitude_experiment.remote.client", "amplitude_experiment.local",
              "amplitude_experiment.tracking", "amplitude_experiment.factory", "amplitude_experiment.cookie",
              "amplitude"]


def loaded_after(statement: str):
    """The module names a fresh interpreter holds after running ``statement``."""
    code = "import json, sys\n%s\nprint(json.dumps(sorted(sys.modules)))" % statement
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "sdk"), ROOT]))
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True).stdout
    return set(json.loads(output))


@pytest.mark.parametrize("statement", ["import flagd.daemon", "import flagd.cli", "import flagd.status"])
def test_flagd_does_not_load_the_clients(statement):
    loaded = loaded_after(statement)
    assert "amplitude_experiment.snapshot.reader" in loaded or statement == "import flagd.cli"
    assert [name for name in NOT_LOADED if name in loaded] == []


def test_flagd_with_a_flags_file_needs_no_http_library():
    loaded = loaded_after("import flagd.daemon")
    assert "requests" not in loaded


def test_every_public_name_still_imports_lazily():
    loaded = loaded_after("import amplitude_experiment as a\nassert a.__version__\n"
                          "from amplitude_experiment import LocalEvaluationClient, RemoteEvaluationClient, User\n"
                          "assert 'RemoteEvaluationClient' in dir(a)")
    assert "amplitude_experiment.remote.client" in loaded
