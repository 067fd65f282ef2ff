"""The provider is an optional extra: the SDK itself never needs openfeature-sdk."""

import ast
import pathlib
import subprocess
import sys

SDK = pathlib.Path(__file__).resolve().parents[2] / "sdk" / "amplitude_experiment"
ROOT = SDK.parents[1]


def test_only_the_provider_package_imports_openfeature():
    offenders = []
    for path in sorted(SDK.rglob("*.py")):
        if path.relative_to(SDK).parts[0] == "openfeature":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders.extend("%s imports %s" % (path.relative_to(SDK), name) for name in names
                             if name.split(".")[0] == "openfeature")
    assert offenders == []


def test_importing_the_sdk_does_not_import_openfeature():
    code = "import sys, amplitude_experiment; print('openfeature' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_the_extra_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'openfeature = ["openfeature-sdk' in text
