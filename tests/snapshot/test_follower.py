"""SnapshotFollower: what an evaluation calls to serve the current version, under threads."""

import threading

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
