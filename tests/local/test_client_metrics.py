"""The SDK's per-process Prometheus metrics in multiprocess mode, scraped over real HTTP on 127.0.0.1."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from amplitude_experiment.snapshot import SnapshotWriter

pytest.importorskip("prometheus_client")

ROOT = Path(__file__).resolve().parents[2]
KEY = "server-metrics-test-key-0001"
WORKER = """
import os, sys
from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig, User
client = LocalEvaluationClient(%(key)r, LocalEvaluationConfig(flag_source="flagd", shm_prefix=%(prefix)r))
client.start()
for i in range(%(count)d):
    client.evaluate_v2(User(user_id="u%%d" %% i))
print(os.getpid())
"""


def flag(variant):
    return {"key": "f1", "variants": {variant: {"key": variant, "value": variant}}, "segments": [{"variant": variant}]}


def run_worker(prefix, directory, count):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory),
               PYTHONPATH=os.pathsep.join([str(ROOT / "sdk"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", WORKER % {"key": KEY, "prefix": prefix, "count": count}],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def scrape(directory):
    """Serve the directory the way an application's /metrics does, on 127.0.0.1, and read it once."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.server_port, timeout=5) as response:
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()


def value(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all('%s="%s"' % item in line for item in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_each_worker_reports_the_version_it_serves(shm_prefix, tmp_path):
    directory = tmp_path / "multiproc"
    directory.mkdir()
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1000) as writer:
        writer.publish({"flags": [flag("a")], "source": "file:/x", "fetched_at_ns": time.time_ns(), "flag_count": 1})
        first = run_worker(shm_prefix, directory, 100)
        writer.publish({"flags": [flag("b")], "source": "file:/x", "fetched_at_ns": time.time_ns(), "flag_count": 1})
        second = run_worker(shm_prefix, directory, 50)
    text = scrape(directory)
    assert value(text, "amplitude_experiment_served_version", pid=str(first)) == 1
    assert value(text, "amplitude_experiment_served_version", pid=str(second)) == 2
    assert value(text, "amplitude_experiment_flags", pid=str(second)) == 1
    assert value(text, "amplitude_experiment_evaluations_total") == 150
    assert value(text, "amplitude_experiment_source", pid=str(first), source="flagd", flag_source="flagd") == 1
    published = value(text, "amplitude_experiment_snapshot_published_timestamp_seconds", pid=str(second))
    assert abs(published - time.time()) < 600
    assert value(text, "amplitude_experiment_last_refresh_timestamp_seconds", pid=str(first)) > 1.7e9
    assert KEY not in text


def test_no_metrics_without_the_multiprocess_directory(monkeypatch):
    from amplitude_experiment import LocalEvaluationClient, LocalEvaluationConfig

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    client = LocalEvaluationClient(KEY, LocalEvaluationConfig(flag_source="poll", server_url="http://127.0.0.1:9"))
    assert client._metrics is None
