"""flagd downloads each referenced cohort once per host and publishes the members for workers.

One stand-in serves both /sdk/v2/flags and /sdk/v1/cohort/<id> under one base URL, as an
evaluation-proxy fleet does (docs/fleet.md).
"""

import base64
import json
import os
import signal

import pytest

from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
from flagd_kit import run_cli, wait_until
from stand_in import Answer, serve_cohort

from flagd.config import ExitCode

pytestmark = pytest.mark.multiprocess

FLAGS = "/sdk/v2/flags"
API_KEY = "cohort-api-KEY-7a7a7a7a7a"
SECRET = "cohort-SECRET-5b5b5b5b5b5b"
CREDENTIALS = {"AMPLITUDE_COHORT_API_KEY": API_KEY, "AMPLITUDE_COHORT_SECRET_KEY": SECRET}


def cohort_flags(user_cohorts=("c1",), group_cohorts=("g1",)):
    in_out = {"in": {"key": "in", "value": "in"}, "out": {"key": "out", "value": "out"}}
    return [
        {"key": "beta", "variants": in_out, "segments": [
            {"conditions": [[{"selector": ["context", "user", "cohort_ids"], "op": "set contains any",
                              "values": list(user_cohorts)}]], "variant": "in"}, {"variant": "out"}]},
        {"key": "orgs", "variants": in_out, "segments": [
            {"conditions": [[{"selector": ["context", "groups", "org", "cohort_ids"], "op": "set contains any",
                              "values": list(group_cohorts)}]], "variant": "in"}, {"variant": "out"}]},
    ]


def fleet_args(stand_in, *extra):
    return ["--server-url", stand_in.url, "--cohort-server-url", stand_in.url, "--poll-interval-ms", "200",
            "--backoff-min-ms", "100", "--backoff-max-ms", "400"] + list(extra)


def shared_client(prefix, key):
    client = LocalEvaluationClient(key, LocalEvaluationConfig(flag_source="flagd", shm_prefix=prefix))
    client.start()
    return client


def values(client, user):
    return {key: variant.value for key, variant in client.evaluate_v2(user).items()}


def test_flagd_downloads_cohorts_once_and_workers_need_no_cohort_config(stand_in, flagd, shm_prefix,
                                                                          deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags()))
    script = serve_cohort(stand_in, "c1", ["alice", "bob"], last_modified=1719000000000)
    serve_cohort(stand_in, "g1", ["acme"], group_type="org")
    daemon = flagd(*fleet_args(stand_in, "--max-cohort-size", "1000"), env=CREDENTIALS).start()
    daemon.wait_version(1)
    client = shared_client(shm_prefix, deployment_key)
    assert values(client, User(user_id="alice", groups={"org": ["acme"]})) == {"beta": "in", "orgs": "in"}
    assert values(client, User(user_id="carol", groups={"org": ["other"]})) == {"beta": "out", "orgs": "out"}
    first = stand_in.seen("/sdk/v1/cohort/c1")
    assert len(first) == 1 and len(stand_in.seen("/sdk/v1/cohort/g1")) == 1  # once for the host
    token = base64.b64encode(("%s:%s" % (API_KEY, SECRET)).encode()).decode()
    assert first[0].headers["Authorization"] == "Basic " + token
    assert first[0].headers["X-Amp-Exp-Library"] == "experiment-python-server/1.13.0"
    assert first[0].query == "maxCohortSize=1000"
    # A refresh (SIGHUP: now) asks with lastModified; unchanged cohorts cost a 204 and nothing is written.
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(stand_in.seen("/sdk/v1/cohort/c1")) >= 2, 10, "the refresh")
    assert stand_in.seen("/sdk/v1/cohort/c1")[1].query == "maxCohortSize=1000&lastModified=1719000000000"
    # A changed cohort: every worker serves it after the next refresh, with no flag version published.
    script.update(["carol"], 1719000000001)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: values(client, User(user_id="carol"))["beta"] == "in", 10, "the changed cohort")
    assert values(client, User(user_id="alice"))["beta"] == "out"
    assert daemon.version() == 1
    status = run_cli("status", "--json", "--shm-prefix", shm_prefix, key=deployment_key)
    report = json.loads(status.stdout)
    assert status.returncode == ExitCode.OK, status.stdout + status.stderr
    by_id = {cohort["id"]: cohort for cohort in report["cohorts"]}
    assert by_id["c1"]["size"] == 1 and by_id["g1"]["group_type"] == "org" and report["cohorts_missing"] == []
    text = run_cli("status", "--shm-prefix", shm_prefix, key=deployment_key).stdout
    assert "c1 (User, 1 members" in text
    dump = run_cli("dump", "--shm-prefix", shm_prefix, key=deployment_key)
    assert [cohort["id"] for cohort in json.loads(dump.stdout)["cohorts"]] == ["c1", "g1"]
    assert "carol" not in dump.stdout and "acme" not in dump.stdout  # no member ids unless asked: none kept
    assert daemon.terminate() == ExitCode.OK
    log = daemon.log()
    assert "event=cohort_loaded" in log and "event=cohorts_published" in log
    for secret in (API_KEY, SECRET, token):
        assert secret not in log
    for name in os.listdir("/dev/shm"):
        if name.startswith(shm_prefix):
            with open(os.path.join("/dev/shm", name), "rb") as handle:
                data = handle.read()
            assert API_KEY.encode() not in data and SECRET.encode() not in data and token.encode() not in data
            assert b"carol" not in data  # members are stored as keyed hashes


def test_a_failing_cohort_degrades_status_and_the_flags_still_publish(stand_in, flagd, shm_prefix, deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags(user_cohorts=("c1", "big"))))
    serve_cohort(stand_in, "c1", ["alice"])
    serve_cohort(stand_in, "big", ["u%d" % i for i in range(50)])
    stand_in.answer("GET", "/sdk/v1/cohort/g1", Answer(500, b"down"))
    daemon = flagd(*fleet_args(stand_in, "--max-cohort-size", "10", "--request-timeout-ms", "1000"),
                   env=CREDENTIALS).start()
    daemon.wait_version(1)
    client = shared_client(shm_prefix, deployment_key)
    assert values(client, User(user_id="alice", groups={"org": ["acme"]})) == {"beta": "in", "orgs": "out"}
    assert client.flag_source_status["cohorts_missing"] == ["big", "g1"]
    status = run_cli("status", "--json", "--shm-prefix", shm_prefix, key=deployment_key)
    report = json.loads(status.stdout)
    assert status.returncode == ExitCode.DEGRADED, status.stdout
    assert report["cohorts_missing"] == ["big", "g1"]
    assert any("big, g1 not loaded" in problem for problem in report["problems"])
    assert "larger than the maximum cohort size of 10" in {c["id"]: c for c in report["cohorts"]}["big"]["last_error"]
    daemon.wait_log("event=cohort_failed cohort=\"g1\"")
    # The failed cohort is retried on the backoff and comes in once the server answers.
    serve_cohort(stand_in, "g1", ["acme"], group_type="org")
    wait_until(lambda: values(client, User(groups={"org": ["acme"]}))["orgs"] == "in", 15, "the retried cohort")


def test_cohort_credentials_from_files_and_systemd_credentials_never_argv(stand_in, flagd, shm_prefix,
                                                                          deployment_key, tmp_path):
    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags()))
    serve_cohort(stand_in, "c1", ["alice"])
    serve_cohort(stand_in, "g1", ["acme"], group_type="org")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "cohort-api-key").write_text(API_KEY + "\n")
    (credentials / "cohort-secret-key").write_text(SECRET + "\n")
    daemon = flagd(*fleet_args(stand_in), env={"CREDENTIALS_DIRECTORY": str(credentials)}).start()
    daemon.wait_version(1)
    wait_until(lambda: stand_in.seen("/sdk/v1/cohort/c1"), 10, "a cohort download")
    token = base64.b64encode(("%s:%s" % (API_KEY, SECRET)).encode()).decode()
    assert stand_in.seen("/sdk/v1/cohort/c1")[0].headers["Authorization"] == "Basic " + token
    daemon.wait_log("event=cohort_targeting credentials=credential,credential")
    refused = run_cli("run", "--shm-prefix", shm_prefix, "--cohort-secret-key", SECRET, key=deployment_key)
    assert refused.returncode == 2 and SECRET not in refused.stderr
    assert "not accepted on the command line" in refused.stderr
    one_only = run_cli("run", "--shm-prefix", shm_prefix, key=deployment_key,
                       env={"AMPLITUDE_COHORT_API_KEY": API_KEY})
    assert one_only.returncode == ExitCode.USAGE and "both" in one_only.stderr


def test_without_cohort_credentials_flagd_downloads_nothing(stand_in, flagd, shm_prefix, deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags()))
    serve_cohort(stand_in, "c1", ["alice"])
    daemon = flagd(*fleet_args(stand_in)).start()
    daemon.wait_version(1)
    client = shared_client(shm_prefix, deployment_key)
    # No cohorts published: the caller's cohort ids are used as given, as without cohort sync.
    assert values(client, User(user_id="alice"))["beta"] == "out"
    assert values(client, User(user_id="alice", cohort_ids=["c1"]))["beta"] == "in"
    assert stand_in.seen("/sdk/v1/cohort/c1") == []


def test_a_cohort_server_that_hangs_costs_one_timeout_not_one_per_cohort(stand_in, flagd, shm_prefix, deployment_key):
    """Flags wait for their new cohorts; a hanging cohort server must not multiply that wait."""
    import time

    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags(user_cohorts=("c1", "c2", "c3", "c4"))))
    for cohort_id in ("c1", "c2", "c3", "c4", "g1"):
        stand_in.answer("GET", "/sdk/v1/cohort/" + cohort_id, Answer(200, b"", delay=5.0))
    started = time.monotonic()
    daemon = flagd(*fleet_args(stand_in, "--request-timeout-ms", "500"), env=CREDENTIALS).start()
    daemon.wait_version(1, timeout=15)
    assert time.monotonic() - started < 4.5  # one 0.5 s timeout (and start-up), not five
    client = shared_client(shm_prefix, deployment_key)
    assert client.flag_source_status["cohorts_missing"] == ["c1", "c2", "c3", "c4", "g1"]
    errors = [state["last_error"] for state in client.flag_source_status["cohorts"].values()]
    assert sum("not tried this round" in error for error in errors) == 4


def test_cohort_targeting_turned_on_for_an_unchanged_config_downloads_its_cohorts(stand_in, flagd, shm_prefix,
                                                                                   deployment_key):
    """A restart with cohort credentials finds the published version's cohorts even though the
    flags did not change (nothing new to publish)."""
    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags()))
    serve_cohort(stand_in, "c1", ["alice"])
    serve_cohort(stand_in, "g1", ["acme"], group_type="org")
    first = flagd(*fleet_args(stand_in)).start()
    first.wait_version(1)
    assert first.terminate() == ExitCode.OK
    second = flagd(*fleet_args(stand_in), env=CREDENTIALS).start()
    second.wait_log("event=cohorts_published")
    client = shared_client(shm_prefix, deployment_key)
    assert values(client, User(user_id="alice", groups={"org": ["acme"]})) == {"beta": "in", "orgs": "in"}
    assert second.version() == 1
