"""flagd: one process per host polls flag configs and publishes them into POSIX shared memory.

Every pre-fork worker (gunicorn, uWSGI, Celery) on the host then evaluates from the same snapshot
instead of polling Amplitude itself. Run it with ``amplitude-flagd run`` (docs/flagd.md); the
modules are layered like uvicorn: ``cli`` → ``config.Config`` → ``daemon.Daemon``.
"""


def _refuse_a_replaced_sdk() -> None:
    """Fail with the fix, not with an odd ImportError, when Amplitude's ``amplitude-experiment`` was
    installed over this distribution (same import name). Loads the SDK's _coexist.py by path:
    the package itself may no longer import."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("amplitude_experiment")
    if spec is None or not spec.submodule_search_locations:
        return
    path = os.path.join(list(spec.submodule_search_locations)[0], "_coexist.py")
    if not os.path.exists(path):
        return
    checker_spec = importlib.util.spec_from_file_location("_amplitude_experiment_coexist", path)
    if checker_spec is None or checker_spec.loader is None:
        return
    checker = importlib.util.module_from_spec(checker_spec)
    checker_spec.loader.exec_module(checker)
    message = checker.conflict_message()
    if message and message.startswith("REPLACED: "):
        raise ImportError("amplitude-flagd cannot run: " + message[len("REPLACED: "):])


_refuse_a_replaced_sdk()

from .config import Config, ExitCode  # noqa: E402
from .daemon import Daemon  # noqa: E402

__all__ = ["Config", "Daemon", "ExitCode"]
