import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/stand_in.py and friends
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))  # reference_env

from stand_in import StandIn  # noqa: E402


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
def _detach_sdk_log_handlers():
    """The SDK gives the ``Amplitude`` logger a stderr handler, bound to pytest's capture stream.

    Background threads (the analytics SDK's senders) may still log as the interpreter exits, after
    that stream is closed; detach the handler at the end of the session so they log nowhere.
    """
    yield
    import logging

    sdk_logger = logging.getLogger("Amplitude")
    for handler in list(sdk_logger.handlers):
        if isinstance(handler, logging.StreamHandler):
            sdk_logger.removeHandler(handler)
