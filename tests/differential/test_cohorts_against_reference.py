"""Differential test of cohort targeting: the reference SDK (amplitude-experiment==1.13.0) with its
cohort sync, and ours in poll mode (``cohort_sync_config``) and in shared mode (flagd's cohort
publisher and a worker with no cohort config), all downloading from the same stand-in.

Generated flags hold user- and group-cohort conditions (in / not in, several cohorts at once); the
stand-in serves cohorts that load, that fail (500, 413 too large, 404), a cohort answered with
another group type than its conditions use, and, between two refreshes, cohorts that change, stay
the same (204) or start failing (the loaded copy is kept). Every user is evaluated in both phases;
variants and the cohort ids the SDK filled into the user must agree exactly.
"""

import json
import os
import subprocess

import pytest

import flaggen
import reference_env
from stand_in import Answer, serve_cohort

from amplitude_experiment import CohortSyncConfig, LocalEvaluationClient, LocalEvaluationConfig, User
from amplitude_experiment._cohort_api import CohortFetcher
from amplitude_experiment.evaluation import plan_flags
from amplitude_experiment.snapshot import SnapshotWriter

pytestmark = pytest.mark.differential

REF_SCRIPT = os.path.join(os.path.dirname(reference_env.__file__), "_ref_cohort_eval.py")
API_KEY, SECRET = "cohort-diff-api-key", "cohort-diff-secret"
FLAGS = flaggen.generate_cohort_flags(41, 80)
USERS = flaggen.generate_cohort_users(42, 400)


def serve_phase(stand_in, phase, scripts):
    """Script the cohort endpoint for ``phase`` (1 or 2) from flaggen.COHORT_SPECS."""
    for cohort_id, (group_type, first, second, fail) in flaggen.COHORT_SPECS.items():
        path = "/sdk/v1/cohort/" + cohort_id
        if fail in ("500", "404") or (fail == "500-later" and phase == 2):
            stand_in.answer("GET", path, Answer(int(fail[:3]), b"failing on purpose"))
        elif phase == 1:
            scripts[cohort_id] = serve_cohort(stand_in, cohort_id, first, group_type, last_modified=1000)
        elif second is not None:
            scripts[cohort_id].update(second, 2000)


def normalise(client, spec):
    user = flaggen.build_user(spec, User)
    variants = client.evaluate_v2(user)
    rows = [[key, v.key, v.value, v.payload, v.metadata] for key, v in variants.items()]
    groups = {t: {n: sorted(ids) for n, ids in names.items()} for t, names in (user.group_cohort_ids or {}).items()}
    return json.loads(json.dumps([rows, sorted(user.cohort_ids) if user.cohort_ids is not None else None, groups]))


@pytest.fixture(scope="module")
def reference_python():
    python = reference_env.reference_python()
    if python is None:
        pytest.skip("reference SDK unavailable: %s" % reference_env.reference_unavailable_reason())
    return python


def run_reference(python, stand_in):
    """Both phases of the reference, the test changing the stand-in's cohorts in between."""
    scripts = {}
    serve_phase(stand_in, 1, scripts)
    process = subprocess.Popen([python, REF_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=reference_env.environment(), text=True)
    try:
        process.stdin.write(json.dumps({"url": stand_in.url, "api_key": API_KEY, "secret_key": SECRET,
                                        "max_cohort_size": flaggen.COHORT_MAX_SIZE, "users": USERS}) + "\n")
        process.stdin.flush()
        first = process.stdout.readline()
        assert first, process.stderr.read()[-2000:]
        serve_phase(stand_in, 2, scripts)
        process.stdin.write("go\n")
        process.stdin.flush()
        second = process.stdout.readline()
        assert second, process.stderr.read()[-2000:]
        process.stdin.close()
        assert process.wait(60) == 0, process.stderr.read()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return [json.loads(first), json.loads(second)]


def run_poll_mode(stand_in):
    scripts = {}
    serve_phase(stand_in, 1, scripts)
    config = LocalEvaluationConfig(
        server_url=stand_in.url, flag_source="poll", flag_config_polling_interval_millis=3_600_000,
        cohort_sync_config=CohortSyncConfig(API_KEY, SECRET, max_cohort_size=flaggen.COHORT_MAX_SIZE,
                                            cohort_server_url=stand_in.url))
    with LocalEvaluationClient("server-key", config) as client:
        client.start()
        first = [normalise(client, spec) for spec in USERS]
        serve_phase(stand_in, 2, scripts)
        client._source.cohorts.refresh()  # the interval's refresh, now
        second = [normalise(client, spec) for spec in USERS]
    return [first, second]


def run_shared_mode(stand_in, shm_prefix):
    """flagd's own cohort publisher writes the cohorts; a worker with no cohort config reads them."""
    from flagd.cohorts import CohortPublisher

    scripts = {}
    serve_phase(stand_in, 1, scripts)
    with SnapshotWriter(shm_prefix, "server-key") as writer:
        fetcher = CohortFetcher(stand_in.url, API_KEY, SECRET, flaggen.COHORT_MAX_SIZE, 10.0)
        publisher = CohortPublisher(writer, fetcher, 60000, stand_in.url)
        catalog = plan_flags(FLAGS)
        publisher.prepare(catalog.cohort_refs)
        writer.publish({"poll_interval_ms": 30000}, catalog=catalog)
        publisher.retain(catalog.cohort_refs)
        client = LocalEvaluationClient("server-key", LocalEvaluationConfig(flag_source="flagd", shm_prefix=shm_prefix))
        client.start()
        first = [normalise(client, spec) for spec in USERS]
        serve_phase(stand_in, 2, scripts)
        publisher.refresh_soon()
        publisher.tick()
        second = [normalise(client, spec) for spec in USERS]
        client.stop()
    return [first, second]


@pytest.mark.parametrize("mode", ["poll", "shared"])
def test_cohort_targeting_agrees_with_the_reference(reference_python, stand_in, shm_prefix, mode):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, FLAGS))
    theirs = run_reference(reference_python, stand_in)
    ours = run_poll_mode(stand_in) if mode == "poll" else run_shared_mode(stand_in, shm_prefix)
    compared = differences = 0
    first_differences = []
    in_cohort = 0
    for phase in (0, 1):
        for index, (mine, reference) in enumerate(zip(ours[phase], theirs[phase])):
            compared += 1
            in_cohort += bool(mine[1]) or any(ids for names in mine[2].values() for ids in names.values())
            if mine != reference:
                differences += 1
                if len(first_differences) < 3:
                    first_differences.append("phase %d user %s:\n ours      %s\n reference %s"
                                             % (phase + 1, json.dumps(USERS[index]), mine, reference))
    print("cohort differential (%s mode): %d users x 2 phases, %d flags: %d evaluations compared, %d differ"
          % (mode, len(USERS), len(FLAGS), compared, differences))
    assert differences == 0, "\n\n".join(first_differences)
    assert len(ours[0]) == len(theirs[0]) == len(USERS)
    assert in_cohort > compared // 5, in_cohort  # the corpus puts users in cohorts, or agreeing proves little
    assert ours[0] != ours[1]  # the change between the phases is visible
