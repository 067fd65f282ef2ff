"""``amplitude-flagd check`` and the same checks in ``run --flags-file``: typos in a hand-written file are named,
the file is not published, the last good version stays; configs from the API are published and their problems counted."""

import copy
import json
import logging

import pytest

from amplitude_experiment.snapshot import SnapshotReader
from flagd_kit import marker_flags, run_cli

from flagd.check import check_flags
from flagd.config import Config, ExitCode
from flagd.daemon import Daemon
from test_daemon_inprocess import RecordingNotifier, ScriptedSource, body

BUCKETED = [{
    "key": "checkout",
    "variants": {"control": {"key": "control", "value": "control"}, "treatment": {"key": "treatment", "value": "t"}},
    "segments": [
        {"conditions": [[{"selector": ["context", "user", "user_id"], "op": "is", "values": ["a"]}]],
         "variant": "treatment"},
        {"bucket": {"selector": ["context", "user", "device_id"], "salt": "s",
                    "allocations": [{"range": [0, 100], "distributions": [
                        {"variant": "control", "range": [0, 21474837]},
                        {"variant": "treatment", "range": [21474837, 42949673]}]}]},
         "variant": "control"},
    ],
}]


def mutate(change):
    flags = copy.deepcopy(BUCKETED)
    change(flags[0])
    return flags


def set_path(flag, path, value):
    target = flag
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


DISTRIBUTION = ("segments", 1, "bucket", "allocations", 0, "distributions", 0)
ALLOCATION = ("segments", 1, "bucket", "allocations", 0)


@pytest.mark.parametrize("path, value, field, words", [
    (DISTRIBUTION + ("variant",), "treatmnet", "segments[1].bucket.allocations[0].distributions[0].variant",
     "names variant 'treatmnet'"),
    (("segments", 0, "variant"), "contrl", "segments[0].variant", "names variant 'contrl'"),
    (("segments", 0, "conditions", 0, 0, "op"), "equals", "segments[0].conditions[0][0].op", "is not an operator"),
    (ALLOCATION + ("range",), [0, 50, 100], "segments[1].bucket.allocations[0].range", "two integers"),
    (ALLOCATION + ("range",), ["0", "100"], "segments[1].bucket.allocations[0].range", "two integers"),
    (DISTRIBUTION + ("range",), [0, 50000000000], "segments[1].bucket.allocations[0].distributions[0].range",
     "<= 42949673"),
    (("dependencies",), ["nope"], "dependencies[0]", "names flag 'nope'"),
])
def test_each_typo_is_named_with_flag_and_field(path, value, field, words):
    assert check_flags(BUCKETED) == []
    problems = check_flags(mutate(lambda flag: set_path(flag, path, value)))
    assert len(problems) == 1, problems
    assert (problems[0].flag, problems[0].field) == ("checkout", field)
    assert words in problems[0].message
    assert str(problems[0]).startswith("flag 'checkout': %s: " % field)


def test_empty_list_needs_the_option_and_duplicates_are_named():
    assert "is empty" in str(check_flags([])[0])
    assert check_flags([], allow_empty=True) == []
    problems = check_flags(BUCKETED + BUCKETED)
    assert [(p.flag, p.field) for p in problems] == [("checkout", "key")]


def test_parser_problems_are_problems_too():
    flags = mutate(lambda flag: set_path(flag, ("segments", 0, "conditions", 0, 0), {
        "selector": ["context", "user", "user_id"], "op": "regex match", "values": ["("]}))
    assert "regex" in str(check_flags(flags)[0])


def test_check_command_prints_one_line_per_problem_and_exits_7(tmp_path):
    good, bad, empty = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "empty.json"
    good.write_text(json.dumps(BUCKETED))
    flags = mutate(lambda flag: set_path(flag, ("segments", 0, "variant"), "contrl"))
    flags[0]["segments"][0]["conditions"][0][0]["op"] = "equals"
    bad.write_text(json.dumps(flags))
    empty.write_text("[]")
    ok = run_cli("check", str(good), key="")  # check needs no key
    assert ok.returncode == 0 and ok.stdout == "", ok.stderr
    failed = run_cli("check", str(bad), key="")  # check needs no key
    assert failed.returncode == ExitCode.INVALID == 7
    lines = failed.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith(str(bad) + ": flag 'checkout': segments[0].") for line in lines)
    assert run_cli("check", str(empty), key="").returncode == 7
    assert run_cli("check", str(empty), "--allow-empty-flags", key="")  # check needs no key.returncode == 0
    missing = run_cli("check", str(tmp_path / "none.json"), key="")  # check needs no key
    assert missing.returncode == ExitCode.USAGE and "cannot read" in missing.stderr


def make(shm_prefix, key, answers, **options):
    source = ScriptedSource(answers)
    config = Config(deployment_key=key, shm_prefix=shm_prefix, poll_interval_ms=1, **options)
    daemon = Daemon(config, source=source, notifier=RecordingNotifier())
    source.daemon = daemon
    return daemon


def test_a_flags_file_with_problems_is_not_published(shm_prefix, tmp_path, caplog):
    key = "server-check-file"
    typo = marker_flags("b")
    typo[0]["segments"][0]["variant"] = "bb"
    daemon = make(shm_prefix, key, [body(marker_flags("a")), body(typo), body([])],
                  flags_file=str(tmp_path / "flags.json"))
    with caplog.at_level(logging.INFO, logger="flagd"):
        assert daemon.run() == ExitCode.OK
    snapshot = SnapshotReader(shm_prefix, key).load()
    assert snapshot.version == 1 and snapshot.document["flags"] == marker_flags("a")
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=config_problem" in m and 'flag="marker"' in m and 'field="segments[0].variant"' in m
               for m in messages)
    assert any("event=config_rejected" in m and "not published" in m for m in messages)
    assert any("event=config_rejected" in m and "is empty" in m for m in messages)


def test_an_empty_flags_file_is_published_with_the_option(shm_prefix, tmp_path):
    key = "server-check-empty"
    daemon = make(shm_prefix, key, [body(marker_flags("a")), body([])], flags_file=str(tmp_path / "f.json"),
                  allow_empty_flags=True)
    assert daemon.run() == ExitCode.OK
    assert SnapshotReader(shm_prefix, key).load().document["flags"] == []


def test_api_configs_are_published_as_served_with_problems_logged_and_counted(shm_prefix, caplog):
    key = "server-check-api"
    typo = marker_flags("b")
    typo[0]["segments"][0]["variant"] = "bb"
    daemon = make(shm_prefix, key, [body(typo), body(typo)])
    with caplog.at_level(logging.INFO, logger="flagd"):
        assert daemon.run() == ExitCode.OK
    assert SnapshotReader(shm_prefix, key).load().document["flags"] == typo
    assert daemon.config_problems_total == 1  # the same body again is not counted twice
    assert any("event=config_problem" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
