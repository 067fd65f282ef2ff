"""A nearly full /dev/shm: nobody dies by SIGBUS, and publishing makes room by dropping old versions.

Each scenario runs in a private mount namespace (``unshare -m``) with a tiny tmpfs mounted over
/dev/shm, so the host's shared memory is never filled. Where that is not possible (no root, no
unshare, a seccomp filter) the tests skip with the reason.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.multiprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "_tiny_shm.py")
KEY = "server-tiny-shm-0123456789"
SECONDS = 60


def in_tiny_shm(size_kib: int, argv: list, env: dict = None) -> subprocess.CompletedProcess:
    """Run ``argv`` with a ``size_kib`` tmpfs on /dev/shm that only it sees."""
    mount = "mount -t tmpfs -o size=%dk,mode=1777 amplitude-test /dev/shm && exec \"$@\"" % size_kib
    return subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh"] + argv, cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SECONDS)


@pytest.fixture(scope="module")
def tiny_shm_works():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a private tmpfs over /dev/shm")
    probe = in_tiny_shm(8, ["sh", "-c", "df -k /dev/shm | tail -1"])
    if probe.returncode != 0:
        pytest.skip("cannot mount a private tmpfs here: %s" % probe.stderr.strip())


def scenario(name: str, size_kib: int) -> dict:
    prefix = "aet-" + uuid.uuid4().hex[:12]
    done = in_tiny_shm(size_kib, [sys.executable, SCRIPT, name, prefix])
    assert done.returncode != -signal.SIGBUS, "died by SIGBUS:\n" + done.stderr
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_unbacked_index_reads_as_not_published(tiny_shm_works):
    outcome = scenario("unbacked_index", 8)
    assert outcome["filler_pages"] >= 1
    assert outcome["attached"] is False and outcome["loaded"] is None and outcome["state_version"] == 0
    assert outcome["status"] == [6, "absent"]  # ExitCode.ABSENT, not a SIGBUS
    assert outcome["auto"] == ["poll", "polled flags"]  # auto keeps polling
    assert outcome["removed"] is True


def test_an_unbacked_data_segment_is_refused_not_touched(tiny_shm_works):
    outcome = scenario("unbacked_data", 16)
    assert "not backed" in outcome["load"]


def test_no_room_for_the_index_fails_the_writer_not_the_process(tiny_shm_works):
    outcome = scenario("no_room_for_the_index", 8)
    assert "no room" in outcome["writer"] and outcome["names"] == []  # nothing half-made left behind


def test_full_shm_drops_retained_versions_and_publishes(tiny_shm_works):
    outcome = scenario("retained_versions_make_room", 64)
    assert outcome["before"] == [1, 2, 3] and outcome["free_pages"] < 4
    assert outcome["published"] == [4, 5, 6]
    assert outcome["kept"] == [[3, 4], [3, 4, 5], [5, 6]]
    assert outcome["current"] == 6


def test_flagd_with_one_free_page_exits_instead_of_dying_by_sigbus(tiny_shm_works, tmp_path):
    flags = tmp_path / "flags.json"
    flags.write_text("[]")
    env = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=KEY)
    done = in_tiny_shm(4, [sys.executable, "-m", "flagd", "run", "--flags-file", str(flags),
                           "--shm-prefix", "aet-" + uuid.uuid4().hex[:12]], env)
    assert done.returncode != -signal.SIGBUS, "flagd died by SIGBUS:\n" + done.stderr
    assert done.returncode == 3 and "no room" in done.stderr  # ExitCode.STARTUP_FAILURE, said why
