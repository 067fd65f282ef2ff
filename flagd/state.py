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
import tempfile
from typing import Any, Dict, List, Optional

__all__ = ["AlreadyRunning", "InstanceLock", "LastGood", "lock_directory"]

logger = logging.getLogger(__name__)

STATE_FORMAT = 1
SHM_DIR = "/dev/shm"
RUN_DIR = "/run/amplitude-flagd"


class AlreadyRunning(Exception):
    """Another flagd holds the lock; ``pid`` is its process id when it could be read."""

    def __init__(self, path: str, pid: Optional[int]):
        super().__init__(path, pid)
        self.path = path
        self.pid = pid


def lock_directory(state_dir: Optional[str]) -> str:
    """Where the lock file lives: the first of /dev/shm, /run/amplitude-flagd, ``state_dir``, a tmp dir.

    /dev/shm comes first because the lock guards the segments there: two daemons on one host that
    were given different state directories must still exclude each other.
    """
    for candidate in (SHM_DIR, RUN_DIR, state_dir):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    fallback = os.path.join(tempfile.gettempdir(), "amplitude-flagd-%d" % os.getuid())
    os.makedirs(fallback, mode=0o700, exist_ok=True)
    return fallback


class InstanceLock:
    """An exclusive ``flock`` held for the daemon's lifetime; the kernel drops it when the process dies.

    The file holds the owner's pid so a second instance can say who is running. The file itself is
    left in place on exit: unlinking it would let a third process lock a fresh inode while a second
    still waits on the old one.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """:raises AlreadyRunning: if another process holds the lock. :raises OSError: if it cannot be created."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            writable = True
        except PermissionError:
            # Another user's file (fs.protected_regular refuses O_CREAT on it even for root): a
            # read-only descriptor can still tell whether that user's flagd is running.
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            writable = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(self.path, read_pid(self.path)) from None
            raise
        if not writable:
            os.close(fd)
            raise PermissionError(errno.EACCES, "the lock file belongs to another user, whose flagd publishes "
                                  "(or published) this key; run flagd as that user", self.path)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> "InstanceLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


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
