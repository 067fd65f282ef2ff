"""A counter bumped in every child after ``os.fork()``, so objects notice a fork with one int compare.

Reading ``os.getpid()`` costs a syscall on every call; comparing this counter costs an attribute
load. Servers that fork without running Python's at-fork hooks (uWSGI without
``py-call-osafterfork``) can call :func:`notice_fork` themselves in each worker.
"""

import os
import threading


class _ForkCounter:
    __slots__ = ("generation", "restart_lock")

    def __init__(self) -> None:
        self.generation = 0
        #: Held while an object restarts its threads in a child, so two threads that notice the fork
        #: at once restart it once (re-entrant: a source restarts the poller it wraps).
        self.restart_lock = threading.RLock()


FORKS = _ForkCounter()


def notice_fork() -> None:
    """Mark this process as a new fork child: pollers restart and HTTP sessions are rebuilt lazily."""
    FORKS.restart_lock = threading.RLock()  # a thread of the parent may have held it at the fork
    FORKS.generation += 1


os.register_at_fork(after_in_child=notice_fork)
