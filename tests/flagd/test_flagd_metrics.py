"""flagd's Prometheus metrics, scraped over real HTTP on 127.0.0.1."""

import json
import signal
import socket
import urllib.request

import pytest

from amplitude_experiment.snapshot import key_hash
from flagd_kit import marker_flags, run_cli
from waiting import wait_until

from flagd.config import ExitCode

pytest.importorskip("prometheus_client")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int):
    """{(name, labels text): value} from the text exposition format."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            name, _, labels = name_labels.partition("{")
            samples[(name, labels.rstrip("}"))] = float(value)
    return samples


def test_flagd_serves_its_metrics_on_the_opt_in_address(flagd, shm_prefix, deployment_key, tmp_path):
    path = tmp_path / "flags.json"
    flags = marker_flags("a", extra=2)
    flags[1]["segments"] = [{"conditions": [[{"selector": ["context", "user", "cohort_ids"], "op": "set contains any",
                                              "values": ["c1", "c2"]}]], "variant": "on"}]
    path.write_text(json.dumps(flags))
    port = free_port()
    daemon = flagd("--flags-file", str(path), "--metrics-address", "127.0.0.1:%d" % port).start()
    daemon.wait_version(1)
    daemon.wait_log("event=metrics address=127.0.0.1:%d" % port)
    samples = wait_until(lambda: (lambda s: s.get(("flagd_published_version", "")) == 1 and s)(scrape(port)), 10,
                         "version 1 in the metrics")
    assert samples[("flagd_flags", "")] == 3 and samples[("flagd_cohorts", "")] == 2
    assert samples[("flagd_snapshot_bytes", "")] > 64
    assert samples[("flagd_last_success_timestamp_seconds", "")] > 1.7e9
    assert samples[("flagd_publish_duration_seconds_count", "")] == 1
    assert samples[("flagd_fetch_errors_total", 'kind="config_rejected"')] == 0
    info = [labels for name, labels in samples if name == "flagd_info"]
    assert len(info) == 1 and 'key_hash="%s"' % key_hash(deployment_key) in info[0]
    assert deployment_key not in json.dumps([list(k) for k in samples])

    bad = marker_flags("b")
    bad[0]["segments"][0]["variant"] = "nope"
    path.write_text(json.dumps(bad))
    daemon.signal(signal.SIGHUP)
    samples = wait_until(lambda: (lambda s: s[("flagd_fetch_errors_total", 'kind="config_rejected"')] >= 1 and s)(
        scrape(port)), 10, "the rejection in the metrics")
    assert samples[("flagd_consecutive_failures", "")] >= 1 and samples[("flagd_published_version", "")] == 1
    assert daemon.terminate() == ExitCode.OK


def test_metrics_are_off_by_default_and_a_bad_address_fails_at_start(flagd, tmp_path, deployment_key, shm_prefix):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(marker_flags("a")))
    bad = run_cli("run", "--flags-file", str(path), "--metrics-address", "nowhere", "--shm-prefix", shm_prefix,
                  key=deployment_key)
    # A malformed address is a usage error (2: systemd's RestartPreventExitStatus= stops the loop).
    assert bad.returncode == ExitCode.USAGE and "HOST:PORT" in bad.stderr
    daemon = flagd("--flags-file", str(path)).start()
    daemon.wait_version(1)
    assert "event=metrics" not in daemon.log()
    assert daemon.terminate() == ExitCode.OK
