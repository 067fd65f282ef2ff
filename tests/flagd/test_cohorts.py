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


def test_a_rate_limited_cohort_server_is_asked_once_per_round(stand_in, shm_prefix):
    """429 from the cohort server (or an evaluation-proxy shedding load) ends the round after one
    request: the other cohorts wait for the backoff, not one 100 ms loop each."""
    from amplitude_experiment._cohort_api import CohortFetcher
    from amplitude_experiment.snapshot import SnapshotWriter, remove_all

    from flagd.cohorts import CohortPublisher

    for cohort_id in ("c1", "c2", "c3"):
        stand_in.answer("GET", "/sdk/v1/cohort/" + cohort_id, Answer(429, b"slow down"))
    try:
        with SnapshotWriter(shm_prefix, "server-rate-limited") as writer:
            publisher = CohortPublisher(writer, CohortFetcher(stand_in.url, API_KEY, SECRET, timeout_s=2.0), 60000,
                                        stand_in.url)
            publisher.prepare({"User": ("c1", "c2", "c3")})
            assert publisher.requests == 1
            errors = {entry["id"]: entry["error"] for entry in publisher.cohorts()}
            assert "429" in errors["c1"]
            assert all("not tried this round" in errors[c] and "429" in errors[c] for c in ("c2", "c3"))
    finally:
        remove_all(shm_prefix, "server-rate-limited")


def test_new_cohorts_hold_the_flags_back_one_request_timeout_at_most(stand_in, shm_prefix):
    """Cohorts just created in Amplitude answer 202 (not ready) for a while. The flags that name
    them wait one request timeout for the round, not one per cohort: the cohorts not reached are
    marked and asked again on the backoff. (A fake clock: each 100 ms pause advances it.)"""
    from amplitude_experiment._cohort_api import CohortFetcher
    from amplitude_experiment.snapshot import SnapshotWriter, remove_all

    from flagd.cohorts import CohortPublisher

    now = [1000.0]

    def sleep(seconds):
        now[0] += seconds

    for cohort_id in ("c1", "c2", "c3"):
        stand_in.answer("GET", "/sdk/v1/cohort/" + cohort_id, Answer(202, b""))
    try:
        with SnapshotWriter(shm_prefix, "server-not-ready") as writer:
            fetcher = CohortFetcher(stand_in.url, API_KEY, SECRET, timeout_s=0.5, sleep=sleep,
                                    monotonic=lambda: now[0])
            publisher = CohortPublisher(writer, fetcher, 60000, stand_in.url, monotonic=lambda: now[0])
            publisher.prepare({"User": ("c1", "c2", "c3")})
            assert stand_in.seen("/sdk/v1/cohort/c1")
            assert stand_in.seen("/sdk/v1/cohort/c2") == stand_in.seen("/sdk/v1/cohort/c3") == []
            errors = {entry["id"]: entry["error"] for entry in publisher.cohorts()}
            assert "not ready" in errors["c1"]
            assert all("not tried this round" in errors[c] for c in ("c2", "c3"))
            assert publisher.next_due() <= now[0] + 1.0  # the backoff, not the interval
    finally:
        remove_all(shm_prefix, "server-not-ready")


def test_a_flagd_without_cohort_credentials_takes_back_its_predecessors_cohorts(stand_in, flagd, shm_prefix,
                                                                                 deployment_key):
    """Cohort credentials removed and flagd restarted: no one refreshes the cohorts any more, so
    workers must not go on serving the last memberships for ever; they use the caller's cohort
    ids again, as with no cohort targeting (docs/cohorts.md)."""
    from amplitude_experiment.snapshot.host import list_versions

    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags()))
    serve_cohort(stand_in, "c1", ["alice"])
    serve_cohort(stand_in, "g1", ["acme"], group_type="org")
    first = flagd(*fleet_args(stand_in), env=CREDENTIALS).start()
    first.wait_log("event=cohorts_published")
    client = shared_client(shm_prefix, deployment_key)
    assert values(client, User(user_id="alice"))["beta"] == "in"
    assert first.terminate() == ExitCode.OK
    second = flagd(*fleet_args(stand_in)).start()
    second.wait_log("event=ready")
    assert values(client, User(user_id="alice"))["beta"] == "out"
    assert values(client, User(user_id="bob", cohort_ids=["c1"]))["beta"] == "in"  # as the caller gives them
    assert client.flag_source_status["cohorts"] is None
    assert list_versions(shm_prefix, deployment_key, kind="k") == list_versions(shm_prefix, deployment_key,
                                                                                kind="c") == []
    status = run_cli("status", "--json", "--shm-prefix", shm_prefix, key=deployment_key)
    assert "cohorts" not in json.loads(status.stdout)


def test_status_is_degraded_while_a_loaded_cohort_goes_unrefreshed(shm_prefix):
    """A cohort that loaded once and has failed every refresh since is served as it was: status
    says so (as the SDK's ``cohorts_stale`` does) instead of "ok"."""
    import time

    from amplitude_experiment.evaluation import plan_flags
    from amplitude_experiment.snapshot import SnapshotWriter, remove_all
    from amplitude_experiment.snapshot.layout import key_hash

    from flagd.status import status_by_key_hash

    key = "server-stale-cohort"
    now = time.time_ns()
    entry = {"id": "c1", "group_type": "User", "size": 1, "last_modified": 1, "interval_ms": 60000,
             "fetched_at_ns": now - 3 * 60 * 10 ** 9, "error": "HTTP 500: down", "error_at_ns": now}
    try:
        with SnapshotWriter(shm_prefix, key, poll_interval_ms=30000) as writer:
            entry["members"] = writer.write_members(["alice"])
            fresh = dict(entry, id="c2", fetched_at_ns=now, error=None, members=writer.write_members(["bob"]))
            writer.publish_cohorts([entry, fresh], {"interval_ms": 60000})
            writer.publish({"poll_interval_ms": 30000, "fetched_at_ns": now}, catalog=plan_flags(cohort_flags()))
            writer.heartbeat(fetched_at_ns=now)
            code, report = status_by_key_hash(shm_prefix, key_hash(key), alive=lambda state: True)
        assert code == ExitCode.DEGRADED, report["problems"]
        assert report["cohorts_stale"] == ["c1"]
        assert any("c1" in problem and "HTTP 500: down" in problem for problem in report["problems"])
    finally:
        remove_all(shm_prefix, key)


def test_a_stopping_flagd_does_not_start_another_cohort_download(stand_in, shm_prefix):
    """SIGTERM during a refresh round of many slow cohorts: the round ends after the download in
    flight, instead of systemd's stop timeout running out and SIGKILL ending flagd."""
    from amplitude_experiment._cohort_api import CohortFetcher
    from amplitude_experiment.snapshot import SnapshotWriter, remove_all

    from flagd.cohorts import CohortPublisher

    stop = []
    for cohort_id in ("c1", "c2", "c3"):
        stand_in.answer("GET", "/sdk/v1/cohort/" + cohort_id, Answer(500, b"down"))
    try:
        with SnapshotWriter(shm_prefix, "server-stopping") as writer:
            fetcher = CohortFetcher(stand_in.url, API_KEY, SECRET, timeout_s=2.0, sleep=lambda seconds: stop.append(1))
            publisher = CohortPublisher(writer, fetcher, 60000, stand_in.url, stopping=lambda: bool(stop))
            publisher.prepare({"User": ("c1", "c2", "c3")})
            assert stand_in.seen("/sdk/v1/cohort/c1")  # the download in flight ends as it does
            assert stand_in.seen("/sdk/v1/cohort/c2") == stand_in.seen("/sdk/v1/cohort/c3") == []
            errors = {entry["id"]: entry["error"] for entry in publisher.cohorts()}
            assert all("flagd is stopping" in errors[c] for c in ("c2", "c3"))
    finally:
        remove_all(shm_prefix, "server-stopping")


def test_a_restarted_flagd_drops_the_cohorts_its_adopted_flags_do_not_reference(stand_in, flagd, shm_prefix,
                                                                                 deployment_key):
    """A flagd killed between publishing flags that stopped naming a cohort and dropping that
    cohort leaves it in the directory; the next flagd adopts both and must drop it, not refresh
    an unreferenced cohort every interval until the flags change again."""
    from amplitude_experiment.evaluation import plan_flags
    from amplitude_experiment.snapshot import SnapshotWriter

    def entry(cohort_id, members, group_type="User"):
        return {"id": cohort_id, "group_type": group_type, "size": 1, "last_modified": 1, "members": members,
                "fetched_at_ns": 1, "error": None, "error_at_ns": 0, "interval_ms": 60000}

    with SnapshotWriter(shm_prefix, deployment_key) as writer:
        writer.publish_cohorts([entry("c1", writer.write_members(["alice"])),
                                entry("c9", writer.write_members(["zed"])),
                                entry("g1", writer.write_members(["acme"]), "org")], {})
        writer.publish({"poll_interval_ms": 200, "source": stand_in.url}, catalog=plan_flags(cohort_flags()))
    stand_in.answer("GET", FLAGS, Answer(200, cohort_flags()))
    for cohort_id in ("c1", "c9"):
        serve_cohort(stand_in, cohort_id, ["alice"])
    serve_cohort(stand_in, "g1", ["acme"], group_type="org")
    daemon = flagd(*fleet_args(stand_in), env=CREDENTIALS).start()
    daemon.wait_log("event=ready")
    assert daemon.version() == 1  # the adopted flags, unchanged
    client = shared_client(shm_prefix, deployment_key)
    assert sorted(client.flag_source_status["cohorts"]) == ["c1", "g1"]


def test_one_cohort_that_always_times_out_does_not_starve_the_others(stand_in, shm_prefix):
    """A cohort too big to download within the request timeout ends each round it is tried in
    (the rest are "not tried this round"). Rounds start with the cohorts tried longest ago, so the
    others are still refreshed; before, the same cohort came first every round."""
    from amplitude_experiment._cohort_api import CohortFetcher
    from amplitude_experiment.snapshot import SnapshotWriter, remove_all

    from flagd.cohorts import CohortPublisher

    now = [0.0]
    stand_in.answer("GET", "/sdk/v1/cohort/a-huge", Answer(200, b"", delay=2.0))
    serve_cohort(stand_in, "b-small", ["alice"])
    try:
        with SnapshotWriter(shm_prefix, "server-starved") as writer:
            fetcher = CohortFetcher(stand_in.url, API_KEY, SECRET, timeout_s=0.3)
            publisher = CohortPublisher(writer, fetcher, 60000, stand_in.url, monotonic=lambda: now[0])
            publisher.prepare({"User": ("a-huge", "b-small")})
            assert stand_in.seen("/sdk/v1/cohort/b-small") == []  # not tried this round
            for _ in range(2):  # two retry rounds on the backoff
                now[0] = publisher.next_due()
                publisher.tick()
            members = {entry["id"]: entry["members"] for entry in publisher.cohorts()}
            assert members["b-small"] and not members["a-huge"]
    finally:
        remove_all(shm_prefix, "server-starved")
