import threading

from amplitude_experiment.tracking.dedup import DAY_MILLIS, DedupFilter


def test_first_sight_tracks_and_repeat_does_not():
    dedup = DedupFilter(10)
    assert dedup.should_track("a", 0)
    assert not dedup.should_track("a", 1000)
    assert dedup.should_track("b", 1000)


def test_ttl_slides_on_every_hit():
    dedup = DedupFilter(10)
    assert dedup.should_track("a", 0)
    assert not dedup.should_track("a", DAY_MILLIS)  # exactly the TTL still counts as seen
    assert not dedup.should_track("a", 2 * DAY_MILLIS)  # refreshed by the previous hit
    assert dedup.should_track("a", 3 * DAY_MILLIS + 1)  # expired: tracked again
    assert not dedup.should_track("a", 3 * DAY_MILLIS + 2)


def test_full_cache_forgets_least_recently_seen():
    dedup = DedupFilter(2)
    assert dedup.should_track("a", 0)
    assert dedup.should_track("b", 1)
    assert not dedup.should_track("a", 2)  # a is now the most recent
    assert dedup.should_track("c", 3)  # evicts b
    assert len(dedup) == 2
    assert not dedup.should_track("a", 4)
    assert dedup.should_track("b", 5)


def test_zero_capacity_tracks_everything():
    # The reference crashes on capacity 0; ours simply does not deduplicate.
    dedup = DedupFilter(0)
    assert dedup.should_track("a", 0)
    assert dedup.should_track("a", 0)


def test_concurrent_threads_track_a_result_once():
    dedup = DedupFilter(1000)
    start = threading.Barrier(8)
    answers = []

    def worker():
        start.wait(timeout=5)
        for i in range(200):
            answers.append((i, dedup.should_track("key-%d" % i, 0)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    tracked = [i for i, answer in answers if answer]
    assert sorted(tracked) == list(range(200))
