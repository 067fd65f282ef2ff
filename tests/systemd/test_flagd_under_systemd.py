"""flagd run the way amplitude-flagd@.service runs it, with a real datagram socket standing in for systemd.

tests/flagd/test_sd_notify.py covers the protocol and the basic sequence. These tests hold the
contract the unit relies on: READY=1 only once a snapshot is in shared memory, WATCHDOG=1 from the
poll loop itself (a stuck loop goes silent), STOPPING=1 last on SIGTERM, and the unit's own
settings (credential, state directory, UMask, FLAGD_* file) giving group-readable segments.
"""

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amplitude_experiment.snapshot import SnapshotReader
from fake_systemd import FakeSystemd
from stand_in import Answer
from unitfile import last, parse_unit

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
UNIT = parse_unit((ROOT / "systemd" / "amplitude-flagd@.service").read_text())
ENV_EXAMPLE = ROOT / "systemd" / "amplitude-flagd.env.example"
FLAGS_PATH = "/sdk/v2/flags"
KEY = "server-systemd-test-key"


def flags(variant):
    return [{"key": "f", "metadata": {"flagType": "release", "flagVersion": 1},
             "variants": {variant: {"key": variant, "value": variant}},
             "segments": [{"variant": variant}]}]


def env_file(path: Path):
    """An EnvironmentFile's assignments (the subset of its syntax our example uses)."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


class UnitProcess:
    """flagd started with what systemd would give it for amplitude-flagd@test.service."""

    def __init__(self, tmp_path: Path, systemd: FakeSystemd, shm_prefix: str, overrides: dict, watchdog_usec: int):
        credentials = tmp_path / "credentials"
        credentials.mkdir(mode=0o700)
        credential_name = last(UNIT, "Service", "LoadCredential").split(":")[0]
        (credentials / credential_name).write_text(KEY + "\n")
        (credentials / credential_name).chmod(0o400)
        self.state_dir = tmp_path / "state"
        self.state_dir.mkdir(mode=int(last(UNIT, "Service", "StateDirectoryMode"), 8))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAGD_", "AMPLITUDE_", "NOTIFY_", "WATCHDOG_"))}
        env.update(env_file(ENV_EXAMPLE))
        env.update(overrides, FLAGD_SHM_PREFIX=shm_prefix, CREDENTIALS_DIRECTORY=str(credentials),
                   STATE_DIRECTORY=str(self.state_dir), NOTIFY_SOCKET=systemd.address, WATCHDOG_USEC=str(watchdog_usec),
                   PYTHONPATH=os.pathsep.join([str(ROOT / "sdk"), str(ROOT)]))  # this checkout's SDK, not an install's
        argv = shlex.split(last(UNIT, "Service", "ExecStart"))
        argv[0] = str(Path(sys.executable).parent / Path(argv[0]).name)  # the same console script, from this venv
        umask = int(last(UNIT, "Service", "UMask"), 8)
        self.log_path = tmp_path / "flagd.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=lambda: os.umask(umask))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM as systemd stops a unit; SIGKILL the group if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.popen.wait(5)


@pytest.fixture
def run_unit(tmp_path, shm_prefix):
    started = []
    systemd = FakeSystemd().__enter__()

    def start(overrides, watchdog_usec=400000):
        process = UnitProcess(tmp_path, systemd, shm_prefix, overrides, watchdog_usec)
        started.append(process)
        return process

    try:
        yield systemd, start
    finally:
        for process in started:
            process.terminate()
        systemd.__exit__(None, None, None)


def test_ready_only_once_the_first_snapshot_is_published(run_unit, stand_in, shm_prefix):
    systemd, start = run_unit
    # The first answer takes a second: systemd must not hear READY=1 before it has been published.
    stand_in.answer("GET", FLAGS_PATH, Answer(200, flags("on"), delay=1.0))
    flagd = start({"FLAGD_SERVER_URL": stand_in.url, "FLAGD_POLL_INTERVAL_MS": "60000"})
    reader = SnapshotReader(shm_prefix, KEY)
    ready = systemd.wait_for_key("READY", timeout=30)[0]
    # Read right after READY arrived: a daemon that announced before publishing would show 0 here.
    assert reader.current_version() >= 1, flagd.log()
    assert reader.load().document["flags"][0]["key"] == "f"
    first_request = stand_in.seen(FLAGS_PATH)[0]
    assert ready.at >= first_request.at + 0.9  # not before the slow answer was even sent
    assert ready.fields["MAINPID"] == str(flagd.popen.pid)
    assert ready.fields["STATUS"].startswith("v1")
    assert sum("READY" in m.fields for m in systemd.messages()) == 1


def test_watchdog_pings_come_from_the_poll_loop(run_unit, stand_in):
    systemd, start = run_unit
    # Fast first answer, then every poll hangs for 2 s: a loop stuck in a fetch must stop pinging
    # (a ping from a side thread would hide a hung loop from systemd).
    stand_in.answer("GET", FLAGS_PATH, Answer(200, flags("on")), Answer(200, flags("on"), delay=2.0))
    flagd = start({"FLAGD_SERVER_URL": stand_in.url, "FLAGD_POLL_INTERVAL_MS": "1000",
                   "FLAGD_REQUEST_TIMEOUT_MS": "5000"}, watchdog_usec=400000)
    systemd.wait_for_key("READY", timeout=30)
    slow = stand_in.wait_for(2, FLAGS_PATH, timeout=30)[1]
    # After the slow fetch returns, the loop pings again.
    systemd.wait_for(lambda ms: any(m.at > slow.at + 2.0 and "WATCHDOG" in m.fields for m in ms), 30,
                     "a ping after the slow fetch")
    pings = [m.at for m in systemd.messages("WATCHDOG")]
    before = [at for at in pings if at < slow.at]
    # While idle between polls the loop wakes for the watchdog: every WATCHDOG_USEC/2 = 0.2 s.
    assert len(before) >= 2, (pings, flagd.log())
    assert max(b - a for a, b in zip(before, before[1:])) < 1.2  # 0.2 s, with slack for a busy machine
    # While the fetch hangs, silence (with margins for datagrams and the answer in flight).
    assert not [at for at in pings if slow.at + 0.3 < at < slow.at + 1.8], (slow.at, pings)


def test_stopping_is_the_last_word_and_segments_stay(run_unit, stand_in, shm_prefix):
    systemd, start = run_unit
    stand_in.answer("GET", FLAGS_PATH, Answer(200, flags("on")))
    flagd = start({"FLAGD_SERVER_URL": stand_in.url, "FLAGD_POLL_INTERVAL_MS": "200"})
    systemd.wait_for_key("READY", timeout=30)
    systemd.wait_for_key("WATCHDOG", count=2, timeout=30)
    version = SnapshotReader(shm_prefix, KEY).current_version()
    assert flagd.terminate() == 0, flagd.log()
    messages = systemd.wait_for(lambda ms: any("STOPPING" in m.fields for m in ms), 10, "STOPPING=1")
    assert "STOPPING" in messages[-1].fields and sum("STOPPING" in m.fields for m in messages) == 1
    kinds = [next(iter(m.fields)) for m in messages]
    assert kinds.index("READY") < kinds.index("STOPPING")
    # RemoveIPC=no is only half of it: flagd itself leaves the snapshot for the workers.
    assert SnapshotReader(shm_prefix, KEY).current_version() == version


def test_unit_settings_give_group_readable_segments_and_use_the_credential(run_unit, stand_in, shm_prefix):
    systemd, start = run_unit
    stand_in.answer("GET", FLAGS_PATH, Answer(200, flags("on")))
    flagd = start({"FLAGD_SERVER_URL": stand_in.url, "FLAGD_POLL_INTERVAL_MS": "60000"})
    systemd.wait_for_key("READY", timeout=30)
    # The key came from $CREDENTIALS_DIRECTORY: the API saw it, the environment never had it.
    assert stand_in.seen(FLAGS_PATH)[0].headers.get("Authorization") == "Api-Key " + KEY
    segments = [name for name in os.listdir("/dev/shm") if name.startswith(shm_prefix)]
    assert len(segments) >= 2, segments  # the index and one version
    for name in segments:
        mode = stat.S_IMODE(os.stat(os.path.join("/dev/shm", name)).st_mode)
        # The lock file is flagd's alone: no other user may open it (and hold its flock).
        assert mode == (0o600 if name.endswith(".lock") else 0o640), (name, oct(mode))
    # The last good snapshot went to $STATE_DIRECTORY, out of reach of other users.
    stored = [p for p in flagd.state_dir.rglob("*") if p.is_file()]
    assert stored, flagd.log()
    for path in stored:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, (path, oct(path.stat().st_mode))
    assert KEY not in flagd.log()


def test_reload_publishes_an_edited_flags_file_at_once(run_unit, tmp_path, shm_prefix):
    systemd, start = run_unit
    flags_file = tmp_path / "flags.json"
    flags_file.write_text(json.dumps(flags("on")))
    # An hour between polls: only the reload can explain a prompt publish.
    flagd = start({"FLAGD_FLAGS_FILE": str(flags_file), "FLAGD_POLL_INTERVAL_MS": "3600000"})
    systemd.wait_for_key("READY", timeout=30)
    reader = SnapshotReader(shm_prefix, KEY)
    assert reader.current_version() == 1
    flags_file.write_text(json.dumps(flags("off")))
    reload = shlex.split(last(UNIT, "Service", "ExecReload").replace("$MAINPID", str(flagd.popen.pid)))
    subprocess.run(reload, check=True, timeout=10)
    deadline = time.monotonic() + 15
    while reader.current_version() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # polls the index with a deadline
    assert reader.current_version() == 2, flagd.log()
    assert reader.load().document["flags"][0]["variants"] == {"off": {"key": "off", "value": "off"}}
