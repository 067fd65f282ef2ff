"""The byte layout of flagd's shared-memory snapshots, and the writer and reader that use it.

flagd writes with :class:`SnapshotWriter`; the SDK's shared mode reads with :class:`SnapshotReader`.
Nothing else computes an offset. Protocol (b) of design.md: every version is written once into
its own segment and never modified; a small index publishes the current version with one aligned
8-byte store, made last.

Names (the deployment key itself never appears in a name, a segment or an error message)::

    index: /<prefix>.<keyhash>.idx        data: /<prefix>.<keyhash>.v<N>      keyhash = key_hash(key)

Index segment, 4096 bytes, little-endian u64 words (``memoryview(mm).cast('Q')``)::

    word  0  magic            b"AMPFIDX1"
          1  layout           INDEX_LAYOUT (1)
          2  version          current snapshot version, 0 = none yet.  THE PUBLISH POINT: stored last.
                              RETIRED (2**64-1) = this index was removed; readers re-open by name.
          3  writer_pid       pid of the publishing flagd
          4  writer_start_ns  that process's start time (wall clock), guards against pid reuse
          5  published_at_ns  when ``version`` was published
          6  last_fetch_ns    last successful upstream fetch (including "not modified")
          7  heartbeat_ns     refreshed by every publish loop iteration
          8  poll_interval_ms flagd's upstream poll interval (writer argument, or the document's
                              "poll_interval_ms"); readers warn once when the heartbeat is 3x older
          9.. reserved (0)

Data segment ``v<N>``, 64-byte header then the msgpack payload, sized exactly::

     0               8       12      16              24              32              40      44      64
     +---------------+-------+-------+---------------+---------------+---------------+-------+-------+----
     | magic         |format |encod. | version N     | payload length| created_ns    | crc32 | (0)   | msgpack payload ...
     | b"AMPFSNP1"   |u32 = 1|u32 = 1| u64           | u64           | u64           | u32   | 20 B  |
     +---------------+-------+-------+---------------+---------------+---------------+-------+-------+----

The payload is one msgpack map: ``{"flags": [flag configs in storage order], "source": str,
"fetched_at_ns": int, "flag_count": int, ...}``.

Writer: shm_open(O_CREAT|O_EXCL) a new empty ``v<N>``, fchmod 0640 (+ fchown to a group),
posix_fallocate it to size (allocate first: every shared-memory page it writes, the index's
included, is reserved before it is touched, so a full /dev/shm is an error, never a SIGBUS; on
ENOSPC the retained older versions are dropped and the allocation tried once more), write header
and payload, munmap, then store N into index word 2; nothing after that store raises. It never
reuses a version number (it continues from the index and from the leftover ``v*`` names its own
uid owns), skips every name someone else took in one step, unlinks versions older than N-2 after
each publish, and at start unlinks its own ``v*`` other than the current one and the two before
it (orphans of a crashed writer, including a half-written newest one). Names it does not own, and
names that are no canonical number in 1..MAX_VERSION, are neither counted nor unlinked.

Reader: opens read-only and lazily; refuses a segment that group or others can write, that no
trusted user owns (its own uid, root, flagd's user: :func:`trusted_owners`), or (for data) whose
owner differs from the index's; touches no page it has not seen backed (st_blocks: an index that
is not reads as "nothing published"); maps ACCESS_READ and closes its fd at once; validates magic,
format, version, length and crc32 once per version; decodes; unmaps. A name that vanished between
the index read and the open (the writer unlinked it) is retried a bounded number of times, after
which the previous snapshot stays.

Not thread safe per object for writers; a reader may be shared by threads (state is swapped as
one reference). Fork-safe: mappings are MAP_SHARED. On Python < 3.13 CPython's mmap keeps a
duplicate of the index fd (read-only, close-on-exec) as long as the index is mapped; 3.13+ maps
with ``trackfd=False`` and keeps none. Data segments keep no fd once decoded.
"""

import errno
import logging
import mmap
import os
import re
import struct
import sys
import time
import zlib
from hashlib import blake2b
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple, Union

import msgpack
import posix_ipc

__all__ = [
    "DEFAULT_FLAGD_USER",
    "INDEX_SIZE",
    "HEADER",
    "IndexState",
    "MAX_VERSION",
    "SHM_DIR",
    "SegmentCorruptError",
    "SegmentPermissionError",
    "Snapshot",
    "SnapshotError",
    "SnapshotReader",
    "SnapshotWriter",
    "WriterConflictError",
    "data_name",
    "index_name",
    "ForeignIndexError",
    "key_hash",
    "list_versions",
    "parse_version",
    "publisher_alive",
    "remove_all",
    "trusted_owners",
]

logger = logging.getLogger(__name__)

# --- layout constants ---------------------------------------------------------------------------

INDEX_MAGIC = int.from_bytes(b"AMPFIDX1", "little")
INDEX_LAYOUT = 1
INDEX_SIZE = 4096
INDEX_WORDS = INDEX_SIZE // 8
# Word positions in the index.
W_MAGIC, W_LAYOUT, W_VERSION, W_PID, W_START, W_PUBLISHED, W_FETCH, W_HEARTBEAT, W_POLL = range(9)
#: Stored in the version word by :func:`remove_all` before unlinking, so mapped readers re-open.
RETIRED = 2 ** 64 - 1
#: The highest version number a writer uses, or accepts from a ``v<N>`` name; far below RETIRED.
MAX_VERSION = 2 ** 63 - 1
#: A version in a name: decimal, no sign, no leading zero, at most 19 digits (MAX_VERSION has 19).
_VERSION_TEXT = re.compile(r"[1-9][0-9]{0,18}\Z")

DATA_MAGIC = b"AMPFSNP1"
DATA_FORMAT = 1
ENCODING_MSGPACK = 1
#: magic, format, encoding, version, payload length, created_ns, crc32, reserved -> 64 bytes.
HEADER = struct.Struct("<8sIIQQQI20x")
assert HEADER.size == 64

#: Versions kept besides the current one, for readers that read the index just before a publish.
KEEP_PREVIOUS = 2
#: Attempts of a reader to open the version the index names before it keeps its previous snapshot.
OPEN_ATTEMPTS = 3
#: Where Linux shows POSIX shared memory as files (the one definition; flagd's lock lives here too).
SHM_DIR = "/dev/shm"
SEGMENT_MODE = 0o640
#: The system user flagd runs as under systemd (systemd/sysusers.d): readers trust it when it exists.
DEFAULT_FLAGD_USER = "amplitude-flagd"
#: Whether st_blocks tells backed pages (tmpfs does); elsewhere the check is skipped.
_CHECK_BACKED = sys.platform.startswith("linux")

OwnerSpec = Optional[Union[int, str]]


# --- errors -------------------------------------------------------------------------------------


class SnapshotError(Exception):
    """Base of every error this module raises."""


class SegmentPermissionError(SnapshotError):
    """A segment is writable by someone other than its owner, or owned by the wrong user."""


class SegmentCorruptError(SnapshotError):
    """A segment's header or checksum does not match what the index promised."""


class WriterConflictError(SnapshotError):
    """Another live process publishes for this key, or the index belongs to another user."""


class ForeignIndexError(WriterConflictError):
    """The index exists and belongs to another user: squatted, or another user's flagd."""


# --- names --------------------------------------------------------------------------------------


def key_hash(deployment_key: str) -> str:
    """Short stable hex digest of the deployment key used in segment names (the key stays secret)."""
    return blake2b(deployment_key.encode("utf-8"), digest_size=8, person=b"amp-flagd").hexdigest()


def index_name(prefix: str, deployment_key: str) -> str:
    """Name of the index segment for this key (with the leading slash)."""
    return "/%s.%s.idx" % (prefix, key_hash(deployment_key))


def data_name(prefix: str, deployment_key: str, version: int) -> str:
    """Name of the data segment holding ``version`` for this key."""
    return "/%s.%s.v%d" % (prefix, key_hash(deployment_key), version)


def parse_version(text: str) -> Optional[int]:
    """The version a ``v<N>`` name holds, or None when it is not one a writer could have made
    (not canonical decimal, 0, or above :data:`MAX_VERSION`)."""
    if not _VERSION_TEXT.match(text):
        return None
    version = int(text)
    return version if version <= MAX_VERSION else None


def list_versions(prefix: str, deployment_key: str, owner_uid: Optional[int] = None) -> List[int]:
    """Versions whose data segments exist for this key, optionally only those ``owner_uid`` owns
    (needs /dev/shm; empty where there is none). Names that are no valid version are left out."""
    stem = "%s.%s.v" % (prefix, key_hash(deployment_key))
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


def remove_all(prefix: str, deployment_key: str) -> None:
    """Unlink this key's index and every data segment (``flagd`` cleanup, tests).

    Mapped readers are told first (version word set to RETIRED) so they re-open by name. Only
    segments this process's uid owns are touched: names other users planted stay.
    """
    name = index_name(prefix, deployment_key)
    uid = os.geteuid()
    try:
        shm = posix_ipc.SharedMemory(name, flags=0)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        shm = None
    if shm is not None:
        stat = None
        try:
            stat = os.fstat(shm.fd)
            # A reader never maps an index that is not backed, so only a backed one needs RETIRED
            # (and storing into a page that is not there would be a SIGBUS on a full /dev/shm).
            if stat.st_uid == uid and stat.st_size == INDEX_SIZE and _backed(stat):
                with mmap.mmap(shm.fd, INDEX_SIZE) as mm:
                    words = memoryview(mm).cast("Q")
                    words[W_VERSION] = RETIRED  # aligned 8-byte store; readers see it on their next check
                    words.release()
        except (OSError, ValueError):
            pass
        finally:
            shm.close_fd()
        if stat is not None and stat.st_uid == uid:
            _unlink(name)
    for version in list_versions(prefix, deployment_key, owner_uid=uid):
        _unlink(data_name(prefix, deployment_key, version))


def _unlink(name: str) -> bool:
    """Unlink ``name``; False (and a log line when it was not a race) if it could not be."""
    try:
        posix_ipc.unlink_shared_memory(name)
        return True
    except posix_ipc.ExistentialError:
        return False
    except (posix_ipc.Error, OSError) as error:
        logger.warning("could not unlink %s: %s", name, error)
        return False


def _backed(stat: os.stat_result) -> bool:
    """Whether every page of the segment is allocated: touching a page that is not (a hole) makes
    tmpfs allocate it, and a full /dev/shm answers that with SIGBUS. Pages are whole, so with any
    hole st_blocks * 512 falls below st_size."""
    return not _CHECK_BACKED or stat.st_blocks * 512 >= stat.st_size


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid


# --- values -------------------------------------------------------------------------------------


class Snapshot:
    """One published version: ``version``, ``created_ns`` (wall clock) and the decoded ``document``."""

    __slots__ = ("version", "created_ns", "document", "size")

    def __init__(self, version: int, created_ns: int, document: Dict[str, Any], size: int = 0):
        self.version = version
        self.created_ns = created_ns
        self.document = document
        self.size = size

    def __repr__(self) -> str:
        return "Snapshot(version=%d, created_ns=%d, size=%d)" % (self.version, self.created_ns, self.size)


class IndexState:
    """What the index says. ``version`` 0 means nothing is published (or no index exists)."""

    __slots__ = ("version", "publisher_pid", "publisher_start_ns", "published_at_ns", "last_fetch_ns",
                 "heartbeat_ns", "poll_interval_ms")

    def __init__(self, version: int = 0, publisher_pid: int = 0, publisher_start_ns: int = 0,
                 published_at_ns: int = 0, last_fetch_ns: int = 0, heartbeat_ns: int = 0,
                 poll_interval_ms: int = 0):
        self.version = version
        self.publisher_pid = publisher_pid
        self.publisher_start_ns = publisher_start_ns
        self.published_at_ns = published_at_ns
        self.last_fetch_ns = last_fetch_ns
        self.heartbeat_ns = heartbeat_ns
        self.poll_interval_ms = poll_interval_ms

    def __repr__(self) -> str:
        return "IndexState(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in self.__slots__)


# --- process identity ---------------------------------------------------------------------------


def _process_start_ns(pid: int) -> int:
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


def _resolve_uid(owner: OwnerSpec) -> Optional[int]:
    if owner is None or isinstance(owner, int):
        return owner
    import pwd

    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise SegmentPermissionError("flagd owner %r is not a known user" % owner) from None


def _resolve_gid(group: OwnerSpec) -> Optional[int]:
    if group is None or isinstance(group, int):
        return group
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SnapshotError("group %r does not exist" % group) from None


def trusted_owners(owner: OwnerSpec = None) -> FrozenSet[int]:
    """The uids a reader accepts as a segment's owner: its own, root's, and flagd's.

    flagd's user is ``owner`` when given (uid or name), else :data:`DEFAULT_FLAGD_USER` when that
    user exists on this host. Anyone else may have planted the segment (/dev/shm is writable by
    every local user), so it is refused.

    :raises SegmentPermissionError: ``owner`` names a user this host does not know.
    """
    uids = {os.geteuid(), 0}
    if owner is None:
        import pwd

        try:
            uids.add(pwd.getpwnam(DEFAULT_FLAGD_USER).pw_uid)
        except KeyError:
            pass
    else:
        uids.add(_resolve_uid(owner))
    return frozenset(uids)


def _check_owner(name: str, stat: os.stat_result, trusted: FrozenSet[int]) -> None:
    """Refuse a segment others could have written, or that no trusted user owns."""
    if stat.st_mode & 0o022:
        raise SegmentPermissionError(
            "%s has mode %o: group or others can write it, refusing to read it" % (name, stat.st_mode & 0o777))
    if stat.st_uid not in trusted:
        raise SegmentPermissionError(
            "%s is owned by %s, which this process does not trust: a flagd segment must belong to this "
            "process's uid, root or the flagd user (%s). If flagd runs as that user, say so: "
            "LocalEvaluationConfig(flagd_owner=...) in the SDK, --flagd-owner (FLAGD_FLAGD_OWNER) for "
            "`amplitude-flagd status` and `dump`. Otherwise another local user created it: remove it "
            "(as root: rm %s%s.*) and restart flagd."
            % (name, _owner_name(stat.st_uid), ", ".join(_owner_name(uid) for uid in sorted(trusted)),
               SHM_DIR, name.rsplit(".", 1)[0]))


# --- writer -------------------------------------------------------------------------------------


class SnapshotWriter:
    """flagd's side. One per (prefix, key) and process: creates the index (0640, optional group),
    publishes immutable per-version data segments, refreshes the heartbeat, removes old versions,
    and at start removes the orphans of a crashed predecessor.

    :param group: gid or group name given to every segment (readers are its members).
    :param poll_interval_ms: flagd's upstream poll interval, stored in the index so readers know
        when a heartbeat is overdue (they warn at three intervals).
    :raises WriterConflictError: another live process publishes for this key;
        :class:`ForeignIndexError` when the index exists and belongs to another user.
    :raises SnapshotError: no room in shared memory for the index.
    """

    def __init__(self, prefix: str, deployment_key: str, group: OwnerSpec = None, *,
                 poll_interval_ms: int = 0, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._prefix = prefix
        self._key = deployment_key
        self._gid = _resolve_gid(group)
        self._clock_ns = clock_ns
        self._pid = os.getpid()
        self._uid = os.geteuid()
        self.index_name = index_name(prefix, deployment_key)
        self._mm, created = self._open_index()
        self._words = memoryview(self._mm).cast("Q")
        words = self._words
        owner_pid = words[W_PID]
        if not created and owner_pid and owner_pid != self._pid:
            alive = publisher_alive(IndexState(publisher_pid=owner_pid, publisher_start_ns=words[W_START]))
            if alive:
                self.close()
                raise WriterConflictError("process %d already publishes to %s" % (owner_pid, self.index_name))
        current = words[W_VERSION]
        if current > MAX_VERSION:
            # RETIRED: remove_all() was interrupted before unlinking this index. Anything else that
            # high came from a planted name an older flagd trusted. Either way: start over.
            current = 0
            words[W_VERSION] = 0
        # Only names this uid owns: another user's names are neither counted nor unlinked.
        leftovers = list_versions(prefix, deployment_key, owner_uid=self._uid)
        # Never reuse a number: a reader may still hold an old mapping under it (or an orphan has it).
        self._last = max([current] + leftovers)
        self._kept: Set[int] = set()
        for version in leftovers:
            if current and current - KEEP_PREVIOUS <= version <= current:
                self._kept.add(version)
            else:
                _unlink(data_name(prefix, deployment_key, version))
        words[W_POLL] = max(int(poll_interval_ms), 0)
        words[W_START] = _process_start_ns(self._pid) or clock_ns()
        words[W_PID] = self._pid
        words[W_HEARTBEAT] = clock_ns()
        if created:
            words[W_LAYOUT] = INDEX_LAYOUT
            # Magic last: a reader that maps a brand-new index sees either nothing or a whole header
            # (aligned 8-byte stores, in program order on x86-64 TSO; on weaker CPUs a reader at
            # worst reports "not published yet" until its next look).
            words[W_MAGIC] = INDEX_MAGIC

    def _open_index(self) -> Tuple[mmap.mmap, bool]:
        created = True
        try:
            # No size here: the pages are allocated first (below), then the size follows from that.
            shm = posix_ipc.SharedMemory(self.index_name, posix_ipc.O_CREX, mode=SEGMENT_MODE)
        except posix_ipc.ExistentialError:
            created = False
            try:
                shm = posix_ipc.SharedMemory(self.index_name, flags=0)
            except posix_ipc.PermissionsError:
                try:
                    owner = os.stat(SHM_DIR + self.index_name).st_uid
                except OSError:
                    raise WriterConflictError("%s exists and this process (uid %d) may not write it"
                                              % (self.index_name, self._uid)) from None
                raise self._foreign(owner) from None
        try:
            if created:
                self._restrict(shm.fd)
            else:
                stat = os.fstat(shm.fd)
                if stat.st_uid != self._uid:
                    raise self._foreign(stat.st_uid)
                if stat.st_size not in (0, INDEX_SIZE):
                    raise SegmentCorruptError("%s is %d bytes, expected %d" % (self.index_name, stat.st_size, INDEX_SIZE))
                self._restrict(shm.fd)  # a restart may bring a new --group
            try:
                # Allocate first: tmpfs allocates on first touch, and a store into a page a full
                # /dev/shm cannot give is a SIGBUS. A creator that died between shm_open and here
                # left size 0 (or, before this rule, an unbacked page): this finishes its job.
                os.posix_fallocate(shm.fd, 0, INDEX_SIZE)
            except OSError as error:
                if created:
                    _unlink(self.index_name)
                raise SnapshotError("no room for the %d-byte index %s in shared memory (%s): free some of %s"
                                    % (INDEX_SIZE, self.index_name, os.strerror(error.errno or errno.ENOSPC),
                                       SHM_DIR)) from None
            mm = mmap.mmap(shm.fd, INDEX_SIZE)
        finally:
            shm.close_fd()
        if not created:
            words = memoryview(mm).cast("Q")
            magic, layout = words[W_MAGIC], words[W_LAYOUT]
            words.release()
            if magic not in (0, INDEX_MAGIC) or layout not in (0, INDEX_LAYOUT):
                mm.close()
                raise SegmentCorruptError("%s is not a layout-%d flagd index" % (self.index_name, INDEX_LAYOUT))
            if magic == 0:  # a creator died before finishing the header: finish it
                with memoryview(mm).cast("Q") as words:
                    words[W_LAYOUT] = INDEX_LAYOUT
                    words[W_MAGIC] = INDEX_MAGIC
        return mm, created

    def _foreign(self, uid: int) -> "ForeignIndexError":
        return ForeignIndexError(
            "%s belongs to %s, not to this process's uid %d. Either that user's flagd publishes this key "
            "(run flagd as that user, or stop it), or another local user created the name to feed workers "
            "forged flags: workers refuse it either way. Remove it and any segments beside it as root "
            "(rm %s%s.*), then start flagd again."
            % (self.index_name, _owner_name(uid), self._uid, SHM_DIR, self.index_name.rsplit(".", 1)[0]))

    def _restrict(self, fd: int) -> None:
        os.fchmod(fd, SEGMENT_MODE)  # posix_ipc's mode is filtered by the umask; set it exactly
        if self._gid is not None:
            os.fchown(fd, -1, self._gid)

    @property
    def version(self) -> int:
        """The last version this writer (or its predecessor) published; 0 if none."""
        version = self._words[W_VERSION]
        return 0 if version == RETIRED else version

    def publish(self, document: Dict[str, Any]) -> int:
        """Write ``document`` as a new version (msgpack) and make it current; returns the version.

        Nothing raises once the version is stored: cleanup failures are logged.

        :raises SnapshotError: no room in shared memory even after dropping the retained older
            versions (the current one stays), or the writer is closed.
        :raises WriterConflictError: every free version name was squatted while we looked.
        """
        if self._words is None:
            raise SnapshotError("publish() on a closed SnapshotWriter")
        payload = msgpack.packb(document, use_bin_type=True)
        size = HEADER.size + len(payload)
        now = self._clock_ns()
        shm, version = self._create_data()
        name = shm.name
        try:
            self._restrict(shm.fd)
            self._allocate(shm.fd, name, size)
            with mmap.mmap(shm.fd, size) as mm:
                mm[HEADER.size:] = payload
                HEADER.pack_into(mm, 0, DATA_MAGIC, DATA_FORMAT, ENCODING_MSGPACK, version, len(payload),
                                 now, zlib.crc32(payload))
            # munmap above is a syscall: the kernel orders every byte of the segment before the index
            # store below, on any CPU. Readers only ever open the version the index names.
        finally:
            shm.close_fd()
        words = self._words
        fetched = document.get("fetched_at_ns")
        if isinstance(fetched, int) and 0 < fetched < 2 ** 64:
            words[W_FETCH] = fetched
        interval = document.get("poll_interval_ms")
        if isinstance(interval, int) and 0 < interval < 2 ** 64:
            words[W_POLL] = interval
        words[W_PUBLISHED] = now  # before the version: a reader may pair the new time with the old version, never worse
        words[W_HEARTBEAT] = now
        # THE PUBLISH POINT. One aligned 8-byte store (memoryview 'Q' item assignment is a single
        # 8-byte memcpy, a plain mov on x86-64), so a reader sees the old or the new version, whole.
        words[W_VERSION] = version
        self._kept.add(version)
        try:
            self._drop_old(version)
        except Exception:  # published is published: a failed cleanup must not read as a failed publish
            logger.warning("could not drop versions older than v%d", version - KEEP_PREVIOUS, exc_info=True)
        return version

    def _create_data(self) -> Tuple[posix_ipc.SharedMemory, int]:
        """shm_open(O_CREAT|O_EXCL) the next free version name, empty (sized by :meth:`_allocate`).

        A name that exists already (squatted, or left by someone else) is never overwritten; the
        next try skips every taken name at once, so planted future names cost one directory listing.
        """
        version = self._last + 1
        for _ in range(OPEN_ATTEMPTS):
            if version > MAX_VERSION:
                raise SnapshotError("version numbers are exhausted for %s" % self.index_name)
            try:
                shm = posix_ipc.SharedMemory(data_name(self._prefix, self._key, version), posix_ipc.O_CREX,
                                             mode=SEGMENT_MODE)
            except posix_ipc.ExistentialError:
                taken = set(list_versions(self._prefix, self._key))  # whoever owns them
                version += 1
                while version in taken:
                    version += 1
                continue
            self._last = version  # never reused, even if this publish fails below
            return shm, version
        self._last = version - 1
        raise WriterConflictError("could not create a data segment after %d attempts (up to v%d): someone keeps "
                                  "creating the next version names" % (OPEN_ATTEMPTS, self._last))

    def _allocate(self, fd: int, name: str, size: int) -> None:
        """Reserve every page of a new segment before it is touched (tmpfs allocates on first touch;
        a full /dev/shm would otherwise kill this process with SIGBUS in the middle of the copy).

        On ENOSPC the retained older versions are dropped and the allocation tried once more: the
        peak is the current version, the two retained ones and the new one, four copies.
        """
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as error:
            failure = error
        if failure.errno == errno.ENOSPC and self._drop_retained():
            try:
                os.posix_fallocate(fd, 0, size)
                return
            except OSError as error:
                failure = error
        _unlink(name)
        raise SnapshotError("no room for a %d-byte snapshot in shared memory (%s); %s stays current"
                            % (size, os.strerror(failure.errno or errno.ENOSPC), "v%d" % self.version))

    def _drop_retained(self) -> bool:
        """Unlink every kept version but the current one, to make room; True if any was dropped."""
        current = self.version
        dropped = False
        for version in sorted(v for v in self._kept if v != current):
            self._kept.discard(version)
            dropped = _unlink(data_name(self._prefix, self._key, version)) or dropped
        if dropped:
            logger.warning("shared memory is full: dropped the versions retained before v%d to publish the next",
                           current)
        return dropped

    def _drop_old(self, current: int) -> None:
        for version in [v for v in self._kept if v < current - KEEP_PREVIOUS]:
            # A reader that already mapped it keeps its pages; one that read the index before this
            # publish and opens now gets ExistentialError and re-reads the index.
            _unlink(data_name(self._prefix, self._key, version))
            self._kept.discard(version)

    def heartbeat(self, fetched_at_ns: Optional[int] = None) -> None:
        """Refresh the heartbeat (and the last successful fetch time when given)."""
        if self._words is None:
            raise SnapshotError("heartbeat() on a closed SnapshotWriter")
        if fetched_at_ns:
            self._words[W_FETCH] = fetched_at_ns  # independent 8-byte stores; readers only report them
        self._words[W_HEARTBEAT] = self._clock_ns()

    def close(self) -> None:
        """Unmap; leaves every segment in place so workers keep serving. Idempotent."""
        words, self._words = getattr(self, "_words", None), None
        if words is not None:
            if words[W_PID] == self._pid:
                words[W_PID] = 0  # a clean stop: the next writer need not wait for this pid to exit
            words.release()
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is not None:
            mm.close()

    def __enter__(self) -> "SnapshotWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# --- reader -------------------------------------------------------------------------------------

#: Stand-in for the index words before the index is mapped: every word reads 0 ("nothing yet").
_NOT_MAPPED: Tuple[int, ...] = (0,) * INDEX_WORDS
#: Python 3.13+ can map without keeping a duplicate of the fd; before that CPython's mmap keeps one
#: (close-on-exec, read-only) for as long as the mapping lives: one per process for the index.
_NO_FD_KEPT: Dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


class SnapshotReader:
    """The SDK's side: maps read-only, never creates, writes or unlinks anything.

    ``current_version()`` is the hot-path 8-byte load (``words[W_VERSION]`` on the kept
    memoryview, which callers may also hold themselves as :attr:`words`). ``load()`` validates and
    decodes the current version, once per version. Opens lazily, in the process that first asks.

    :param owner: uid or user name flagd runs as. Segments are trusted only when this process's
        uid, root or that user owns them (by default :data:`DEFAULT_FLAGD_USER`, when it exists).
        Whoever owns them, a segment that group or others can write is refused, and data segments
        must have the index's owner.
    """

    def __init__(self, prefix: str, deployment_key: str, owner: OwnerSpec = None, *,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._prefix = prefix
        self._stem = "/%s.%s.v" % (prefix, key_hash(deployment_key))
        self.index_name = index_name(prefix, deployment_key)
        self._owner = owner
        self._trusted: Optional[FrozenSet[int]] = None
        self._index_uid: Optional[int] = None
        self._clock_ns = clock_ns
        #: The index as u64 words; a tuple of zeros until the index is mapped.
        self.words: Any = _NOT_MAPPED
        self._last: Optional[Snapshot] = None
        #: Opens retried because the named version had just been unlinked (for tests and status).
        self.retries = 0

    # -- index

    @property
    def attached(self) -> bool:
        """Whether the index is mapped."""
        return self.words is not _NOT_MAPPED

    def attach(self) -> bool:
        """Map the index if it exists now; False if it does not (flagd never ran for this key) or is
        not fully there yet (being created, or not backed by memory: nothing is published then).

        :raises SegmentPermissionError: the index is writable by others or no trusted user owns it.
        :raises SegmentCorruptError: the segment is not a flagd index.
        """
        if self.words is not _NOT_MAPPED and self.words[W_VERSION] != RETIRED:
            return True
        self.words = _NOT_MAPPED
        self._last = None
        try:
            mm, stat = self._map(self.index_name)
        except posix_ipc.ExistentialError:
            return False
        if mm is None:
            return False  # created but not allocated yet, or not backed: not published
        if stat.st_size != INDEX_SIZE:
            raise SegmentCorruptError("%s is %d bytes, expected %d" % (self.index_name, stat.st_size, INDEX_SIZE))
        words = memoryview(mm).cast("Q")
        if words[W_MAGIC] != INDEX_MAGIC:
            return False  # being created right now, or not ours: look again later
        if words[W_LAYOUT] != INDEX_LAYOUT:
            raise SegmentCorruptError("%s has index layout %d, this SDK reads %d"
                                      % (self.index_name, words[W_LAYOUT], INDEX_LAYOUT))
        self._index_uid = stat.st_uid
        self.words = words
        return True

    def _map(self, name: str) -> Tuple[Optional[mmap.mmap], os.stat_result]:
        """Open ``name`` read-only, check who may have written it and that every page is backed,
        map it ACCESS_READ, close the fd.

        The mapping is None for an empty segment (mmap cannot map 0 bytes) and for one whose pages
        are not all allocated (reading a hole on a full /dev/shm is a SIGBUS).
        """
        if self._trusted is None:
            self._trusted = trusted_owners(self._owner)
        try:
            shm = posix_ipc.SharedMemory(name, flags=0, read_only=True)
        except posix_ipc.PermissionsError:
            raise SegmentPermissionError(
                "%s exists but this process (uid %d) may not read it: add the user to the segments' group "
                "(flagd --group)" % (name, os.geteuid())) from None
        try:
            stat = os.fstat(shm.fd)
            _check_owner(name, stat, self._trusted)
            if stat.st_size == 0 or not _backed(stat):
                return None, stat
            # PROT_READ + O_RDONLY fd: this process cannot write the segment at the API or MMU level.
            mm = mmap.mmap(shm.fd, stat.st_size, access=mmap.ACCESS_READ, **_NO_FD_KEPT)
        finally:
            shm.close_fd()  # the mapping survives (CPython < 3.13's mmap keeps its own duplicate fd)
        return mm, stat

    def current_version(self) -> int:
        """The version the index names now (0: nothing yet); maps the index on first use."""
        version = self.words[W_VERSION]
        if version == 0 and self.words is _NOT_MAPPED:
            self.attach()
            version = self.words[W_VERSION]
        return 0 if version == RETIRED else version

    def state(self) -> IndexState:
        """The index's words (read one by one: fine for reports, not a consistent snapshot)."""
        if self.words is _NOT_MAPPED or self.words[W_VERSION] == RETIRED:
            self.attach()
        words = self.words
        version = words[W_VERSION]
        return IndexState(0 if version == RETIRED else version, words[W_PID], words[W_START],
                          words[W_PUBLISHED], words[W_FETCH], words[W_HEARTBEAT], words[W_POLL])

    # -- data

    def load(self) -> Optional[Snapshot]:
        """The current snapshot, validated and decoded (cached per version); None if none is published.

        If the named version keeps vanishing (a writer publishing faster than this reader opens),
        the previous snapshot is returned after :data:`OPEN_ATTEMPTS` tries.

        :raises SegmentCorruptError: the segment the index names fails validation.
        :raises SegmentPermissionError: a segment has an unsafe mode or the wrong owner.
        """
        for _ in range(OPEN_ATTEMPTS):
            version = self.current_version()
            if version == 0:
                # RETIRED reads as 0 too: re-map the index by name, maybe a new one exists.
                if self.words is not _NOT_MAPPED and self.words[W_VERSION] == RETIRED and self.attach():
                    continue
                return self._last
            last = self._last
            if last is not None and last.version == version:
                return last
            try:
                snapshot = self.read(version)
            except posix_ipc.ExistentialError:
                # Unlinked between our index read and the open: the index has moved on; read it again.
                self.retries += 1
                continue
            self._last = snapshot
            return snapshot
        return self._last

    def read(self, version: int) -> Snapshot:
        """Open, validate and decode ``version`` now, bypassing the cache (``flagd dump``, tests).

        :raises posix_ipc.ExistentialError: that version's segment does not exist (any more).
        :raises SegmentCorruptError: it fails validation.
        :raises SegmentPermissionError: it has an unsafe mode or the wrong owner.
        """
        name = self._stem + str(version)
        mm, stat = self._map(name)
        if mm is None:
            if stat.st_size:
                raise SegmentCorruptError("%s is not backed by memory (is %s full?)" % (name, SHM_DIR))
            raise SegmentCorruptError("%s is empty" % name)
        if self._index_uid is not None and stat.st_uid != self._index_uid:
            raise SegmentPermissionError("%s is owned by uid %d, the index by uid %d"
                                         % (name, stat.st_uid, self._index_uid))
        view = memoryview(mm)
        try:
            return self._decode(name, version, view, stat.st_size)
        finally:
            view.release()
            mm.close()  # decoded objects own their memory; nothing pins the unlinked pages afterwards

    def _decode(self, name: str, version: int, view: memoryview, size: int) -> Snapshot:
        if size < HEADER.size:
            raise SegmentCorruptError("%s is %d bytes, shorter than its header" % (name, size))
        magic, fmt, encoding, stored_version, length, created_ns, crc = HEADER.unpack_from(view, 0)
        if magic != DATA_MAGIC:
            raise SegmentCorruptError("%s has magic %r, expected %r" % (name, magic, DATA_MAGIC))
        if fmt != DATA_FORMAT or encoding != ENCODING_MSGPACK:
            raise SegmentCorruptError("%s has format %d/%d, this SDK reads %d/%d"
                                      % (name, fmt, encoding, DATA_FORMAT, ENCODING_MSGPACK))
        if stored_version != version:
            raise SegmentCorruptError("%s says version %d" % (name, stored_version))
        if length != size - HEADER.size:
            raise SegmentCorruptError("%s has a %d-byte payload in a %d-byte segment" % (name, length, size))
        payload = view[HEADER.size:]
        try:
            if zlib.crc32(payload) != crc:
                raise SegmentCorruptError("%s fails its checksum" % name)
            try:
                document = msgpack.unpackb(payload, raw=False)  # zero-copy: decodes straight from the mapping
            except (ValueError, msgpack.UnpackException) as error:
                raise SegmentCorruptError("%s does not decode: %s" % (name, error)) from None
        finally:
            payload.release()
        if not isinstance(document, dict):
            raise SegmentCorruptError("%s holds a %s, expected a map" % (name, type(document).__name__))
        return Snapshot(version, created_ns, document, int(length))
