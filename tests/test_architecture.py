"""The dependency rules the folder tree promises (docs/design.md), checked on the source itself."""

import ast
import pathlib

import pytest

SDK = pathlib.Path(__file__).resolve().parent.parent / "sdk" / "amplitude_experiment"


def imported_modules(package: pathlib.Path):
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, 0
            elif isinstance(node, ast.ImportFrom):
                yield path, node.module or "", node.level


@pytest.mark.parametrize(
    "package, forbidden",
    [
        # Evaluation is pure: no I/O, no logging, nothing from the layers that feed it.
        ("evaluation", {"logging", "requests", "posix_ipc", "mmap", "socket", "threading", "local", "remote",
                        "snapshot", "tracking", "amplitude"}),
        # The segment layout knows bytes, not clients.
        ("snapshot", {"requests", "local", "remote", "tracking"}),
        # Remote evaluation has nothing to do with local flags.
        ("remote", {"local", "snapshot", "evaluation"}),
    ],
)
def test_layers_do_not_reach_back_up_the_chain(package, forbidden):
    offenders = []
    for path, module, level in imported_modules(SDK / package):
        # `from .x` stays inside the package; `from ..local` names a sibling package of the SDK.
        if level == 1:
            continue
        if module.split(".")[0] in forbidden:
            offenders.append("%s imports %s%s" % (path.name, "." * level, module))
    assert offenders == []


def test_no_prints_in_library_code():
    offenders = []
    for path in sorted(SDK.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append("%s:%d" % (path.relative_to(SDK), node.lineno))
    assert offenders == []
