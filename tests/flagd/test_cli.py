"""Argument parsing, environment variables and key resolution, without starting a daemon."""

import dataclasses

import pytest

from flagd import cli
from flagd.config import Config, ConfigError, ExitCode

KEY = "server-CLIKEY0123456789"


def config_for(argv, environ):
    args = cli.build_parser().parse_args(argv)
    return cli.build_config(args, environ)


def test_defaults_match_the_sdk():
    from amplitude_experiment.local.config import DEFAULT_SHM_PREFIX

    config = config_for(["run"], {"AMPLITUDE_DEPLOYMENT_KEY": KEY})
    assert config.shm_prefix == DEFAULT_SHM_PREFIX
    assert config.flags_url == "https://api.lab.amplitude.com/sdk/v2/flags?v=0"
    assert config.poll_interval_ms == 30000 and config.request_timeout_ms == 10000
    assert config.state_dir is None


def test_eu_zone_switches_the_default_host_only():
    eu = config_for(["run", "--server-zone", "eu"], {"AMPLITUDE_DEPLOYMENT_KEY": KEY})
    assert eu.flags_url == "https://flag.lab.eu.amplitude.com/sdk/v2/flags?v=0"
    proxy = config_for(["run", "--server-zone", "eu", "--server-url", "http://proxy:3546"],
                       {"AMPLITUDE_DEPLOYMENT_KEY": KEY})
    assert proxy.flags_url == "http://proxy:3546/sdk/v2/flags?v=0"
    assert proxy.source_name == "http://proxy:3546"


def test_environment_variables_and_command_line_precedence(tmp_path):
    environ = {"AMPLITUDE_DEPLOYMENT_KEY": KEY, "FLAGD_POLL_INTERVAL_MS": "1500", "FLAGD_SHM_PREFIX": "envp",
               "FLAGD_FLAGS_FILE": "flags.json", "STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}
    config = config_for(["run", "--shm-prefix", "argp"], environ)
    assert config.poll_interval_ms == 1500
    assert config.shm_prefix == "argp"
    assert config.flags_file.endswith("/flags.json") and config.source_name.startswith("file:/")
    assert config.state_dir == "/var/lib/a"
    assert config_for(["run", "--state-dir", str(tmp_path)], environ).state_dir == str(tmp_path)


@pytest.mark.parametrize("environ, message", [
    ({"FLAGD_POLL_INTERVAL_MS": "soon"}, "FLAGD_POLL_INTERVAL_MS"),
    ({"FLAGD_LOG_LEVEL": "loud"}, "FLAGD_LOG_LEVEL"),
    ({"FLAGD_POLL_INTERVAL_MS": "0"}, "--poll-interval-ms"),
    ({"FLAGD_SERVER_URL": "https://host/path"}, "--server-url"),
    ({"FLAGD_METRICS_ADDRESS": "9464"}, "--metrics-address must be HOST:PORT"),  # usage (2), not startup (3)
])
def test_bad_values_name_their_origin(environ, message):
    with pytest.raises(ConfigError, match=message):
        config_for(["run"], dict(environ, AMPLITUDE_DEPLOYMENT_KEY=KEY))


def test_key_sources_in_order(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("  from-file\n")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "deployment-key").write_text("from-credential\n")
    both = {"AMPLITUDE_DEPLOYMENT_KEY": "from-env", "CREDENTIALS_DIRECTORY": str(credentials)}
    assert cli.resolve_deployment_key(str(key_file), both) == ("from-file", "file")
    assert cli.resolve_deployment_key(None, dict(both, FLAGD_DEPLOYMENT_KEY_FILE=str(key_file)))[0] == "from-file"
    assert cli.resolve_deployment_key(None, both) == ("from-env", "environment")
    assert cli.resolve_deployment_key(None, {"CREDENTIALS_DIRECTORY": str(credentials)}) == (
        "from-credential", "credential")
    with pytest.raises(ConfigError, match="no deployment key"):
        cli.resolve_deployment_key(None, {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_bad_key_files_are_refused_without_echoing_them(tmp_path):
    two_words = tmp_path / "two"
    two_words.write_text("secret-one secret-two")
    with pytest.raises(ConfigError) as error:
        cli.resolve_deployment_key(str(two_words), {})
    assert "secret" not in str(error.value)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        cli.resolve_deployment_key(str(empty), {})
    with pytest.raises(ConfigError, match="cannot read"):
        cli.resolve_deployment_key(str(tmp_path / "missing"), {})


@pytest.mark.parametrize("argv", [
    ["run", "--deployment-key", "server-ON-ARGV"],
    ["run", "--deployment-key=server-ON-ARGV"],
    ["status", "--deployment-key", "server-ON-ARGV"],
])
def test_key_on_the_command_line_is_refused_and_not_echoed(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not accepted on the command line" in err
    assert "server-ON-ARGV" not in err


def test_no_key_is_a_usage_error(capsys):
    assert cli.run_cli(["status"], environ={}) == ExitCode.USAGE
    assert "no deployment key" in capsys.readouterr().err


def test_status_and_dump_report_absent(shm_prefix, capsys):
    environ = {"AMPLITUDE_DEPLOYMENT_KEY": KEY}
    assert cli.run_cli(["status", "--shm-prefix", shm_prefix], environ=environ) == ExitCode.ABSENT
    assert "absent" in capsys.readouterr().out
    assert cli.run_cli(["dump", "--shm-prefix", shm_prefix], environ=environ) == ExitCode.ABSENT
    assert "nothing published" in capsys.readouterr().err


def test_config_is_frozen_and_hides_the_key():
    config = Config(deployment_key=KEY)
    assert KEY not in repr(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.poll_interval_ms = 1  # type: ignore[misc]


def test_every_run_option_is_a_config_field():
    parser = cli.build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # argparse keeps subparsers here
    credentials = {"deployment_key_file", "deployment_key", "cohort_api_key_file", "cohort_api_key",
                   "cohort_secret_key_file", "cohort_secret_key", "analytics_api_key_file",
                   "analytics_api_key"}  # secrets: never options of Config
    dests = {action.dest for action in run._actions} - {"help"} - credentials
    assert dests == set(Config.option_fields("run"))


def test_a_missing_flags_file_exits_with_a_clear_error(tmp_path, capsys):
    code = cli.run_cli(["run", "--flags-file", str(tmp_path / "flags.jsn"), "--shm-prefix", "aet-missing"],
                       {"AMPLITUDE_DEPLOYMENT_KEY": KEY})
    result = capsys.readouterr()
    assert code == ExitCode.USAGE
    assert "flags.jsn does not exist" in result.err and "amplitude-flagd check" in result.err


def test_choices_take_any_case():
    """The SDK spells the zone "EU" (ServerZone.EU, ExposureConfig(server_zone="EU")): an operator
    copying it into flagd's options or environment file is not refused over the case."""
    environ = {"AMPLITUDE_DEPLOYMENT_KEY": KEY}
    assert config_for(["run", "--server-zone", "EU"], environ).server_zone == "eu"
    assert config_for(["run"], dict(environ, FLAGD_SERVER_ZONE="EU", FLAGD_LOG_LEVEL="DEBUG")).server_zone == "eu"
    assert config_for(["run", "--log-level", "Warning"], environ).log_level == "warning"
