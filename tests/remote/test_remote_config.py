"""``RemoteEvaluationConfig``: the documented options, their defaults, the EU zone and the logger (docs/compatibility.md, 'Public API', 'Logging')."""

import logging

from amplitude_experiment import RemoteEvaluationClient, RemoteEvaluationConfig, ServerZone
from remote_support import KEY


def test_defaults_are_the_documented_ones_except_the_pool_size():
    config = RemoteEvaluationConfig()

    assert (config.debug, config.server_url, config.fetch_timeout_millis, config.fetch_retries) == (
        False, "https://api.lab.amplitude.com", 10000, 0)
    assert (config.fetch_retry_backoff_min_millis, config.fetch_retry_backoff_max_millis,
            config.fetch_retry_backoff_scalar, config.fetch_retry_timeout_millis) == (500, 10000, 1.5, 10000)
    assert config.fetch_pool_acquire_timeout_millis is None
    assert config.server_zone is ServerZone.US
    assert config.connection_pool_max_size == 10  # the reference's 1 serialises a process (docs/compatibility.md)
    assert config.logger is logging.getLogger("Amplitude")


def test_positional_order_is_the_references():
    config = RemoteEvaluationConfig(True, "http://127.0.0.1:1", 1, 2, 3, 4, 5.0, 6, 7, ServerZone.US, 8)

    assert [config.debug, config.server_url, config.fetch_timeout_millis, config.fetch_retries,
            config.fetch_retry_backoff_min_millis, config.fetch_retry_backoff_max_millis,
            config.fetch_retry_backoff_scalar, config.fetch_retry_timeout_millis,
            config.fetch_pool_acquire_timeout_millis, config.connection_pool_max_size] == [
        True, "http://127.0.0.1:1", 1, 2, 3, 4, 5.0, 6, 7, 8]


def test_the_eu_zone_switches_only_the_default_url():
    assert RemoteEvaluationConfig(server_zone=ServerZone.EU).server_url == "https://api.lab.eu.amplitude.com"
    assert RemoteEvaluationConfig(server_zone=ServerZone.EU, server_url="https://proxy.example").server_url == (
        "https://proxy.example")
    assert RemoteEvaluationConfig(server_zone="EU").server_url == "https://api.lab.amplitude.com"


def test_debug_sets_the_shared_logger_and_a_custom_logger_is_left_alone():
    shared = logging.getLogger("Amplitude")
    try:
        assert RemoteEvaluationConfig(debug=True).logger.level == logging.DEBUG
        mine = logging.getLogger("my-app.experiment")
        mine.setLevel(logging.INFO)
        config = RemoteEvaluationConfig(debug=True, logger=mine)
        assert config.logger is mine and mine.level == logging.INFO
        with RemoteEvaluationClient(KEY, config) as client:
            assert client.logger is mine
    finally:
        shared.setLevel(logging.WARNING)
