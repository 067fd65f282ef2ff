"""`status` judges age by the poll interval flagd runs with now, as workers do."""

import time

from amplitude_experiment.evaluation import plan_flags
from amplitude_experiment.snapshot import SnapshotWriter, remove_all
from amplitude_experiment.snapshot.layout import key_hash

from flagd.config import ExitCode
from flagd.status import status_by_key_hash

FLAG = {"key": "f", "variants": {"on": {"key": "on", "value": "on"}},
        "segments": [{"variant": "on"}], "metadata": {"flagType": "release"}}


def test_status_uses_the_running_flagds_interval_not_the_adopted_versions(shm_prefix):
    """A flagd restarted with --poll-interval-ms 2000 adopts a version published at 30000: its
    heartbeat and fetch times are judged against 3 x 2 s (at least 10 s), not 90 s. Workers read the
    index's interval; a status that read the version's would say "ok" for 80 s after fetches stop."""
    key = "server-interval-changed"
    now = time.time_ns()
    try:
        with SnapshotWriter(shm_prefix, key, poll_interval_ms=30000) as writer:
            writer.publish({"poll_interval_ms": 30000, "fetched_at_ns": now}, catalog=plan_flags([FLAG]))
        with SnapshotWriter(shm_prefix, key, poll_interval_ms=2000) as writer:  # the restart: adopts v1
            writer.heartbeat(fetched_at_ns=now - 15 * 10 ** 9)
            code, report = status_by_key_hash(shm_prefix, key_hash(key), alive=lambda state: True)
        assert report["max_age_s"] == 10.0
        assert code == ExitCode.STALE, report["problems"]
    finally:
        remove_all(shm_prefix, key)
