"""docs/openfeature.md's Flask example, run as written against flags published to shared memory."""

import json
import os
import re
import types

import pytest

pytest.importorskip("flask")

from openfeature import api  # noqa: E402

import amplitude_experiment  # noqa: E402
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig  # noqa: E402
from amplitude_experiment.snapshot import SnapshotWriter  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "server-flask-example-0001"


def example_source() -> str:
    with open(os.path.join(ROOT, "docs", "openfeature.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index("## A complete Flask example"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_flask_example_serves_flags_from_the_shared_snapshot(shm_prefix, monkeypatch):
    with open(os.path.join(ROOT, "examples", "flags.json"), encoding="utf-8") as handle:
        flags = json.load(handle)
    monkeypatch.setenv("AMPLITUDE_DEPLOYMENT_KEY", KEY)
    monkeypatch.delenv("AMPLITUDE_ANALYTICS_KEY", raising=False)
    monkeypatch.setattr("atexit.register", lambda *args, **kwargs: None)  # the test shuts down itself
    built = []

    def initialize_local(api_key, config=None):  # the example's client, on this test's shm prefix
        config = config or LocalEvaluationConfig()
        config.shm_prefix = shm_prefix
        built.append(LocalEvaluationClient(api_key, config))
        return built[-1]

    monkeypatch.setattr(amplitude_experiment.Experiment, "initialize_local", staticmethod(initialize_local))
    if not hasattr(api, "set_provider_and_wait"):  # openfeature-sdk 0.8 initializes in set_provider
        monkeypatch.setattr(api, "set_provider_and_wait", api.set_provider, raising=False)
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=30000) as writer:
        writer.publish({"flags": flags, "source": "test", "poll_interval_ms": 30000})
        module = types.ModuleType("app")
        exec(compile(example_source(), "docs/openfeature.md", "exec"), module.__dict__)
        web = module.app.test_client()
        try:
            assert web.get("/dashboard", headers={"X-User-Id": "alice@example.com"}).json == {"page": "new dashboard"}
            assert web.get("/dashboard", headers={"X-User-Id": "carol@example.com"}).json == {
                "page": "classic dashboard"}
            ranking = web.get("/search", headers={"X-Country": "Germany"}).json["ranking"]
            assert ranking["model"] == "bm25-v2"
            assert web.get("/search", headers={"X-Country": "Peru"}).json == {"ranking": {"model": "bm25"}}
            checkout = web.get("/checkout", headers={"X-User-Id": "u1"}).json
            assert checkout["experiment"] == "exp-42" and checkout["variant"] in ("control", "treatment", "off")
            health = web.get("/healthz")
            assert health.status_code == 200 and health.json["status"] == "READY"
            assert health.json["flags"]["source"] == "flagd"
            assert built[0].flag_source_status["source"] == "flagd"
        finally:
            api.shutdown()
