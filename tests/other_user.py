"""Run a step as another Unix user, the way a hostile local user (or flagd's own user) would act.

``as_user(uid, fn, *args)`` forks, drops to ``uid`` (gid the same number, no supplementary groups),
calls ``fn(*args)`` and hands its picklable result back over a pipe. Needs root; tests that use it
call :func:`require_root` first, so they skip with the reason elsewhere. Bounded in time.
"""

import os
import pickle
import select
import signal
import traceback
from typing import Any, Callable

import psutil  # noqa: F401 - loaded before the fork: another uid may not read the interpreter's files
import pytest

#: ``nobody`` on Debian and Red Hat alike: the squatter in these tests.
NOBODY = 65534
#: A uid with no passwd entry, standing in for a flagd that runs as its own unprivileged user.
FLAGD_UID = 47113
CHILD_SECONDS = 30.0


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another Unix user (setuid in a forked child)")


def as_user(uid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child running as ``uid``; re-raises its error as AssertionError."""
    require_root()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            outcome = ("ok", fn(*args))
        except BaseException:
            outcome = ("error", traceback.format_exc())
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    answered = False
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            while True:
                readable, _, _ = select.select([pipe], [], [], CHILD_SECONDS)
                assert readable, "the child running as uid %d did not answer in %.0f s" % (uid, CHILD_SECONDS)
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        answered = True
    finally:
        if not answered:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    status, value = pickle.loads(b"".join(chunks))
    if status != "ok":
        raise AssertionError("as uid %d:\n%s" % (uid, value))
    return value
