"""flagd: one process per host polls flag configs and publishes them into POSIX shared memory.

Every pre-fork worker (gunicorn, uWSGI, Celery) on the host then evaluates from the same snapshot
instead of polling Amplitude itself. Run it with ``amplitude-flagd run`` (docs/flagd.md); the
modules are layered like uvicorn: ``cli`` → ``config.Config`` → ``daemon.Daemon``.
"""

from .config import Config, ExitCode
from .daemon import Daemon

__all__ = ["Config", "Daemon", "ExitCode"]
