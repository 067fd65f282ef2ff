"""SnapshotFollower: what an evaluation calls to serve the current version, under threads."""

import threading

import pytest

from amplitude_experiment.snapshot import SnapshotFollower, SnapshotReader, SnapshotWriter

KEY = "server-follower-test-key-0001"


def document(marker: str) -> dict:
    return {"flags": [{"key": "f", "variants": {marker: {"key": marker}}, "segments": [{"variant": marker}]}],
            "poll_interval_ms": 1000}


class HeldReader(SnapshotReader):
    """A reader whose load() waits, in one chosen thread, until the test lets it go on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold_thread = None
        self.loading = threading.Event()
        self.release = threading.Event()

    def load(self):
        if threading.current_thread() is self.hold_thread:
            self.loading.set()
            assert self.release.wait(10)
        return super().load()


def test_a_thread_that_loaded_late_does_not_put_back_the_previous_build(shm_prefix):
    problems = []
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document("v1"))
        reader = HeldReader(shm_prefix, KEY)
        follower = SnapshotFollower(reader, lambda table: table.flags()[0]["segments"][0]["variant"],
                                    on_problem=problems.append, on_heartbeat=lambda stale, age: None)
        assert follower.try_attach() and follower.current() == "v1"
        writer.publish(document("v2"))
        slow = threading.Thread(target=follower.current)
        reader.hold_thread = slow
        slow.start()
        assert reader.loading.wait(10)  # the slow thread saw v2 and is loading it
        assert follower.current() == "v2"  # another thread installs v2 meanwhile
        reader.release.set()
        slow.join(10)
        assert not slow.is_alive()
        assert follower.current() == "v2" and follower.table.version == 2
    assert problems == []


def test_threads_that_build_one_version_at_once_all_get_the_same_build(shm_prefix):
    # Both threads see v2 before either installs it, and both build it (the barrier holds each in
    # build until the other is there): callers must still get one object per version, or an
    # OpenFeature provider announces the version twice.
    with SnapshotWriter(shm_prefix, KEY) as writer:
        writer.publish(document("v1"))
        both_building = threading.Barrier(2, timeout=10)
        hold = []

        def build(table):
            if hold:
                both_building.wait()
            return object()

        follower = SnapshotFollower(SnapshotReader(shm_prefix, KEY), build, on_problem=pytest.fail,
                                    on_heartbeat=lambda stale, age: None)
        assert follower.try_attach()
        hold.append(True)
        writer.publish(document("v2"))
        served = []
        threads = [threading.Thread(target=lambda: served.append(follower.current())) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(served) == 2 and served[0] is served[1] is follower.current()
        assert follower.table.version == 2
