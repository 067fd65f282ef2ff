import logging
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/stand_in.py and friends
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))  # reference_env

from stand_in import StandIn  # noqa: E402

# The SDK gives the "Amplitude" logger a stderr handler when it has none. Created inside a test,
# that handler would hold pytest's per-test capture stream, which is closed after the test while
# background threads (the analytics SDK's senders) may still log; bound to the process's own
# stderr (fd 2, which pytest captures per test anyway), it never writes to a closed file.
logging.getLogger("Amplitude").addHandler(logging.StreamHandler(sys.__stderr__))


@pytest.fixture
def stand_in():
    """A recording HTTP stand-in for Amplitude's APIs on 127.0.0.1 (see stand_in.py)."""
    with StandIn() as server:
        yield server


@pytest.fixture
def shm_prefix():
    """A shared-memory namespace of this test's own; its segments are unlinked at teardown."""
    prefix = "aet-" + uuid.uuid4().hex[:12]
    yield prefix
    shm_dir = "/dev/shm"
    if os.path.isdir(shm_dir):
        for name in os.listdir(shm_dir):
            if name.startswith(prefix):
                try:
                    os.unlink(os.path.join(shm_dir, name))
                except FileNotFoundError:
                    pass


@pytest.fixture(autouse=True)
def _fresh_experiment_factory():
    """Experiment.initialize_* keeps one client per key for the process; tests start from none."""
    from amplitude_experiment import factory

    yield
    for registry in (factory.local_evaluation_instances, factory.remote_evaluation_instances):
        for client in registry.values():
            for closer in ("stop", "close"):
                if hasattr(client, closer):
                    try:
                        getattr(client, closer)()
                    except Exception:
                        pass
        registry.clear()


@pytest.fixture(autouse=True, scope="session")
def _silence_analytics_sdk_after_the_session():
    """amplitude-analytics' sender threads may log "Event sent successfully." as the interpreter
    exits, after pytest closed the streams its handlers write to: mute that logger at the end."""
    yield
    logging.getLogger("amplitude").disabled = True
