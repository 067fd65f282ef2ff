"""Forked children for the pre-fork tests: run a body in a child that reports through a pipe, and
reap it within a bound."""

import multiprocessing
import os
import signal
import time
from typing import Any, Callable, Tuple


def run_in_child(body: Callable[[Any], None]) -> Tuple[Any, int]:
    """Fork; run ``body(send)`` in the child, which reports through a pipe; returns (receiving
    end, pid). The child never returns into pytest: it exits 1 after sending any exception."""
    recv, send = multiprocessing.Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body(send)
        except BaseException as error:
            send.send(("error", repr(error)))
            code = 1
        finally:
            os._exit(code)
    return recv, pid


def reap(pid: int, seconds: float = 20.0) -> int:
    """The child's exit code; one still running after ``seconds`` is killed and fails the test."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("child %d did not exit in time" % pid)
