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
          9..15 flagd's health: last error, when, what fails now (snapshot/health.py);
                  bytes 1024..2047 hold the last error's text
          16.. reserved (0)

Data segment ``v<N>``, 64-byte header then the msgpack payload, sized exactly::

     0               8       12      16              24              32              40      44      64
     +---------------+-------+-------+---------------+---------------+---------------+-------+-------+----
     | magic         |format |encod. | version N     | payload length| created_ns    | crc32 | (0)   | msgpack payload ...
     | b"AMPFSNP1"   |u32 = 1|u32 = 1| u64           | u64           | u64           | u32   | 20 B  |
     +---------------+-------+-------+---------------+---------------+---------------+-------+-------+----

The payload is one msgpack map: ``{"flags": [flag configs in storage order], "source": str,
"fetched_at_ns": int, "flag_count": int, ...}``.

Writer: shm_open(O_CREAT|O_EXCL) a new ``v<N>`` sized to fit, fchmod 0640 (+ fchown to a group),
write header and payload, munmap, then store N into index word 2. It never reuses a version number
(it continues from the index and from any leftover ``v*`` at start), unlinks versions older than
N-2 after each publish, and at start unlinks every ``v*`` of its key other than the current one
and the two before it (orphans of a crashed writer, including a half-written newest one).

Reader: opens read-only and lazily; refuses a segment that group or others can write, whose owner
differs from the configured one, or (for data) whose owner differs from the index's; maps
ACCESS_READ and closes the fd at once; validates magic, format, version, length and crc32 once
per version; decodes; unmaps. A name that vanished between the index read and the open (the
writer unlinked it) is retried a bounded number of times, after which the previous snapshot stays.

Not thread safe per object for writers; a reader may be shared by threads (state is swapped as
one reference). Fork-safe: mappings are MAP_SHARED and no fd is kept open.
"""

import mmap
import os
import struct
import time
import zlib
from hashlib import blake2b
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

import msgpack
import posix_ipc

__all__ = [
    "INDEX_SIZE",
    "HEADER",
    "IndexState",
    "SegmentCorruptError",
    "SegmentPermissionError",
    "Snapshot",
    "SnapshotError",
    "SnapshotReader",
    "SnapshotWriter",
    "WriterConflictError",
    "data_name",
    "index_name",
    "key_hash",
    "list_published",
    "list_versions",
    "publisher_alive",
    "remove_all",
    "remove_by_key_hash",
]

# --- layout constants ---------------------------------------------------------------------------

INDEX_MAGIC = int.from_bytes(b"AMPFIDX1", "little")
INDEX_LAYOUT = 1
INDEX_SIZE = 4096
INDEX_WORDS = INDEX_SIZE // 8
# Word positions in the index.
W_MAGIC, W_LAYOUT, W_VERSION, W_PID, W_START, W_PUBLISHED, W_FETCH, W_HEARTBEAT, W_POLL = range(9)
#: Stored in the version word by :func:`remove_all` before unlinking, so mapped readers re-open.
RETIRED = 2 ** 64 - 1

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
SHM_DIR = "/dev/shm"
SEGMENT_MODE = 0o640

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


def list_versions(prefix: str, deployment_key: str) -> List[int]:
    """Versions whose data segments exist for this key (needs /dev/shm; empty where there is none)."""
    stem = "%s.%s.v" % (prefix, key_hash(deployment_key))
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    versions = []
    for name in names:
        if name.startswith(stem) and name[len(stem):].isdigit():
            versions.append(int(name[len(stem):]))
    return sorted(versions)


def remove_all(prefix: str, deployment_key: str) -> None:
    """Unlink this key's index and every data segment (``flagd`` cleanup, tests).

    Mapped readers are told first (version word set to RETIRED) so they re-open by name.
    """
    name = index_name(prefix, deployment_key)
    try:
        shm = posix_ipc.SharedMemory(name, flags=0)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        shm = None
    if shm is not None:
        try:
            with mmap.mmap(shm.fd, INDEX_SIZE) as mm:
                words = memoryview(mm).cast("Q")
                words[W_VERSION] = RETIRED  # aligned 8-byte store; readers see it on their next check
                words.release()
        except (OSError, ValueError):
            pass
        finally:
            shm.close_fd()
        _unlink(name)
    for version in list_versions(prefix, deployment_key):
        _unlink(data_name(prefix, deployment_key, version))


def list_published(prefix: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(prefix, key hash)`` of every index segment on this host (of ``prefix`` only, when given).

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


def remove_by_key_hash(prefix: str, hashed: str) -> List[str]:
    """Like :func:`remove_all` for the key whose :func:`key_hash` is ``hashed``; returns the names unlinked."""
    removed = []
    name = "/%s.%s.idx" % (prefix, hashed)
    try:
        shm = posix_ipc.SharedMemory(name, flags=0)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        shm = None
    if shm is not None:
        try:
            with mmap.mmap(shm.fd, INDEX_SIZE) as mm:
                words = memoryview(mm).cast("Q")
                words[W_VERSION] = RETIRED  # mapped readers re-open by name, find nothing, keep serving
                words.release()
        except (OSError, ValueError):
            pass
        finally:
            shm.close_fd()
        if _unlink(name):
            removed.append(name)
    stem = "%s.%s.v" % (prefix, hashed)
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        names = []
    for entry in sorted(names):
        if entry.startswith(stem) and entry[len(stem):].isdigit() and _unlink("/" + entry):
            removed.append("/" + entry)
    return removed


def _unlink(name: str) -> bool:
    try:
        posix_ipc.unlink_shared_memory(name)
        return True
    except posix_ipc.ExistentialError:
        return False


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
    """Start time of ``pid`` on the wall clock from /proc (0 where there is none), like psutil's create_time."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            stat = handle.read()
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(b")") + 2:].split()
        ticks = int(fields[19])  # field 22 of proc(5), starttime in clock ticks since boot
        with open("/proc/stat", "rb") as handle:
            for line in handle:
                if line.startswith(b"btime "):
                    boot = int(line.split()[1])
                    break
            else:
                return 0
        return boot * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


def _process_state(pid: int) -> str:
    """The one-letter state of ``pid`` from /proc ("" where there is none)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2:].split()[0].decode()
    except (OSError, ValueError, IndexError):
        return ""


def publisher_alive(state: IndexState) -> Optional[bool]:
    """Whether the process that published ``state`` still runs (None: nothing published).

    Costs a syscall and a /proc read; for status reports, never for the hot path. The start time
    tells a reused pid apart; across pid namespaces the answer is a best guess.
    """
    pid = state.publisher_pid
    if not pid:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    if _process_state(pid) in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    if state.publisher_start_ns:
        started = _process_start_ns(pid)
        # btime in /proc/stat can drift by a second between reads; a reused pid differs by far more.
        if started and abs(started - state.publisher_start_ns) > 2_000_000_000:
            return False
    return True


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


def _check_owner(name: str, stat: os.stat_result, uid: Optional[int]) -> None:
    """Refuse a segment others could have written, or that the expected user does not own."""
    if stat.st_mode & 0o022:
        raise SegmentPermissionError(
            "%s has mode %o: group or others can write it, refusing to read it" % (name, stat.st_mode & 0o777))
    if uid is not None and stat.st_uid != uid:
        raise SegmentPermissionError("%s is owned by uid %d, expected uid %d" % (name, stat.st_uid, uid))


# --- writer -------------------------------------------------------------------------------------


class SnapshotWriter:
    """flagd's side. One per (prefix, key) and process: creates the index (0640, optional group),
    publishes immutable per-version data segments, refreshes the heartbeat, removes old versions,
    and at start removes the orphans of a crashed predecessor.

    :param group: gid or group name given to every segment (readers are its members).
    :param poll_interval_ms: flagd's upstream poll interval, stored in the index so readers know
        when a heartbeat is overdue (they warn at three intervals).
    :raises WriterConflictError: another live process publishes for this key, or the index
        exists and belongs to another user.
    """

    def __init__(self, prefix: str, deployment_key: str, group: OwnerSpec = None, *,
                 poll_interval_ms: int = 0, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._prefix = prefix
        self._key = deployment_key
        self._gid = _resolve_gid(group)
        self._clock_ns = clock_ns
        self._pid = os.getpid()
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
        if current == RETIRED:  # remove_all() was interrupted before unlinking this index: start over
            current = 0
            words[W_VERSION] = 0
        leftovers = list_versions(prefix, deployment_key)
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
            shm = posix_ipc.SharedMemory(self.index_name, posix_ipc.O_CREX, mode=SEGMENT_MODE, size=INDEX_SIZE)
        except posix_ipc.ExistentialError:
            created = False
            try:
                shm = posix_ipc.SharedMemory(self.index_name, flags=0)
            except posix_ipc.PermissionsError:
                raise WriterConflictError("%s exists and this process (uid %d) may not write it"
                                          % (self.index_name, os.geteuid())) from None
        try:
            if created:
                self._restrict(shm.fd)
            else:
                stat = os.fstat(shm.fd)
                if stat.st_uid != os.geteuid():
                    raise WriterConflictError("%s belongs to uid %d, not to this process's uid %d"
                                              % (self.index_name, stat.st_uid, os.geteuid()))
                if stat.st_size == 0:  # its creator died between shm_open and ftruncate: finish the job
                    os.ftruncate(shm.fd, INDEX_SIZE)
                elif stat.st_size != INDEX_SIZE:
                    raise SegmentCorruptError("%s is %d bytes, expected %d" % (self.index_name, stat.st_size, INDEX_SIZE))
                self._restrict(shm.fd)  # a restart may bring a new --group
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

    def _restrict(self, fd: int) -> None:
        os.fchmod(fd, SEGMENT_MODE)  # posix_ipc's mode is filtered by the umask; set it exactly
        if self._gid is not None:
            os.fchown(fd, -1, self._gid)

    @property
    def version(self) -> int:
        """The last version this writer (or its predecessor) published; 0 if none."""
        version = self._words[W_VERSION]
        return 0 if version == RETIRED else version

    @property
    def words(self) -> Any:
        """The index as u64 words (None once closed), for the health words of snapshot/health.py."""
        return self._words

    def publish(self, document: Dict[str, Any]) -> int:
        """Write ``document`` as a new version (msgpack) and make it current; returns the version."""
        if self._words is None:
            raise SnapshotError("publish() on a closed SnapshotWriter")
        payload = msgpack.packb(document, use_bin_type=True)
        now = self._clock_ns()
        for _ in range(OPEN_ATTEMPTS):
            version = self._last + 1
            self._last = version
            try:
                shm = posix_ipc.SharedMemory(data_name(self._prefix, self._key, version), posix_ipc.O_CREX,
                                             mode=SEGMENT_MODE, size=HEADER.size + len(payload))
                break
            except posix_ipc.ExistentialError:
                continue  # a name squatted or left by someone else: skip the number, never overwrite
        else:
            raise WriterConflictError("could not create a data segment after %d attempts (up to v%d)"
                                      % (OPEN_ATTEMPTS, self._last))
        name = shm.name
        try:
            self._restrict(shm.fd)
            try:
                # Reserve the pages now: tmpfs allocates on first touch, and a full /dev/shm would
                # otherwise kill this process with SIGBUS in the middle of the copy below.
                os.posix_fallocate(shm.fd, 0, HEADER.size + len(payload))
            except OSError as error:
                _unlink(name)
                raise SnapshotError("no room for a %d-byte snapshot in shared memory (%s); %s stays current"
                                    % (HEADER.size + len(payload), error, "v%d" % self.version)) from None
            with mmap.mmap(shm.fd, HEADER.size + len(payload)) as mm:
                mm[HEADER.size:] = payload
                HEADER.pack_into(mm, 0, DATA_MAGIC, DATA_FORMAT, ENCODING_MSGPACK, version, len(payload),
                                 now, zlib.crc32(payload))
            # munmap above is a syscall: the kernel orders every byte of the segment before the index
            # store below, on any CPU. Readers only ever open the version the index names.
        finally:
            shm.close_fd()
        words = self._words
        fetched = document.get("fetched_at_ns")
        if isinstance(fetched, int) and fetched > 0:
            words[W_FETCH] = fetched
        interval = document.get("poll_interval_ms")
        if isinstance(interval, int) and interval > 0:
            words[W_POLL] = interval
        words[W_PUBLISHED] = now  # before the version: a reader may pair the new time with the old version, never worse
        words[W_HEARTBEAT] = now
        # THE PUBLISH POINT. One aligned 8-byte store (memoryview 'Q' item assignment is a single
        # 8-byte memcpy, a plain mov on x86-64), so a reader sees the old or the new version, whole.
        words[W_VERSION] = version
        self._kept.add(version)
        self._drop_old(version)
        return version

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


class SnapshotReader:
    """The SDK's side: maps read-only, never creates, writes or unlinks anything.

    ``current_version()`` is the hot-path 8-byte load (``words[W_VERSION]`` on the kept
    memoryview, which callers may also hold themselves as :attr:`words`). ``load()`` validates and
    decodes the current version, once per version. Opens lazily, in the process that first asks.

    :param owner: uid or user name that must own the segments. Whoever owns them, a segment that
        group or others can write is refused, and data segments must have the index's owner.
    """

    def __init__(self, prefix: str, deployment_key: str, owner: OwnerSpec = None, *,
                 clock_ns: Callable[[], int] = time.time_ns, hashed_key: Optional[str] = None) -> None:
        # hashed_key: read the key whose key_hash() this is, without knowing the key (status --all).
        hashed = hashed_key if hashed_key is not None else key_hash(deployment_key)
        self._prefix = prefix
        self._stem = "/%s.%s.v" % (prefix, hashed)
        self.index_name = "/%s.%s.idx" % (prefix, hashed)
        self._owner = owner
        self._uid: Optional[int] = None
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
        """Map the index if it exists now; False if it does not (flagd never ran for this key).

        :raises SegmentPermissionError: the index is writable by others or has the wrong owner.
        :raises SegmentCorruptError: the segment is not a flagd index.
        """
        if self.words is not _NOT_MAPPED and self.words[W_VERSION] != RETIRED:
            return True
        self.words = _NOT_MAPPED
        self._last = None
        if self._uid is None:
            self._uid = _resolve_uid(self._owner)
        try:
            mm, stat = self._map(self.index_name, self._uid)
        except posix_ipc.ExistentialError:
            return False
        if mm is None:
            return False  # created but not sized yet (shm_open and ftruncate are two steps)
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

    def _map(self, name: str, uid: Optional[int]) -> Tuple[Optional[mmap.mmap], os.stat_result]:
        """Open ``name`` read-only, check who may have written it, map it ACCESS_READ, close the fd.

        The mapping is None for an empty segment (mmap cannot map 0 bytes).
        """
        try:
            shm = posix_ipc.SharedMemory(name, flags=0, read_only=True)
        except posix_ipc.PermissionsError:
            raise SegmentPermissionError(
                "%s exists but this process (uid %d) may not read it: add the user to the segments' group "
                "(flagd --group)" % (name, os.geteuid())) from None
        try:
            stat = os.fstat(shm.fd)
            _check_owner(name, stat, uid)
            if stat.st_size == 0:
                return None, stat
            # PROT_READ + O_RDONLY fd: this process cannot write the segment at the API or MMU level.
            mm = mmap.mmap(shm.fd, stat.st_size, access=mmap.ACCESS_READ)
        finally:
            shm.close_fd()  # the mapping survives; no fd is left to leak across fork/exec
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
        if self._uid is None:
            self._uid = _resolve_uid(self._owner)
        name = self._stem + str(version)
        mm, stat = self._map(name, self._uid)
        if mm is None:
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
