"""Cohort directories (.k<N>) and member files (.c<M>): written whole, read in place, cleaned up."""

import os
import subprocess
import sys
import textwrap

import pytest

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment.evaluation import plan_flags
from amplitude_experiment.snapshot import SnapshotReader, SnapshotWriter, remove_all
from amplitude_experiment.snapshot.errors import SnapshotCorruptError
from amplitude_experiment.snapshot.host import list_versions
from amplitude_experiment.snapshot.layout import (
    W_COHORT_VERSION,
    CohortMembers,
    encode_members,
    fence_bits,
    key_hash,
    member_hash,
)
from amplitude_experiment.snapshot.reader import CohortFollower

KEY = "server-cohort-files-test-key-01"


def entry(cohort_id, members, group_type="User", last_modified=1, error=None):
    return {"id": cohort_id, "group_type": group_type, "size": 0, "last_modified": last_modified,
            "members": members, "fetched_at_ns": 1, "error": error, "error_at_ns": 0}


def names(prefix, kind):
    return list_versions(prefix, KEY, kind=kind)


@pytest.mark.parametrize("count", [0, 1, 2, 15, 16, 17, 1000, 70000])
def test_member_files_find_every_member_and_no_one_else(count):
    members = ["member-%d" % i for i in range(count)]
    image = encode_members(members, os.urandom(16))
    table = CohortMembers(bytearray(image.header(7, 0) + image.body), "/t.c7", 7)
    assert len(table) == count and image.bits == fence_bits(count)
    assert all(table.contains(member) for member in members)
    assert not any(table.contains("other-%d" % i) for i in range(2000))
    assert not table.contains("")


def test_a_lookup_confirms_on_the_low_half():
    key = os.urandom(16)
    image = encode_members(["alice"], key)
    table = CohortMembers(bytearray(image.header(1, 0) + image.body), "/t.c1", 1)
    hashed = member_hash(key, "alice")
    assert table.contains_hash(hashed)
    assert not table.contains_hash(hashed ^ 1)  # same high half, another low half


def test_published_cohorts_are_read_in_place_and_a_change_writes_one_member_file(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY) as writer:
        c1 = writer.write_members(["alice", "bob"])
        g1 = writer.write_members(["acme"])
        first = writer.publish_cohorts([entry("c1", c1), entry("g1", g1, "org"), entry("c9", 0, error="HTTP 500")], {})
        reader = SnapshotReader(shm_prefix, KEY)
        assert reader.attach()
        follower = CohortFollower(reader, on_problem=pytest.fail)
        view = follower.current()
        assert follower.current() is view  # one word compare while nothing moves
        assert view.cohorts_containing("User", "alice", ["c1", "g1", "c9"]) == ["c1"]
        assert view.cohorts_containing("User", "acme", ["c1", "g1"]) == []  # g1 is an org cohort
        assert view.cohorts_containing("org", "acme", ["g1"]) == ["g1"]
        assert view.cohorts_containing("User", "carol", ["c1", "c9"]) == []
        # c1 changes: one new member file and a new directory; g1's file stays as it is.
        c1b = writer.write_members(["carol"])
        second = writer.publish_cohorts([entry("c1", c1b, last_modified=2), entry("g1", g1, "org")], {})
        assert second == first + 1 and c1b == g1 + 1
        view2 = follower.current()
        assert view2.cohorts_containing("User", "carol", ["c1"]) == ["c1"]
        assert view2._by_id["g1"][1] is view._by_id["g1"][1]  # the mapped g1 file was reused
        # The kept directories still name c1's first file; three publishes later it is gone.
        for _ in range(3):
            writer.publish_cohorts([entry("c1", c1b, last_modified=2), entry("g1", g1, "org")], {})
        assert names(shm_prefix, "c") == [g1, c1b]
        assert names(shm_prefix, "k") == [second + 1, second + 2, second + 3]
        mode = os.stat("/dev/shm/%s.%s.c%d" % (shm_prefix, key_hash(KEY), g1)).st_mode & 0o777
        assert mode == 0o640
    remove_all(shm_prefix, KEY)
    assert names(shm_prefix, "c") == [] and names(shm_prefix, "k") == []


def test_a_corrupt_member_file_is_refused_and_the_previous_cohorts_stay(shm_prefix):
    problems = []
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish_cohorts([entry("c1", writer.write_members(["alice"]))], {})
        reader = SnapshotReader(shm_prefix, KEY)
        reader.attach()
        follower = CohortFollower(reader, on_problem=problems.append)
        assert follower.current().cohorts_containing("User", "alice", ["c1"]) == ["c1"]
        number = writer.write_members(["bob"])
        path = "/dev/shm/%s.%s.c%d" % (shm_prefix, key_hash(KEY), number)
        with open(path, "r+b") as handle:
            handle.seek(80)
            handle.write(b"\xff")
        writer.publish_cohorts([entry("c1", number)], {})
        assert follower.current().cohorts_containing("User", "alice", ["c1"]) == ["c1"]
        assert problems and "checksum" in problems[0]
        with pytest.raises(SnapshotCorruptError):
            reader.read_cohorts(reader.words[W_COHORT_VERSION])


def test_a_writer_killed_mid_write_leaves_nothing_a_restart_keeps(shm_prefix):
    """SIGKILL between a member file and its directory: the next writer keeps the published
    directory and its files, and unlinks the orphan."""
    script = textwrap.dedent("""
        import os, signal, sys
        from amplitude_experiment.snapshot import SnapshotWriter
        writer = SnapshotWriter(sys.argv[1], sys.argv[2])
        writer.publish_cohorts([{"id": "c1", "group_type": "User", "members": writer.write_members(["alice"])}], {})
        writer.write_members(["orphan"])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ)
    completed = subprocess.run([sys.executable, "-c", script, shm_prefix, KEY], env=env, capture_output=True, timeout=60)
    assert completed.returncode == -9, completed.stderr
    assert len(names(shm_prefix, "c")) == 2
    with SnapshotWriter(shm_prefix, KEY) as writer:
        assert names(shm_prefix, "c") == [1]
        assert writer.cohort_directory().cohorts[0]["id"] == "c1"
        assert writer.write_members(["next"]) == 3  # never reuses a number
    remove_all(shm_prefix, KEY)


def test_shared_mode_workers_target_cohorts_without_any_cohort_config(shm_prefix):
    flags = [{"key": "beta", "variants": {"in": {"key": "in", "value": "in"}, "out": {"key": "out", "value": "out"}},
              "segments": [{"conditions": [[{"selector": ["context", "user", "cohort_ids"], "op": "set contains any",
                                              "values": ["c1"]}]], "variant": "in"}, {"variant": "out"}]}]
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish_cohorts([entry("c1", writer.write_members(["alice"]))], {})
        writer.publish({"poll_interval_ms": 30000}, catalog=plan_flags(flags))
        client = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix))
        client.start()
        alice = User(user_id="alice")
        assert client.evaluate_v2(alice)["beta"].value == "in" and alice.cohort_ids == ["c1"]
        assert client.evaluate_v2(User(user_id="bob"))["beta"].value == "out"
        status = client.flag_source_status
        assert status["cohorts_missing"] == [] and list(status["cohorts"]) == ["c1"]
        writer.publish_cohorts([entry("c1", writer.write_members(["bob"]), last_modified=2)], {})
        assert client.evaluate_v2(User(user_id="bob"))["beta"].value == "in"
        assert client.evaluate_v2(User(user_id="alice"))["beta"].value == "out"
