"""What flagd keeps outside shared memory: the one-daemon-per-key lock and the last good snapshot.

Both files are named by the key's hash (``key_hash``), never the key. The snapshot file is written
atomically (temporary file, fsync, rename, fsync of the directory), so a crash leaves either the old
copy or the new one, never half of one.
"""

import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from amplitude_experiment.snapshot import host as shm_files

__all__ = ["AlreadyRunning", "InstanceLock", "LastGood", "lock_directory", "lock_paths"]

logger = logging.getLogger(__name__)

STATE_FORMAT = 1
RUN_DIR = "/run/amplitude-flagd"
LOCK_MODE = 0o600


class AlreadyRunning(Exception):
    """Another flagd holds the lock; ``pid`` is its process id when it could be read."""

    def __init__(self, path: str, pid: Optional[int]):
        super().__init__(path, pid)
        self.path = path
        self.pid = pid


def lock_directory(state_dir: Optional[str]) -> str:
    """Where the lock file lives: the first of /dev/shm, /run/amplitude-flagd, ``state_dir``, a tmp dir.

    /dev/shm comes first because the lock guards the shared-memory files there: two daemons on one host that
    were given different state directories must still exclude each other.
    """
    paths = lock_paths("", state_dir)
    return os.path.dirname(paths[0]) if paths else tempfile.gettempdir()


def lock_paths(name: str, state_dir: Optional[str]) -> List[str]:
    """Where the lock named ``name`` may live, in the order :class:`InstanceLock` tries them:
    beside the shared-memory files first, then /run/amplitude-flagd, ``state_dir`` and a directory of this uid's own
    in $TMPDIR (used when a place holds a file this uid did not create)."""
    directories = [d for d in (shm_files.SHM_DIR, RUN_DIR, state_dir)
                   if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)]
    private = _private_directory()
    if private:
        directories.append(private)
    return [os.path.join(d, name) for d in dict.fromkeys(directories)]


def _private_directory() -> Optional[str]:
    """``$TMPDIR/amplitude-flagd-<uid>``, mode 0700, if it is this uid's (someone may have made it first)."""
    path = os.path.join(tempfile.gettempdir(), "amplitude-flagd-%d" % os.geteuid())
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return None
    return path


class _NotOurs(Exception):
    def __init__(self, uid: int):
        super().__init__(uid)
        self.uid = uid


class InstanceLock:
    """An exclusive ``flock`` held for the daemon's lifetime; the kernel drops it when the process dies.

    The file is mode 0600, so no other user can open it and hold the lock; it holds the owner's pid
    so a second instance can say who is running. A file at that path this uid did not create (in
    world-writable /dev/shm anyone can plant one, and hold a ``flock`` on it) is skipped for the
    next path: :attr:`skipped` lists ``(path, owner uid)``, and :attr:`path` is None when every path
    was taken that way (the file writer's live-pid check still refuses a second writer). The
    file itself is left in place on exit: unlinking it would let a third process lock a fresh inode
    while a second still waits on the old one.

    :param paths: where to lock, in order (:func:`lock_paths`); a single path is one choice.
    """

    def __init__(self, paths: Union[str, Sequence[str]]):
        self._paths = [paths] if isinstance(paths, str) else list(paths)
        self.path: Optional[str] = self._paths[0] if self._paths else None
        self.skipped: List[Tuple[str, int]] = []
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """:raises AlreadyRunning: if another process of ours holds the lock. :raises OSError: if it cannot be created."""
        self.skipped = []
        for path in self._paths:
            try:
                fd = _open_own(path)
            except _NotOurs as other:
                self.skipped.append((path, other.uid))
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise AlreadyRunning(path, read_pid(path)) from None
                raise
            try:
                os.ftruncate(fd, 0)
                os.write(fd, b"%d\n" % os.getpid())
            except OSError:
                pass  # a full /dev/shm: the flock is what counts; "who" is then unknown
            self.path = path
            self._fd = fd
            return
        self.path = None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> "InstanceLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _open_own(path: str) -> int:
    """Open (or create, 0600) the lock file at ``path``; :raises _NotOurs: it is another uid's."""
    uid = os.geteuid()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, LOCK_MODE)
    except OSError as error:
        # fs.protected_regular refuses O_CREAT on another user's file in a sticky directory (root
        # included), O_NOFOLLOW a planted symlink: say whose it is.
        try:
            owner = os.lstat(path).st_uid
        except OSError:
            raise error from None
        if owner != uid:
            raise _NotOurs(owner) from None
        raise
    info = os.fstat(fd)
    if info.st_uid != uid or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _NotOurs(info.st_uid)
    os.fchmod(fd, LOCK_MODE)  # also for files an older flagd made 0644
    return fd


def read_pid(path: str) -> Optional[int]:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


class LastGood:
    """The last snapshot flagd published, on disk, for a cold start while the upstream is down."""

    def __init__(self, state_dir: str, key_hash: str):
        self.path = os.path.join(state_dir, "%s.last-good.json" % key_hash)
        self._dir = state_dir

    def save(self, flags: List[Any], source: str, fetched_at_ns: int) -> None:
        """Replace the stored snapshot atomically. :raises OSError: when the directory is not writable."""
        os.makedirs(self._dir, mode=0o750, exist_ok=True)
        document = {"format": STATE_FORMAT, "source": source, "fetched_at_ns": fetched_at_ns, "flags": flags}
        data = json.dumps(document, separators=(",", ":")).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=".last-good.", suffix=".tmp", dir=self._dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(self._dir)

    def load(self) -> Optional[Dict[str, Any]]:
        """The stored document (``flags``, ``source``, ``fetched_at_ns``), or None if absent or unreadable.

        The flags inside are validated again by the caller before anything is published.
        """
        try:
            with open(self.path, "rb") as handle:
                document = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("event=state_unreadable path=%s error=%s", self.path, error)
            return None
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
            logger.warning("event=state_unreadable path=%s error=\"unknown format\"", self.path)
            return None
        return document


def _fsync_dir(path: str) -> None:
    """Make the rename itself durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
