"""flagd against other local users: a planted lock file, planted version names, a squatted index.

The planting steps run as a real other uid (``nobody``) in a forked child (tests/other_user.py);
without root they skip with the reason.
"""

import fcntl
import json
import os
import shutil
import signal
import tempfile
import time

import posix_ipc

from amplitude_experiment import snapshot
from amplitude_experiment.snapshot import host as shm_files
from amplitude_experiment.snapshot import SnapshotReader, SnapshotWriter, key_hash
from flagd_kit import marker_flags
from other_user import FLAGD_UID, NOBODY, as_user, require_root
from test_daemon_inprocess import make

from flagd import state
from flagd.config import Config, ExitCode
from flagd.status import dump, status
from waiting import wait_until

KEY = "server-hostile-flagd-0123456789"


def body(value: str) -> bytes:
    return json.dumps(marker_flags(value)).encode()


def plant_lock(path: str) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.fchmod(fd, 0o644)
    os.write(fd, b"1\n")
    os.close(fd)


def hold_lock(path: str, seconds: float) -> None:
    """As the squatter: keep an exclusive flock on the planted file (read-only fd is enough for flock)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    time.sleep(seconds)  # killed by the test as soon as it is done


def test_a_planted_lock_file_does_not_stop_flagd(shm_prefix, caplog):
    require_root()
    lock = os.path.join(state.lock_directory(None), "%s.%s.lock" % (shm_prefix, key_hash(KEY)))
    as_user(NOBODY, plant_lock, lock)
    holder = os.fork()
    if holder == 0:
        try:
            hold_lock(lock, 60)
        finally:
            os._exit(0)
    try:
        wait_until(lambda: _holds_flock(holder), 10, "the squatter to hold the lock")
        daemon, _, _ = make(shm_prefix, KEY, [body("a"), body("a"), body("b")])
        assert daemon.run() == ExitCode.OK
        assert SnapshotReader(shm_prefix, KEY).load().document["flags"] == marker_flags("b")
        assert any("event=lock_not_ours" in r.getMessage() for r in caplog.records)
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass


def _holds_flock(pid: int) -> bool:
    with open("/proc/locks") as locks:
        return any(" FLOCK " in line and " %d " % pid in line for line in locks)


def test_our_own_lock_file_is_private(shm_prefix):
    path = os.path.join(state.lock_directory(None), "%s.%s.lock" % (shm_prefix, key_hash(KEY)))
    lock = state.InstanceLock([path])
    lock.acquire()
    try:
        assert lock.path == path
        assert os.stat(path).st_mode & 0o077 == 0  # no one else can open it, so no one else can flock it
    finally:
        lock.release()
        os.unlink(path)


def plant_versions(prefix: str, suffixes: list) -> None:
    for suffix in suffixes:
        name = "/%s.%s.%s" % (prefix, key_hash(KEY), suffix)
        posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o644).close_fd()


def run_daemon_as_flagd_user(prefix: str, answers: list) -> dict:
    daemon, source, _ = make(prefix, KEY, answers)
    code = daemon.run()
    reader = SnapshotReader(prefix, KEY)
    return {"code": int(code), "version": reader.current_version(), "fetches": source.fetches,
            "kept": snapshot.list_versions(prefix, KEY, owner_uid=os.geteuid())}


def test_planted_versions_do_not_make_flagd_publish_every_poll(shm_prefix):
    as_user(NOBODY, plant_versions, shm_prefix, ["v0", "v%d" % (2 ** 64 - 2), "v99999999999999999999", "v1"])
    outcome = as_user(FLAGD_UID, run_daemon_as_flagd_user, shm_prefix, [body("a")] * 6)
    # v1 was squatted: skipped; then one version for six polls of the same content.
    assert outcome == {"code": 0, "version": 2, "fetches": 6, "kept": [2]}


def test_status_and_dump_refuse_a_squatted_snapshot_and_say_how_to_trust_flagd(shm_prefix):
    def squat(prefix):
        with SnapshotWriter(prefix, KEY) as writer:
            writer.publish({"flags": marker_flags("forged"), "source": "attacker"})

    as_user(NOBODY, squat, shm_prefix)
    config = Config(deployment_key=KEY, shm_prefix=shm_prefix)
    code, report = status(config)
    assert code == ExitCode.ABSENT
    assert "--flagd-owner" in report["problems"][0] and "uid %d" % NOBODY in report["problems"][0]
    assert dump(config) == (ExitCode.ABSENT, None)
    trusting = Config(deployment_key=KEY, shm_prefix=shm_prefix, flagd_owner="nobody")
    assert status(trusting)[1]["version"] == 1
    assert dump(trusting)[1]["flags"] == marker_flags("forged")


def test_flagd_facing_a_squatted_index_says_whose_it_is(shm_prefix, caplog):
    require_root()

    def squat(prefix):
        SnapshotWriter(prefix, KEY).close()

    as_user(NOBODY, squat, shm_prefix)
    daemon, _, _ = make(shm_prefix, KEY, [body("a")])
    assert daemon.run() == ExitCode.ALREADY_RUNNING
    lines = [r.getMessage() for r in caplog.records if "event=foreign_index" in r.getMessage()]
    assert len(lines) == 1 and "uid %d (nobody)" % NOBODY in lines[0] and "rm " in lines[0]


def test_one_name_for_the_key_hash():
    assert Config(deployment_key=KEY).key_hash == key_hash(KEY)
    assert not hasattr(Config, "key_fingerprint")


def test_one_shm_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(shm_files, "SHM_DIR", str(tmp_path))
    assert state.lock_directory(None) == str(tmp_path)


def lock_as_flagd_user(paths: list) -> list:
    lock = state.InstanceLock(paths)
    lock.acquire()
    try:
        return [lock.path, lock.skipped]
    finally:
        lock.release()


def test_a_flagd_user_skips_a_lock_file_it_may_not_even_open(shm_prefix):
    planted = os.path.join(state.lock_directory(None), "%s.%s.lock" % (shm_prefix, key_hash(KEY)))
    as_user(NOBODY, plant_lock, planted)  # 0644: the flagd user's O_RDWR open is refused
    private = tempfile.mkdtemp(prefix="amplitude-flagd-test-")  # in $TMPDIR, which other uids can reach
    try:
        os.chown(private, FLAGD_UID, FLAGD_UID)
        fallback = os.path.join(private, "k.lock")
        assert as_user(FLAGD_UID, lock_as_flagd_user, [planted, fallback]) == [fallback, [(planted, NOBODY)]]
    finally:
        shutil.rmtree(private)
