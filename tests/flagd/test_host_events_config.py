"""How flagd takes the analytics API key and endpoint (issue 14): like the deployment key, never argv."""

import pytest

from flagd import cli
from flagd.config import DEFAULT_ANALYTICS_URL, EU_ANALYTICS_URL, Config, ConfigError

KEY = "server-events-config"
SECRET = "analytics-SECRET-0123456789"


def test_the_analytics_key_is_refused_on_the_command_line_without_echoing_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(["run", "--analytics-api-key", SECRET], {"AMPLITUDE_DEPLOYMENT_KEY": KEY})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "AMPLITUDE_ANALYTICS_API_KEY" in err and "analytics-api-key" in err


def test_file_then_environment_then_credential(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "analytics-api-key").write_text("from-credential")
    environ = {"AMPLITUDE_ANALYTICS_API_KEY": "from-env", "CREDENTIALS_DIRECTORY": str(credentials)}
    assert cli.resolve_analytics_key(str(key_file), environ) == ("from-file", "file")
    assert cli.resolve_analytics_key(None, dict(environ, FLAGD_ANALYTICS_API_KEY_FILE=str(key_file)))[1] == "file"
    assert cli.resolve_analytics_key(None, environ) == ("from-env", "environment")
    del environ["AMPLITUDE_ANALYTICS_API_KEY"]
    assert cli.resolve_analytics_key(None, environ) == ("from-credential", "credential")
    assert cli.resolve_analytics_key(None, {}) == ("", "none")


def test_a_bad_key_file_names_the_analytics_key(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the analytics API key file"):
        cli.resolve_analytics_key(str(tmp_path / "missing"), {})


def test_the_endpoint_follows_the_zone_unless_given():
    assert Config(deployment_key=KEY).analytics_url == DEFAULT_ANALYTICS_URL == "https://api2.amplitude.com/2/httpapi"
    assert Config(deployment_key=KEY, server_zone="eu").analytics_url == EU_ANALYTICS_URL
    assert Config(deployment_key=KEY, analytics_server_url="http://127.0.0.1:1/x").analytics_url == "http://127.0.0.1:1/x"
    with pytest.raises(ConfigError, match="--analytics-server-url"):
        Config(deployment_key=KEY, analytics_server_url="api2.amplitude.com")


def test_the_config_hides_the_analytics_key():
    assert SECRET not in repr(Config(deployment_key=KEY, analytics_api_key=SECRET))


def test_the_event_counters_are_prometheus_metrics():
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from flagd.metrics import DaemonMetrics

    counters = {"received": 9, "deduplicated": 7, "sent": 6, "failed": 1, "dropped": 0, "rejected": 2,
                "worker_fallbacks": 3, "queue_depth": 4}
    metrics = DaemonMetrics("0123456789abcdef", "file:x", "prefix")
    metrics.watch_events(lambda: counters)
    text = generate_latest(metrics.registry).decode()
    assert 'flagd_events_total{outcome="deduplicated"} 7.0' in text
    assert 'flagd_events_total{outcome="worker_fallbacks"} 3.0' in text
    assert "flagd_events_queue_depth 4.0" in text
    counters["sent"] = 8  # read at each scrape
    assert 'flagd_events_total{outcome="sent"} 8.0' in generate_latest(metrics.registry).decode()
