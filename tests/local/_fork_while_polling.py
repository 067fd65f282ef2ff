"""Forks a process whose flag poller is failing (and logging) all the time; prints how many children hung.

Run as ``python _fork_while_polling.py <server_url> <forks> <child_timeout_s> <flag_source> <shm_prefix>``
(``poll``, or ``auto`` with no flagd publishing under the prefix, so it polls). The log goes to a
small pipe that a thread drains slowly (as a busy journald or log shipper does), so a write can
block for a while inside the stream's buffer lock. Every failed poll writes an error line, and
every child writes one line through the same handler and stream before it exits. A child that
inherited a lock the poller held never exits; it is killed after ``child_timeout_s`` and counted.
"""

import fcntl
import logging
import os
import signal
import sys
import threading
import time

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig


def main() -> None:
    url, forks, child_timeout, flag_source, prefix = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
        sys.argv[4], sys.argv[5]
    logger = logging.getLogger("fork-while-polling")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                os.read(read_end, 256)
            except OSError:
                return
            stop.wait(0.0002)  # a slow reader: the pipe stays nearly full

    threading.Thread(target=drain, daemon=True).start()
    logger.addHandler(logging.StreamHandler(os.fdopen(write_end, "w")))
    logger.setLevel(logging.DEBUG)
    config = LocalEvaluationConfig(server_url=url, flag_source=flag_source, shm_prefix=prefix,
                                   flag_config_polling_interval_millis=1,
                                   flag_config_poller_request_timeout_millis=2000, logger=logger)
    client = LocalEvaluationClient("server-fork-test-key", config)
    client.start()
    hung = 0
    for index in range(forks):
        pid = os.fork()
        if pid == 0:
            logger.error("child %d says goodbye", index)
            os._exit(0)
        deadline = time.monotonic() + child_timeout
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                hung += 1
                break
            time.sleep(0.001)  # polling a child process for exit, bounded by the deadline
    status = client.flag_source_status
    client.stop()
    stop.set()
    print(hung, status.get("polls", 0))


if __name__ == "__main__":
    main()
