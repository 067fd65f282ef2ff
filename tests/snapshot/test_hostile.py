"""Other local users against the shared-memory files: squatted names, planted version numbers, foreign owners.

/dev/shm is writable by every local user. The planting steps run as a real other uid (``nobody``)
in a forked child (tests/other_user.py); without root they skip with the reason.
"""

import logging
import os
import sys

import posix_ipc
import pytest

from amplitude_experiment import snapshot
from amplitude_experiment.snapshot import host
from amplitude_experiment.snapshot import (
    RETIRED,
    W_VERSION,
    SnapshotPermissionError,
    SnapshotReader,
    SnapshotWriter,
    WriterConflictError,
    version_name,
    index_name,
    key_hash,
    list_versions,
)
from other_user import FLAGD_UID, NOBODY, as_user, require_root

KEY = "server-hostile-key-0123456789abcdef"
FORGED = {"flags": [{"key": "forged", "variants": {}, "segments": []}], "source": "attacker", "fetched_at_ns": 1, "flag_count": 1}


def document(n: int) -> dict:
    return {"flags": [{"key": "f%d" % n, "variants": {}, "segments": []}], "source": "test", "fetched_at_ns": 1000 + n, "flag_count": 1}


def squat_with_a_forged_snapshot(prefix: str) -> int:
    """As the squatter: create the index and v1 before flagd, holding forged flags (as flagd would)."""
    with SnapshotWriter(prefix, KEY) as writer:
        return writer.publish(FORGED)


def plant(prefix: str, suffixes: list, mode: int = 0o644, size: int = 0) -> None:
    """Create ``<prefix>.<keyhash>.<suffix>`` names (empty unless ``size``), as whoever runs this."""
    for suffix in suffixes:
        name = "/%s.%s.%s" % (prefix, key_hash(KEY), suffix)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
        os.fchmod(shm.fd, mode)
        shm.close_fd()


def shm_exists(prefix: str, suffix: str) -> bool:
    return os.path.exists("/dev/shm/%s.%s.%s" % (prefix, key_hash(KEY), suffix))


# --- 1. squatting -------------------------------------------------------------------------------


def test_a_reader_refuses_segments_squatted_by_another_user(shm_prefix):
    assert as_user(NOBODY, squat_with_a_forged_snapshot, shm_prefix) == 1
    reader = SnapshotReader(shm_prefix, KEY)  # the default config, as root: trusts root and itself only
    with pytest.raises(SnapshotPermissionError, match="flagd_owner") as refused:
        reader.load()
    assert "uid %d" % NOBODY in str(refused.value) and "nobody" in str(refused.value)


def test_a_reader_trusts_the_flagd_user_it_was_told_about(shm_prefix):
    as_user(NOBODY, squat_with_a_forged_snapshot, shm_prefix)
    assert SnapshotReader(shm_prefix, KEY, owner="nobody").load().document == FORGED
    assert SnapshotReader(shm_prefix, KEY, owner=NOBODY).load().document == FORGED


def test_the_default_flagd_user_is_trusted_when_it_exists(shm_prefix, monkeypatch):
    as_user(NOBODY, squat_with_a_forged_snapshot, shm_prefix)
    monkeypatch.setattr(host, "DEFAULT_FLAGD_USER", "nobody")  # as if sysusers.d had made it
    assert SnapshotReader(shm_prefix, KEY).load().version == 1
    monkeypatch.setattr(host, "DEFAULT_FLAGD_USER", "no-such-flagd-user")  # absent: not an error
    with pytest.raises(SnapshotPermissionError, match="flagd_owner"):
        SnapshotReader(shm_prefix, KEY).load()


def test_a_reader_always_trusts_its_own_uid_and_root(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document(1))
    # Root's segments, a reader told about some other flagd user: root is trusted anyway.
    assert SnapshotReader(shm_prefix, KEY, owner=NOBODY).load().version == 1

    def read_as_flagd_user(prefix):
        return SnapshotReader(prefix, KEY).load().version

    os.chmod("/dev/shm" + index_name(shm_prefix, KEY), 0o644)
    os.chmod("/dev/shm" + version_name(shm_prefix, KEY, 1), 0o644)
    assert as_user(FLAGD_UID, read_as_flagd_user, shm_prefix) == 1


def test_flagd_facing_a_foreign_index_says_whose_it_is_and_what_to_do(shm_prefix):
    as_user(NOBODY, squat_with_a_forged_snapshot, shm_prefix)
    with pytest.raises(WriterConflictError) as refused:
        SnapshotWriter(shm_prefix, KEY)
    message = str(refused.value)
    assert "uid %d (nobody)" % NOBODY in message
    assert "rm " in message and index_name(shm_prefix, KEY).lstrip("/") in message

    def start_as_flagd_user(prefix):
        try:
            SnapshotWriter(prefix, KEY)
        except WriterConflictError as error:
            return str(error)

    message = as_user(FLAGD_UID, start_as_flagd_user, shm_prefix)  # may not even open it for writing
    assert "uid %d (nobody)" % NOBODY in message and "rm " in message


# --- 2. planted version names -------------------------------------------------------------------

HUGE = ["v99999999999999999999", "v%d" % (2 ** 64 - 2), "v%d" % (2 ** 63), "v007", "vx1", "v-3", "v0"]


def test_planted_names_of_another_user_are_neither_counted_nor_unlinked(shm_prefix):
    as_user(NOBODY, plant, shm_prefix, HUGE + ["v5"])
    with SnapshotWriter(shm_prefix, KEY) as writer:
        assert writer.publish(document(1)) == 1
        assert writer.publish(document(2)) == 2
    assert SnapshotReader(shm_prefix, KEY).load().version == 2
    for suffix in HUGE + ["v5"]:
        assert shm_exists(shm_prefix, suffix), suffix  # not ours: left alone


def test_out_of_range_names_of_flagds_own_uid_are_ignored(shm_prefix):
    require_root()  # the same names, planted by this very uid (e.g. root planting for root's flagd)
    plant(shm_prefix, ["v%d" % (2 ** 64 - 2), "v99999999999999999999", "v007"])
    with SnapshotWriter(shm_prefix, KEY) as writer:
        version = writer.publish(document(1))
    assert version == 1 and version != RETIRED
    assert SnapshotReader(shm_prefix, KEY).state().version == 1
    assert list_versions(shm_prefix, KEY) == [1]


def test_an_index_holding_an_out_of_range_version_starts_over(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document(1))
        writer._words[W_VERSION] = 2 ** 64 - 2  # what an older flagd stored after a planted name
    with SnapshotWriter(shm_prefix, KEY) as writer:
        assert writer.publish(document(2)) == 2


def test_thirty_squatted_future_names_are_skipped_in_one_publish(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY) as writer:
        assert writer.publish(document(1)) == 1
        as_user(NOBODY, plant, shm_prefix, ["v%d" % n for n in range(2, 32)])
        assert writer.publish(document(2)) == 32
        assert writer.publish(document(3)) == 33
    assert SnapshotReader(shm_prefix, KEY).load().document == document(3)


def publish_same_content_as_flagd_user(prefix: str, times: int) -> dict:
    """A flagd of its own uid, publishing five versions while another user planted ``.v0``."""
    outcome = {"errors": []}
    with SnapshotWriter(prefix, KEY) as writer:
        for n in range(times):
            try:
                outcome.setdefault("versions", []).append(writer.publish(document(n)))
            except Exception as error:  # noqa: BLE001 - reported back to the test
                outcome["errors"].append(repr(error))
        outcome["kept"] = list_versions(prefix, KEY, owner_uid=os.geteuid())
    return outcome


def test_a_planted_empty_v0_neither_breaks_publishing_nor_leaks_versions(shm_prefix):
    as_user(NOBODY, plant, shm_prefix, ["v0"])
    outcome = as_user(FLAGD_UID, publish_same_content_as_flagd_user, shm_prefix, 6)
    assert outcome["errors"] == []
    assert outcome["versions"] == [1, 2, 3, 4, 5, 6]
    assert outcome["kept"] == [4, 5, 6]
    assert shm_exists(shm_prefix, "v0")


def test_publish_never_raises_after_the_version_is_stored(shm_prefix, monkeypatch, caplog):
    with SnapshotWriter(shm_prefix, KEY) as writer:
        for n in range(1, 4):
            writer.publish(document(n))

        def refuse(name):
            raise posix_ipc.PermissionsError("Permission denied")

        monkeypatch.setattr(posix_ipc, "unlink_shared_memory", refuse)
        with caplog.at_level(logging.WARNING):
            assert writer.publish(document(4)) == 4  # dropping v1 fails: logged, not raised
        assert SnapshotReader(shm_prefix, KEY).load().version == 4


def test_version_numbers_stay_below_retired():
    top = snapshot.MAX_VERSION
    assert top < RETIRED
    assert snapshot.parse_version("%d" % top) == top
    for text in ("%d" % (top + 1), "%d" % RETIRED, "0", "007", "", "1a", "\u00b2", "+1", " 1"):
        assert snapshot.parse_version(text) is None, text


# --- 13. one owner per idea ---------------------------------------------------------------------


def index_fds(prefix: str) -> list:
    """This process's open fds on ``prefix``'s segments, as /proc/self/fd shows them."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("/dev/shm/" + prefix):
            fds.append(int(fd))
    return fds


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_reader_keeps_only_what_the_docs_say(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document(1))
    reader = SnapshotReader(shm_prefix, KEY)
    assert index_fds(shm_prefix) == []
    assert reader.load().version == 1
    held = index_fds(shm_prefix)
    # docs/shared-mode.md: no fd on Python 3.13+ (mmap's trackfd=False); before that CPython's mmap
    # keeps one duplicate fd per mapping, read-only and close-on-exec: the index's and the mapped
    # version's (its flags are decoded from the mapping when first needed).
    if sys.version_info >= (3, 13):
        assert held == []
    else:
        names = sorted(os.readlink("/proc/self/fd/%d" % fd) for fd in held)
        assert names == sorted(["/dev/shm" + index_name(shm_prefix, KEY), "/dev/shm" + version_name(shm_prefix, KEY, 1)])
        for fd in held:
            with open("/proc/self/fdinfo/%d" % fd) as info:
                flags = int([line for line in info if line.startswith("flags:")][0].split()[1], 8)
            assert flags & os.O_ACCMODE == os.O_RDONLY and flags & 0o2000000  # O_CLOEXEC


def test_one_publisher_alive_by_psutil(shm_prefix):
    import flagd.status

    assert flagd.status.publisher_alive is snapshot.publisher_alive
    import inspect

    assert not hasattr(host, "_process_state") and "/proc/" not in inspect.getsource(host)
