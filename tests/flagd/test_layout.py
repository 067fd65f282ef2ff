"""The rules flagd's layering promise, checked on the source itself."""

import ast
import pathlib

FLAGD = pathlib.Path(__file__).resolve().parent.parent.parent / "flagd"


def calls(path: pathlib.Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_only_the_cli_prints_or_exits():
    offenders = []
    for path in sorted(FLAGD.glob("*.py")):
        if path.name == "cli.py":
            continue
        for node in calls(path):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("print", "exit", "quit"):
                offenders.append("%s:%d %s" % (path.name, node.lineno, func.id))
            if isinstance(func, ast.Attribute) and func.attr in ("exit", "_exit") and \
                    isinstance(func.value, ast.Name) and func.value.id in ("sys", "os"):
                offenders.append("%s:%d %s.%s" % (path.name, node.lineno, func.value.id, func.attr))
    assert offenders == []


def test_log_calls_use_percent_arguments_not_fstrings():
    offenders = []
    for path in sorted(FLAGD.glob("*.py")):
        for node in calls(path):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("debug", "info", "warning", "error", "exception") \
                    and isinstance(func.value, ast.Name) and func.value.id == "logger" and node.args:
                first = node.args[0]
                if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
                    offenders.append("%s:%d" % (path.name, node.lineno))
    assert offenders == []
