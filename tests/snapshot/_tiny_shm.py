"""Scenarios for test_full_shm.py, run in a private mount namespace over a tiny tmpfs on /dev/shm.

``python _tiny_shm.py SCENARIO PREFIX`` prints one JSON line with what happened. A process that
dies by SIGBUS prints nothing, and the test sees the signal in the exit status.
"""

import json
import logging
import os
import sys

import posix_ipc

from amplitude_experiment.snapshot import (
    W_VERSION,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotReader,
    SnapshotWriter,
    version_name,
    index_name,
    list_versions,
    remove_all,
)

KEY = "server-tiny-shm-0123456789"
PAGE = os.sysconf("SC_PAGE_SIZE")


def fill(prefix: str) -> int:
    """Take every free page of /dev/shm with a filler segment; returns the pages taken."""
    shm = posix_ipc.SharedMemory("/%s.filler" % prefix, posix_ipc.O_CREX, mode=0o600)
    pages = 0
    try:
        while True:
            try:
                os.posix_fallocate(shm.fd, 0, (pages + 1) * PAGE)
            except OSError:
                return pages
            pages += 1
    finally:
        shm.close_fd()


def unbacked(name: str, size: int) -> None:
    """A shared-memory file of ``size`` bytes with no page behind it (created by ftruncate, never touched)."""
    posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o640, size=size).close_fd()
    os.chmod("/dev/shm" + name, 0o640)


def unbacked_index(prefix: str) -> dict:
    from amplitude_experiment.local._shared_source import AutoFlagSource
    from amplitude_experiment.local.config import LocalEvaluationConfig
    from flagd.config import Config
    from flagd.status import status

    unbacked(index_name(prefix, KEY), 4096)  # what a flagd killed by SIGBUS mid-creation leaves
    outcome = {"filler_pages": fill(prefix)}
    reader = SnapshotReader(prefix, KEY)
    outcome["attached"] = reader.attach()
    outcome["loaded"] = reader.load()
    outcome["state_version"] = reader.state().version
    code, report = status(Config(deployment_key=KEY, shm_prefix=prefix))
    outcome["status"] = [int(code), report["state"]]

    class Poller:
        def start(self):
            pass

        def current(self):
            return "polled flags"

        def stop(self):
            pass

    config = LocalEvaluationConfig(shm_prefix=prefix)
    auto = AutoFlagSource(KEY, config, logging.getLogger("tiny"), poller=Poller())
    auto.start()
    outcome["auto"] = [auto.mode, auto.current()]
    remove_all(prefix, KEY)  # must not store RETIRED into a page that is not there
    outcome["removed"] = not os.path.exists("/dev/shm" + index_name(prefix, KEY))
    return outcome


def unbacked_data(prefix: str) -> dict:
    writer = SnapshotWriter(prefix, KEY)
    unbacked(version_name(prefix, KEY, 1), 2 * PAGE)
    outcome = {"filler_pages": fill(prefix)}
    writer._words[W_VERSION] = 1  # the index names it, as a writer that skipped fallocate would
    try:
        SnapshotReader(prefix, KEY).load()
        outcome["load"] = "loaded"
    except SnapshotCorruptError as error:
        outcome["load"] = str(error)
    return outcome


def no_room_for_the_index(prefix: str) -> dict:
    outcome = {"filler_pages": fill(prefix)}
    try:
        SnapshotWriter(prefix, KEY)
        outcome["writer"] = "created"
    except SnapshotError as error:
        outcome["writer"] = str(error)
    outcome["names"] = sorted(name for name in os.listdir("/dev/shm") if not name.endswith(".filler"))
    return outcome


def retained_versions_make_room(prefix: str) -> dict:
    blob = b"x" * (3 * PAGE + PAGE // 2)  # with the header: four pages per version
    outcome = {"published": [], "kept": []}
    with SnapshotWriter(prefix, KEY) as writer:
        for n in range(1, 4):
            writer.publish({"n": n, "blob": blob})
        outcome["before"] = list_versions(prefix, KEY)
        outcome["free_pages"] = fill(prefix)
        for n in range(4, 7):
            try:
                outcome["published"].append(writer.publish({"n": n, "blob": blob}))
            except SnapshotError as error:
                outcome["published"].append(str(error))
            outcome["kept"].append(list_versions(prefix, KEY))
    outcome["current"] = SnapshotReader(prefix, KEY).load().document["n"]
    return outcome


SCENARIOS = {f.__name__: f for f in (unbacked_index, unbacked_data, no_room_for_the_index,
                                     retained_versions_make_room)}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]](sys.argv[2])
    print(json.dumps(result))
