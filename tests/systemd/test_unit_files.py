"""The files in systemd/: the flagd template unit, the sysusers.d file, the reader examples, the env file.

Two tiers. The directive tests parse every file and run everywhere; they hold the settings that keep
shared memory working (docs/systemd.md) and reject any directive or value our table does not know.
Where systemd is installed, ``systemd-analyze verify`` and ``systemd-sysusers --root`` check the
same files with systemd's own parsers.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from unitfile import KNOWN, last, parse_unit, problems, values

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
FLAGD_UNIT = SYSTEMD / "amplitude-flagd@.service"
SYSUSERS = SYSTEMD / "sysusers.d" / "amplitude-flagd.conf"
ENV_EXAMPLE = SYSTEMD / "amplitude-flagd.env.example"
READER_UNIT = SYSTEMD / "examples" / "gunicorn-app.service"
READER_DROPIN = SYSTEMD / "examples" / "amplitude-flagd-reader.conf"
ALL_UNIT_FILES = [FLAGD_UNIT, READER_UNIT, READER_DROPIN]

USER = "amplitude-flagd"
SHM_GROUP = "amplitude-flagd-shm"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_SYSUSERS = shutil.which("systemd-sysusers")
SYSTEMD_BINARY = next((p for p in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd") if os.access(p, os.X_OK)), None)


def unit(path: Path):
    return parse_unit(path.read_text())


# --- directive tests: every machine ---------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_UNIT_FILES, ids=lambda p: p.name)
def test_every_directive_is_known_and_well_formed(path):
    assert problems(unit(path)) == []


def test_flagd_is_a_notify_service_with_a_watchdog_and_restarts():
    flagd = unit(FLAGD_UNIT)
    assert last(flagd, "Service", "Type") == "notify"
    # Only flagd itself may notify: the main pid, not a helper it might start.
    assert last(flagd, "Service", "NotifyAccess") == "main"
    assert last(flagd, "Service", "WatchdogSec") not in ("0", "infinity")
    assert last(flagd, "Service", "Restart") == "always"
    assert values(flagd, "Unit", "StartLimitBurst") and values(flagd, "Unit", "StartLimitIntervalSec")


def test_flagd_instance_takes_its_settings_and_key_from_etc():
    flagd = unit(FLAGD_UNIT)
    assert last(flagd, "Service", "EnvironmentFile") == "/etc/amplitude-flagd/%i.env"
    assert last(flagd, "Service", "LoadCredential") == "deployment-key:/etc/amplitude-flagd/%i.key"
    # One state directory per deployment, so two instances never share a last-good snapshot.
    assert "%i" in last(flagd, "Service", "StateDirectory")
    exec_start = shlex.split(last(flagd, "Service", "ExecStart"))
    assert exec_start[0].endswith("/amplitude-flagd") and exec_start[1] == "run"
    # The key is never on the command line (ps shows it to every user).
    assert not any("KEY" in word.upper() for word in exec_start)


def test_flagd_credential_name_and_exit_codes_match_the_cli():
    from flagd.cli import CREDENTIAL_NAME
    from flagd.config import ExitCode

    flagd = unit(FLAGD_UNIT)
    assert last(flagd, "Service", "LoadCredential").split(":")[0] == CREDENTIAL_NAME
    # Restarting fixes neither a usage error nor a second flagd for the same key.
    prevent = {int(code) for code in last(flagd, "Service", "RestartPreventExitStatus").split()}
    assert prevent == {ExitCode.USAGE, ExitCode.ALREADY_RUNNING}


def test_flagd_keeps_shared_memory_alive_across_restarts():
    flagd = unit(FLAGD_UNIT)
    assert last(flagd, "Service", "RemoveIPC") == "no"
    # DynamicUser= implies RemoveIPC=yes and a new uid each start; it must not appear at all.
    assert values(flagd, "Service", "DynamicUser") == []
    assert last(flagd, "Service", "User") == USER
    assert last(flagd, "Service", "Group") == SHM_GROUP
    # Group-readable, never group- or world-writable (readers refuse writable segments).
    umask = int(last(flagd, "Service", "UMask"), 8)
    assert umask & 0o022 == 0o022 and umask & 0o007 == 0o007 and umask & 0o040 == 0
    # Safe by docs/systemd.md: the private /dev keeps the host's /dev/shm; strict leaves /dev writable.
    assert last(flagd, "Service", "PrivateDevices") == "yes"
    assert last(flagd, "Service", "ProtectSystem") == "strict"
    # Needs AF_UNIX for NOTIFY_SOCKET and the journal, AF_INET* for Amplitude.
    assert set(last(flagd, "Service", "RestrictAddressFamilies").split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}


def _seconds(timespan: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", timespan)
    assert match, "write %r as plain seconds or minutes" % timespan
    return int(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def test_watchdog_and_start_timeouts_outlast_one_fetch():
    from flagd.config import Config

    request_timeout = Config.__dataclass_fields__["request_timeout_ms"].default / 1000.0
    flagd = unit(FLAGD_UNIT)
    # The loop pings every WatchdogSec/2 but not while a fetch is in flight (up to the request
    # timeout), so a healthy flagd is never killed by the watchdog.
    assert _seconds(last(flagd, "Service", "WatchdogSec")) >= 2 * request_timeout
    assert _seconds(last(flagd, "Service", "TimeoutStartSec")) > request_timeout


@pytest.mark.parametrize("path", [READER_UNIT, READER_DROPIN], ids=lambda p: p.name)
def test_readers_join_the_group_as_supplementary_only(path):
    reader = unit(path)
    assert SHM_GROUP in " ".join(values(reader, "Service", "SupplementaryGroups")).split()
    # As a primary group, a reader's RemoveIPC/DynamicUser would delete flagd's segments on stop.
    assert SHM_GROUP not in values(reader, "Service", "Group")
    assert values(reader, "Service", "DynamicUser") in ([], ["no"])
    assert last(reader, "Service", "RemoveIPC") == "no"
    assert any(name.startswith("amplitude-flagd@") for v in values(reader, "Unit", "After") for name in v.split())


def _sysusers_lines() -> List[List[str]]:
    lines = []
    for raw in SYSUSERS.read_text().splitlines():
        raw = raw.strip()
        if raw and not raw.startswith("#"):
            lines.append(shlex.split(raw))
    return lines


def test_sysusers_creates_a_system_user_and_the_shared_group():
    lines = _sysusers_lines()
    for fields in lines:
        assert fields[0] in ("u", "g", "m", "r"), fields
    groups = {fields[1] for fields in lines if fields[0] == "g"}
    users = {fields[1]: fields for fields in lines if fields[0] == "u"}
    members = {(fields[1], fields[2]) for fields in lines if fields[0] == "m"}
    assert SHM_GROUP in groups
    assert USER in users
    # "-" lets sysusers pick from the *system* range; logind's RemoveIPC spares only system users.
    assert users[USER][2] == "-"
    assert (USER, SHM_GROUP) in members


def test_env_example_sets_only_flagd_options_and_never_the_key():
    from flagd.cli import ENV_PREFIX
    from flagd.config import Config

    options = {ENV_PREFIX + name.upper() for name in Config.option_fields("run")}
    set_names, commented_names = [], []
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        commented = line.startswith("#")
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(\S*)", line)
        if commented and not match:
            continue  # prose
        assert match, "not NAME=value: %r" % line
        (commented_names if commented else set_names).append(match.group(1))
        # The key goes through LoadCredential=, never the environment.
        assert "DEPLOYMENT_KEY" not in match.group(1)
    assert set_names, "the example sets nothing"
    unknown = set(set_names + commented_names) - options
    assert not unknown, "flagd run has no option for %s" % sorted(unknown)


# --- systemd's own parsers, where systemd is installed --------------------------------------------

needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")


@pytest.mark.skipif(SYSTEMD_BINARY is None, reason="systemd not installed (apt-get install systemd)")
def test_directive_table_matches_systemd():
    dump = subprocess.run(
        [SYSTEMD_BINARY, "--dump-configuration-items"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    real: Dict[str, set] = {}
    section = None
    for line in dump.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
            real.setdefault(section, set())
        elif "=" in line and section:
            real[section].add(line.split("=", 1)[0])
    for section, table in KNOWN.items():
        unknown = set(table) - real.get(section, set())
        assert not unknown, "systemd knows no %s in [%s]" % (sorted(unknown), section)


def _stub_executables(root: Path, unit_path: Path) -> None:
    """Put an executable stub at each Exec*= path inside ``root``: verify checks that they exist."""
    sections = parse_unit(unit_path.read_text())
    for key, value, _ in sections.get("Service", []):
        if key.startswith("Exec"):
            binary = root / value.split()[0].lstrip("-+!@:").lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\nexit 0\n")
            binary.chmod(0o755)


@needs_analyze
@pytest.mark.parametrize("unit_name, sources", [
    ("amplitude-flagd@production.service", [FLAGD_UNIT]),
    ("gunicorn-app.service", [READER_UNIT]),
    ("gunicorn-app.service", [READER_UNIT, READER_DROPIN]),
], ids=["flagd-instance", "reader", "reader+drop-in"])
def test_systemd_analyze_verify(tmp_path, unit_name, sources):
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    for source in sources:
        if source.suffix == ".conf":
            dropin_dir = unit_dir / (unit_name + ".d")
            dropin_dir.mkdir()
            shutil.copy(source, dropin_dir / source.name)
        else:
            shutil.copy(source, unit_dir / source.name)
        _stub_executables(tmp_path, source)
    # --recursive-errors=no: the temporary root has none of the distribution's targets.
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--recursive-errors=no", "--root=%s" % tmp_path, unit_name],
        capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_systemd_analyze_verify_rejects_a_bad_directive(tmp_path):
    """The check above has teeth: a typo in the unit makes verify fail."""
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    text = FLAGD_UNIT.read_text().replace("RemoveIPC=no", "RemoveIPc=no")
    (unit_dir / FLAGD_UNIT.name).write_text(text)
    _stub_executables(tmp_path, FLAGD_UNIT)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--recursive-errors=no", "--root=%s" % tmp_path,
         "amplitude-flagd@production.service"],
        capture_output=True, text=True, timeout=60,
    )
    assert "RemoveIPc" in result.stderr


@pytest.mark.skipif(SYSTEMD_SYSUSERS is None, reason="systemd-sysusers not installed (apt-get install systemd)")
def test_systemd_sysusers_creates_them_in_an_empty_root(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (etc / name).write_text("")
    result = subprocess.run(
        [SYSTEMD_SYSUSERS, "--root=%s" % tmp_path, str(SYSUSERS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in (etc / "group").read_text().splitlines()}
    assert USER in passwd and SHM_GROUP in group
    assert USER in group[SHM_GROUP][3].split(",")
    # A system uid (below SYS_UID_MAX, 999 on Debian) and no login shell.
    assert int(passwd[USER][2]) < 1000
    assert passwd[USER][6].endswith("nologin")


def test_documentation_links_name_files_the_install_steps_put_there():
    """Documentation= pointed at /usr/share/doc/amplitude-flagd/systemd.md, which nothing installed."""
    links = " ".join(values(unit(FLAGD_UNIT), "Unit", "Documentation")).split()
    assert links
    install = (ROOT / "docs" / "systemd.md").read_text()
    assert "install -m 0644 docs/*.md /usr/share/doc/amplitude-flagd/" in install
    for link in links:
        assert link.startswith("file:///usr/share/doc/amplitude-flagd/"), link
        assert (ROOT / "docs" / link.rsplit("/", 1)[1]).is_file(), link
