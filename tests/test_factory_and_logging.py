"""Small operational fixes: one warning for a second initialize with another config, SDK log lines
printed once when the application configured logging, FlagdUnavailableError at the top level."""

import logging
import subprocess
import sys
import textwrap

import amplitude_experiment
from amplitude_experiment import Experiment, LocalEvaluationConfig, RemoteEvaluationConfig


def test_flagd_unavailable_error_is_public():
    from amplitude_experiment.local._shared_source import FlagdUnavailableError

    assert amplitude_experiment.FlagdUnavailableError is FlagdUnavailableError
    assert issubclass(FlagdUnavailableError, RuntimeError)


def test_a_second_initialize_with_another_config_warns(caplog):
    logger = logging.getLogger("test.factory")
    first = Experiment.initialize_local("server-factory-key-0001",
                                        LocalEvaluationConfig(flag_source="poll", logger=logger))
    with caplog.at_level(logging.WARNING, logger="test.factory"):
        assert Experiment.initialize_local("server-factory-key-0001") is first  # no config: silent
        assert not caplog.records
        assert Experiment.initialize_local("server-factory-key-0001", LocalEvaluationConfig(flag_source="poll")) is first
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "config is ignored" in messages[0] and "factory-key" not in messages[0]
    remote = Experiment.initialize_remote("server-factory-key-0002", RemoteEvaluationConfig(logger=logger))
    with caplog.at_level(logging.WARNING, logger="test.factory"):
        assert Experiment.initialize_remote("server-factory-key-0002", RemoteEvaluationConfig()) is remote
    assert len(caplog.records) == 2


SCRIPT = textwrap.dedent("""
    import logging, sys
    {configure}
    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig
    client = LocalEvaluationClient("server-logging-key", LocalEvaluationConfig(flag_source="poll"))
    client.logger.warning("one-line-marker")
""")


def run(configure: str) -> str:
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(configure=configure)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_sdk_lines_are_printed_once_whether_or_not_the_application_configured_logging():
    assert run("").count("one-line-marker") == 1
    assert run("logging.basicConfig()").count("one-line-marker") == 1
    # Configured after the client was built: still once.
    late = SCRIPT.replace('client.logger.warning', 'logging.basicConfig(); client.logger.warning')
    result = subprocess.run([sys.executable, "-c", late.format(configure="")], capture_output=True, text=True,
                            timeout=60)
    assert result.stderr.count("one-line-marker") == 1, result.stderr
