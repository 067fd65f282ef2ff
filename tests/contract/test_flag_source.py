"""One conformance suite for every FlagSource: the poller, flagd's snapshot, and auto mode.

Each source is driven through the same steps (nothing before start, flags after it, an update
becomes visible, stop keeps serving) with its own way of publishing a config.
"""

import logging
import time

import pytest

from amplitude_experiment import LocalEvaluationConfig
from amplitude_experiment.evaluation import FlagConfigError
from amplitude_experiment.local._sources import build_flag_source
from amplitude_experiment.snapshot import SnapshotWriter
from stand_in import Answer
from waiting import wait_until  # noqa: E402

KEY = "contract-deployment-key"
FLAGS_PATH = "/sdk/v2/flags"


def flag(key, value):
    return {
        "key": key,
        "variants": {value: {"key": value, "value": value}},
        "segments": [{"variant": value}],
    }


class PolledUpstream:
    """Publishes by changing what the stand-in's flags endpoint answers."""

    flag_source = "poll"

    def __init__(self, stand_in, shm_prefix):
        self.stand_in = stand_in

    def publish(self, flags):
        self.stand_in.answer("GET", FLAGS_PATH, Answer(200, flags))

    def close(self):
        pass


class FlagdUpstream:
    """Publishes a snapshot the way flagd does."""

    flag_source = "flagd"

    def __init__(self, stand_in, shm_prefix):
        self.writer = SnapshotWriter(shm_prefix, KEY)

    def publish(self, flags):
        try:
            self.writer.publish({"flags": flags, "source": "contract-test", "fetched_at_ns": time.time_ns(),
                                 "flag_count": len(flags), "poll_interval_ms": 1000})
        except FlagConfigError:
            pass  # flagd validates with the SDK's parser and does not publish what it rejects

    def close(self):
        self.writer.close()


class AutoWithFlagd(FlagdUpstream):
    flag_source = "auto"


class AutoWithoutFlagd(PolledUpstream):
    flag_source = "auto"


@pytest.fixture(params=[PolledUpstream, FlagdUpstream, AutoWithFlagd, AutoWithoutFlagd],
                ids=["poll", "flagd", "auto-flagd", "auto-poll"])
def upstream(request, stand_in, shm_prefix):
    publisher = request.param(stand_in, shm_prefix)
    yield publisher
    publisher.close()


@pytest.fixture
def source(upstream, stand_in, shm_prefix):
    config = LocalEvaluationConfig(
        server_url=stand_in.url,
        flag_source=upstream.flag_source,
        shm_prefix=shm_prefix,
        flag_config_polling_interval_millis=20,
        flag_config_poller_request_timeout_millis=2000,
    )
    flag_source = build_flag_source(KEY, config, logging.getLogger("contract"))
    yield flag_source
    flag_source.stop()


def values(flag_set):
    return {key: compiled.segments[0][2]["value"] for key, compiled in flag_set.flags.items()}


def test_nothing_before_start(upstream, source):
    upstream.publish([flag("a", "v1")])
    if upstream.flag_source != "auto":  # auto may attach to a snapshot early; it never polls early
        assert source.current() is None


def test_flags_after_start_and_updates_become_visible(upstream, source):
    upstream.publish([flag("a", "v1"), flag("b", "v1")])
    source.start()
    assert values(source.current()) == {"a": "v1", "b": "v1"}
    upstream.publish([flag("a", "v2"), flag("b", "v1")])
    assert wait_until(lambda: values(source.current())["a"] == "v2")
    assert list(source.current().flags) == ["a", "b"]


def test_stop_is_idempotent_and_keeps_serving(upstream, source):
    upstream.publish([flag("a", "v1")])
    source.start()
    source.stop()
    source.stop()
    assert values(source.current()) == {"a": "v1"}


def test_status_names_the_source_and_counts_flags(upstream, source):
    upstream.publish([flag("a", "v1"), flag("b", "v1"), flag("c", "v1")])
    source.start()
    status = source.status()
    expected = "flagd" if isinstance(upstream, FlagdUpstream) else "poll"
    assert status["source"] == expected
    assert status["flags"] == 3
    # One typed shape for every source: every key present, whatever serves.
    from amplitude_experiment.local.status import FlagSourceStatus

    assert set(status) == set(FlagSourceStatus.__annotations__)
    assert status["healthy"] is True and status["last_error"] is None


def test_a_config_the_parser_rejects_is_never_served(upstream, source):
    """flagd validates before it publishes; the poller validates each poll with the same parser."""
    upstream.publish([flag("a", "v1")])
    source.start()
    upstream.publish([{"key": "a", "variants": [], "segments": []}])
    if isinstance(upstream, FlagdUpstream):
        assert upstream.writer.version == 1  # nothing was published...
    else:
        assert upstream.stand_in.wait_for(3, FLAGS_PATH)
    assert values(source.current()) == {"a": "v1"}  # ...and still serves the last good one
