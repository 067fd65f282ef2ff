"""The shared-memory files of this host: where they live, whom a reader trusts, who publishes.

/dev/shm is writable by every local user, so everything here assumes a hostile neighbour: a
reader trusts a file only when its own uid, root or flagd's user owns it and nobody else can
write it; a writer counts and unlinks only the names its own uid owns.
"""

import logging
import os
import sys
from typing import FrozenSet, List, Optional, Tuple, Union

import posix_ipc

from .errors import SnapshotError, SnapshotPermissionError
from .layout import IndexState, key_hash, parse_version

__all__ = ["DEFAULT_FLAGD_USER", "FILE_MODE", "SHM_DIR", "OwnerSpec", "check_owner", "is_backed", "list_published",
           "list_versions", "owner_name", "process_start_ns", "publisher_alive", "resolve_gid", "resolve_uid",
           "trusted_owners", "unlink"]

logger = logging.getLogger("amplitude_experiment.snapshot")

#: Where Linux shows POSIX shared memory as files (the one definition; flagd's lock lives here too).
SHM_DIR = "/dev/shm"
#: Mode of every file flagd writes: its owner writes, its group (the workers) reads.
FILE_MODE = 0o640
#: The system user flagd runs as under systemd (systemd/sysusers.d): readers trust it when it exists.
DEFAULT_FLAGD_USER = "amplitude-flagd"

#: Whether st_blocks tells backed pages (tmpfs does); elsewhere the check is skipped.
_CHECK_BACKED = sys.platform.startswith("linux")

OwnerSpec = Optional[Union[int, str]]


def list_versions(prefix: str, deployment_key: str, owner_uid: Optional[int] = None, kind: str = "v") -> List[int]:
    """Versions whose version files exist for this key, optionally only those ``owner_uid`` owns
    (needs /dev/shm; empty where there is none). Names that are no valid version are left out.

    ``kind`` lists another numbered file of the key instead: ``"k"`` cohort directories, ``"c"``
    member files (layout.py); their numbers follow the same rules as versions."""
    stem = "%s.%s.%s" % (prefix, key_hash(deployment_key), kind)
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    versions = []
    for name in names:
        if not name.startswith(stem):
            continue
        version = parse_version(name[len(stem):])
        if version is None:
            continue
        if owner_uid is not None:
            try:
                if os.lstat(os.path.join(SHM_DIR, name)).st_uid != owner_uid:
                    continue  # planted by another user: neither counted nor unlinked
            except OSError:
                continue
        versions.append(version)
    return sorted(versions)


def list_published(prefix: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(prefix, key hash)`` of every index on this host (of ``prefix`` only, when given).

    Needs no deployment key: for ``amplitude-flagd status --all`` and a worker's "wrong key" hint.
    """
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    found = []
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if suffix != "idx" or not dot:
            continue
        name_prefix, dot, hashed = stem.rpartition(".")
        if dot and name_prefix and len(hashed) == 16 and all(c in "0123456789abcdef" for c in hashed):
            if prefix is None or name_prefix == prefix:
                found.append((name_prefix, hashed))
    return sorted(found)


def unlink(name: str) -> bool:
    """Unlink ``name``; False (and a log line when it was not a race) if it could not be."""
    try:
        posix_ipc.unlink_shared_memory(name)
        return True
    except posix_ipc.ExistentialError:
        return False
    except (posix_ipc.Error, OSError) as error:
        logger.warning("could not unlink %s: %s", name, error)
        return False


def is_backed(stat: os.stat_result) -> bool:
    """Whether every page of the file is allocated: touching a page that is not (a hole) makes
    tmpfs allocate it, and a full /dev/shm answers that with SIGBUS. Pages are whole, so with any
    hole st_blocks * 512 falls below st_size."""
    return not _CHECK_BACKED or stat.st_blocks * 512 >= stat.st_size


def owner_name(uid: int) -> str:
    import pwd

    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid


def process_start_ns(pid: int) -> int:
    """When ``pid`` started, on the wall clock in ns, as psutil tells it (0 where it cannot)."""
    import psutil  # only flagd's start and status reports get here, never a worker's hot path

    try:
        return int(psutil.Process(pid).create_time() * 1e9)
    except psutil.Error:
        return 0


def publisher_alive(state: IndexState) -> Optional[bool]:
    """Whether the process that published ``state`` still runs (None: nothing published).

    By psutil: a zombie (killed, not yet reaped) is dead, and a process whose start time differs
    from the recorded one by more than 2 s is a later process reusing the pid. A process this user
    may not inspect counts as alive. Costs a few syscalls: for status reports and writer start-up,
    never for the hot path; across pid namespaces the answer is a best guess.
    """
    pid = state.publisher_pid
    if not pid:
        return None
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but we may not inspect it
    return not state.publisher_start_ns or abs(created - state.publisher_start_ns / 1e9) <= 2.0


def resolve_uid(owner: OwnerSpec) -> Optional[int]:
    if owner is None or isinstance(owner, int):
        return owner
    import pwd

    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise SnapshotPermissionError("flagd owner %r is not a known user" % owner) from None


def resolve_gid(group: OwnerSpec) -> Optional[int]:
    if group is None or isinstance(group, int):
        return group
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SnapshotError("group %r does not exist" % group) from None


def trusted_owners(owner: OwnerSpec = None) -> FrozenSet[int]:
    """The uids a reader accepts as a file's owner: its own, root's, and flagd's.

    flagd's user is ``owner`` when given (uid or name), else :data:`DEFAULT_FLAGD_USER` when that
    user exists on this host. Anyone else may have planted the file (/dev/shm is writable by
    every local user), so it is refused.

    :raises SnapshotPermissionError: ``owner`` names a user this host does not know.
    """
    uids = {os.geteuid(), 0}
    if owner is None:
        import pwd

        try:
            uids.add(pwd.getpwnam(DEFAULT_FLAGD_USER).pw_uid)
        except KeyError:
            pass
    else:
        uids.add(resolve_uid(owner))
    return frozenset(uids)


def check_owner(name: str, stat: os.stat_result, trusted: FrozenSet[int]) -> None:
    """Refuse a shared-memory file others could have written, or that no trusted user owns."""
    if stat.st_mode & 0o022:
        raise SnapshotPermissionError(
            "%s has mode %o: group or others can write it, refusing to read it" % (name, stat.st_mode & 0o777))
    if stat.st_uid not in trusted:
        raise SnapshotPermissionError(
            "%s is owned by %s, which this process does not trust: a flagd shared-memory file must belong to this "
            "process's uid, root or the flagd user (%s). If flagd runs as that user, say so: "
            "LocalEvaluationConfig(flagd_owner=...) in the SDK, --flagd-owner (FLAGD_FLAGD_OWNER) for "
            "`amplitude-flagd status` and `dump`. Otherwise another local user created it: remove it "
            "(as root: rm %s%s.*) and restart flagd."
            % (name, owner_name(stat.st_uid), ", ".join(owner_name(uid) for uid in sorted(trusted)),
               SHM_DIR, name.rsplit(".", 1)[0]))
