"""The dependency rules the folder tree promises (docs/design.md), checked on the source itself.

Every import counts: ``import a.b``, ``from a import b``, relative imports resolved to the module they
name, imports inside functions (run-time imports), and ``importlib.import_module``/``__import__``
calls with a literal name. The checker is run on a copy of the tree with an import planted in it, to
show that each rule can fail.
"""

import ast
import pathlib
import shutil
from typing import Iterator, List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "amplitude_experiment"

# (rule, the package it applies to, forbidden module prefixes). A prefix matches itself and its submodules.
RULES: List[Tuple[str, str, Tuple[str, ...]]] = [
    # Evaluation is pure: no I/O, no logging, nothing from the layers that feed it or read it.
    ("evaluation is pure", "amplitude_experiment.evaluation",
     ("logging", "requests", "urllib3", "http", "socket", "posix_ipc", "mmap", "threading", "subprocess",
      "amplitude", "flagd", "amplitude_experiment.local", "amplitude_experiment.remote",
      "amplitude_experiment.snapshot", "amplitude_experiment.tracking", "amplitude_experiment.factory",
      "amplitude_experiment._http", "amplitude_experiment._logging")),
    # The segment layout knows bytes, not clients.
    ("snapshot knows no SDK client", "amplitude_experiment.snapshot",
     ("requests", "amplitude", "flagd", "amplitude_experiment.local", "amplitude_experiment.remote",
      "amplitude_experiment.tracking", "amplitude_experiment.factory", "amplitude_experiment.cookie")),
    # Remote evaluation has nothing to do with local flags.
    ("remote knows no local flags", "amplitude_experiment.remote",
     ("amplitude_experiment.local", "amplitude_experiment.snapshot", "amplitude_experiment.evaluation", "flagd")),
    # The SDK is a library; flagd is one of its users.
    ("no SDK module imports flagd", "amplitude_experiment", ("flagd",)),
    # flagd needs the parser and the segment code, never a client (nor the package __init__ that exports them).
    ("flagd imports no client", "flagd",
     ("amplitude_experiment.local", "amplitude_experiment.remote", "amplitude_experiment.tracking",
      "amplitude_experiment.factory", "amplitude_experiment.assignment", "amplitude_experiment.exposure",
      "amplitude_experiment.cohort", "amplitude_experiment.cookie", "amplitude")),
]


#: (rule, module, imports it may make all the same). flagd's event relay delivers the workers'
#: events with the SDK's own dedup and event builders and the analytics SDK (docs/tracking.md);
#: only that module may import them, and only flagd's daemon imports it, when it has an analytics key.
EXEMPT: List[Tuple[str, str, Tuple[str, ...]]] = [
    ("flagd imports no client", "flagd.events", ("amplitude_experiment.tracking", "amplitude_experiment.user",
                                                  "amplitude_experiment.variant", "amplitude")),
]


def module_name(root: pathlib.Path, path: pathlib.Path) -> Tuple[str, bool]:
    """``(dotted module name, is a package __init__)`` of ``path`` below ``root`` (the sys.path entry)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def resolve(module: str, is_package: bool, level: int, name: str) -> str:
    """The absolute module a (possibly relative) ``from`` names."""
    if level == 0:
        return name
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _type_checking_only(tree: ast.AST) -> set:
    """The nodes under ``if TYPE_CHECKING:``: imports for type checkers, never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            for statement in node.body:
                skipped.update(ast.walk(statement))
    return skipped


def imports_of(root: pathlib.Path, path: pathlib.Path, runtime_only: bool = False) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module)`` for every import anywhere in the file, functions included
    (``runtime_only``: without those under ``if TYPE_CHECKING:``)."""
    module, is_package = module_name(root, path)
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, is_package, node.level, node.module or "")
            yield node.lineno, target
            for alias in node.names:  # `from amplitude_experiment import local` imports a submodule
                yield node.lineno, target + "." + alias.name
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(sdk_root: pathlib.Path, flagd_root: pathlib.Path) -> List[str]:
    """Every import that breaks a rule, as ``rule: file:line imports module``.

    ``sdk_root`` is the directory holding ``amplitude_experiment``; ``flagd_root`` the one holding ``flagd``.
    """
    found = []
    files = [(sdk_root, path) for path in sorted((sdk_root / "amplitude_experiment").rglob("*.py"))]
    files += [(flagd_root, path) for path in sorted((flagd_root / "flagd").rglob("*.py"))]
    for root, path in files:
        module, _ = module_name(root, path)
        for line, imported in imports_of(root, path):
            for rule, package, forbidden in RULES:
                if not matches(module, package):
                    continue
                if package == "flagd" and imported == "amplitude_experiment":
                    found.append("%s: %s:%d imports the SDK package itself" % (rule, module, line))
                    continue
                allowed = [prefix for exempt_rule, exempt_module, prefixes in EXEMPT
                           if exempt_rule == rule and exempt_module == module for prefix in prefixes]
                if any(matches(imported, prefix) for prefix in allowed):
                    continue
                for prefix in forbidden:
                    # A package's own modules may import each other (amplitude_experiment -> .evaluation).
                    if matches(imported, prefix) and not matches(imported, package):
                        found.append("%s: %s:%d imports %s" % (rule, module, line, imported))
                        break
    return found


def test_the_tree_keeps_every_rule():
    assert violations(ROOT / "sdk", ROOT) == []


def test_resolve_relative_imports():
    assert resolve("amplitude_experiment.evaluation.flags", False, 1, "conditions") == \
        "amplitude_experiment.evaluation.conditions"
    assert resolve("amplitude_experiment.evaluation.flags", False, 2, "local.client") == \
        "amplitude_experiment.local.client"
    assert resolve("amplitude_experiment.evaluation", True, 2, "local") == "amplitude_experiment.local"
    assert resolve("flagd.daemon", False, 1, "") == "flagd"


PLANTS = [
    # (file to plant into, the planted source, the rule that must catch it)
    ("sdk/amplitude_experiment/evaluation/engine.py", "import amplitude_experiment.local.client\n",
     "evaluation is pure"),
    ("sdk/amplitude_experiment/evaluation/flags.py", "from ..local.client import LocalEvaluationClient\n",
     "evaluation is pure"),
    ("sdk/amplitude_experiment/evaluation/engine.py", "def _late():\n    import flagd.daemon\n",
     "evaluation is pure"),
    ("sdk/amplitude_experiment/evaluation/conditions.py", "def _late():\n    from .. import remote\n",
     "evaluation is pure"),
    ("sdk/amplitude_experiment/evaluation/engine.py", "import logging\n", "evaluation is pure"),
    ("sdk/amplitude_experiment/snapshot/writer.py",
     "def _late():\n    from ..local._poller import PollingFlagSource\n", "snapshot knows no SDK client"),
    ("sdk/amplitude_experiment/snapshot/writer.py", "import importlib\n"
     "def _late():\n    importlib.import_module('amplitude_experiment.remote.client')\n", "snapshot knows no SDK client"),
    ("sdk/amplitude_experiment/local/client.py", "def _late():\n    from flagd import sources\n",
     "no SDK module imports flagd"),
    ("sdk/amplitude_experiment/__init__.py", "import flagd.config\n", "no SDK module imports flagd"),
    ("flagd/daemon.py", "def _late():\n    from amplitude_experiment.local.client import LocalEvaluationClient\n",
     "flagd imports no client"),
    ("flagd/sources.py", "from amplitude_experiment import RemoteEvaluationClient\n", "flagd imports no client"),
    ("flagd/status.py", "import amplitude_experiment.tracking\n", "flagd imports no client"),
    ("flagd/events.py", "from amplitude_experiment.local.client import LocalEvaluationClient\n",
     "flagd imports no client"),
    ("flagd/daemon.py", "import amplitude\n", "flagd imports no client"),
]


@pytest.mark.parametrize("target, planted, rule", PLANTS)
def test_a_planted_import_is_caught(tmp_path, target, planted, rule):
    shutil.copytree(SDK, tmp_path / "sdk" / "amplitude_experiment")
    shutil.copytree(ROOT / "flagd", tmp_path / "flagd")
    assert violations(tmp_path / "sdk", tmp_path) == []
    path = tmp_path / target
    path.write_text(path.read_text() + "\n\n" + planted)
    found = violations(tmp_path / "sdk", tmp_path)
    assert any(line.startswith(rule + ": ") for line in found), found


def test_no_prints_in_library_code():
    offenders = []
    for path in sorted(SDK.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append("%s:%d" % (path.relative_to(SDK), node.lineno))
    assert offenders == []


# --- one owner per idea (issue 10, item 13) ------------------------------------------------------

SOURCES = sorted(SDK.rglob("*.py")) + sorted((ROOT / "flagd").rglob("*.py"))


def _definitions(kind):
    """``name -> [files]`` of every function (``kind=ast.FunctionDef``) or class defined in the tree."""
    found = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, kind):
                found.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    return found


def _assigned_strings(path):
    """``(name, string)`` for each string constant a file assigns to a name, and ``("", key)`` for each
    string dict key (docstrings and messages left out)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        pairs = []
        if isinstance(node, ast.Assign):
            pairs = [(getattr(target, "id", ""), node.value) for target in node.targets]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pairs = [(getattr(node.target, "id", ""), node.value)]
        elif isinstance(node, ast.Dict):
            pairs = [("", key) for key in node.keys if key is not None]
        for name, value in pairs:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add((name, value.value))
    return found


@pytest.mark.parametrize("literal, name_part", [
    ("https://flag.lab.eu.amplitude.com", ""), ("/sdk/v2/flags?v=0", ""), ("X-Amp-Exp-Library", ""),
    # The prefix; flagd's system user has the same name but is another idea.
    ("amplitude-flagd", "PREFIX"),
])
def test_each_flag_api_constant_is_written_once(literal, name_part):
    holders = [str(path.relative_to(ROOT)) for path in SOURCES
               if any(value == literal and name_part in name for name, value in _assigned_strings(path))]
    assert holders == ["sdk/amplitude_experiment/_flag_api.py"]


def test_one_body_excerpt_helper_and_one_backoff():
    functions = _definitions(ast.FunctionDef)
    excerpts = [path for name, paths in functions.items() if "excerpt" in name for path in paths]
    assert excerpts == ["sdk/amplitude_experiment/_http.py"]
    assert _definitions(ast.ClassDef).get("Backoff") == ["sdk/amplitude_experiment/_flag_api.py"]


def test_dead_code_is_gone():
    functions = _definitions(ast.FunctionDef)
    assert "redact_key" not in functions
    fork = (SDK / "_fork.py").read_text()
    assert "hasattr(os, \"register_at_fork\")" not in fork
    # The package requires Python 3.9: no import fallback for older interpreters.
    assert [str(path.relative_to(ROOT)) for path in SOURCES if "Python < 3.8" in path.read_text()] == []


def test_no_import_cycle_between_sdk_modules():
    """Modules that import each other (at any depth, run-time imports included) cannot be read alone."""
    root = ROOT / "sdk"
    graph = {}
    for path in sorted(SDK.rglob("*.py")):
        module, _ = module_name(root, path)
        targets = set()
        for _, imported in imports_of(root, path, runtime_only=True):
            while imported and imported not in graph and not (root / (imported.replace(".", "/") + ".py")).exists():
                imported = imported.rpartition(".")[0]  # `from .x import Name` names a module x, not x.Name
            if imported.startswith("amplitude_experiment.") and imported != module:
                targets.add(imported)
        graph[module] = targets
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join(trail + [nxt]))
                elif nxt not in seen and nxt in graph:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert cycles == []
