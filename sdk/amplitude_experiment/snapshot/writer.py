"""flagd's side of the shared snapshot: the index, immutable version files, the publish point.

Protocol: every version is written once into its own file and never modified; the index
publishes the current version with one aligned 8-byte store, made last (docs/shared-mode.md).

shm_open(O_CREAT|O_EXCL) a new empty ``v<N>``, fchmod 0640 (+ fchown to a group),
posix_fallocate it to size (allocate first: every shared-memory page a writer touches, the
index's included, is reserved before it is touched, so a full /dev/shm is an error, never a
SIGBUS; on ENOSPC the retained older versions are dropped and the allocation tried once more),
write it, munmap, then store N into the index's version word; nothing after that store raises.
A writer never reuses a version number (it continues from the index and from the leftover
``v*`` names its own uid owns), skips every name someone else took in one step, unlinks versions
older than N-2 after each publish, and at start unlinks its own ``v*`` other than the current
one and the two before it (orphans of a crashed writer, including a half-written newest one).
Names it does not own, and names that are no canonical number in 1..MAX_VERSION, are neither
counted nor unlinked. Not thread safe.

Cohort files (``.c<M>`` member files, ``.k<N>`` directories; layout.py "cohorts") follow the same
rules: written whole (allocated first, 0640), never reused numbers, the directory published by
one store into index word 16; the two directories before the current one and the member files
any kept directory names stay, the rest is unlinked, and at start only the published directory
and its member files are kept.
"""

import errno
import logging
import mmap
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import posix_ipc

from ..evaluation.catalog import PlannedCatalog, plan_flags
from .errors import ForeignIndexError, SnapshotCorruptError, SnapshotError, WriterConflictError
from .host import (
    FILE_MODE,
    SHM_DIR,
    OwnerSpec,
    is_backed,
    list_versions,
    owner_name,
    process_start_ns,
    publisher_alive,
    resolve_gid,
    unlink,
)
from .layout import (
    W_COHORT_VERSION,
    CohortDirectory,
    CohortImage,
    TableCorruptError,
    cohort_directory_name,
    cohort_members_name,
    encode_cohort_directory,
    encode_members,
    INDEX_LAYOUT,
    INDEX_MAGIC,
    INDEX_SIZE,
    MAX_VERSION,
    RETIRED,
    W_FETCH,
    W_HEARTBEAT,
    W_LAYOUT,
    W_MAGIC,
    W_PID,
    W_POLL,
    W_PUBLISHED,
    W_START,
    W_VERSION,
    IndexState,
    encode_version,
    index_name,
    parse_version,
    version_name,
)

__all__ = ["KEEP_PREVIOUS", "SnapshotWriter", "remove_all", "remove_by_key_hash"]

logger = logging.getLogger("amplitude_experiment.snapshot")

#: Versions kept besides the current one, for readers that read the index just before a publish.
KEEP_PREVIOUS = 2
#: Names a writer tries before it gives up on a publish (each try skips every name taken).
CREATE_ATTEMPTS = 3


def remove_all(prefix: str, deployment_key: str) -> None:
    """Unlink this key's index and every version file (``flagd`` cleanup, tests).

    Mapped readers are told first (version word set to RETIRED) so they re-open by name. Only
    files this process's uid owns are touched: names other users planted stay.
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
            if stat.st_uid == uid and stat.st_size == INDEX_SIZE and is_backed(stat):
                with mmap.mmap(shm.fd, INDEX_SIZE) as mm:
                    words = memoryview(mm).cast("Q")
                    words[W_VERSION] = RETIRED  # aligned 8-byte store; readers see it on their next check
                    words.release()
        except (OSError, ValueError):
            pass
        finally:
            shm.close_fd()
        if stat is not None and stat.st_uid == uid:
            unlink(name)
    for version in list_versions(prefix, deployment_key, owner_uid=uid):
        unlink(version_name(prefix, deployment_key, version))
    for number in list_versions(prefix, deployment_key, owner_uid=uid, kind="k"):
        unlink(cohort_directory_name(prefix, deployment_key, number))
    for number in list_versions(prefix, deployment_key, owner_uid=uid, kind="c"):
        unlink(cohort_members_name(prefix, deployment_key, number))


def remove_by_key_hash(prefix: str, hashed: str) -> List[str]:
    """Like :func:`remove_all` for the key whose ``key_hash`` is ``hashed``; returns the names unlinked."""
    removed = []
    name = "/%s.%s.idx" % (prefix, hashed)
    try:
        shm = posix_ipc.SharedMemory(name, flags=0)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        shm = None
    if shm is not None:
        try:
            stat = os.fstat(shm.fd)
            if stat.st_size == INDEX_SIZE and is_backed(stat):
                with mmap.mmap(shm.fd, INDEX_SIZE) as mm:
                    words = memoryview(mm).cast("Q")
                    words[W_VERSION] = RETIRED  # mapped readers re-open by name, find nothing, keep serving
                    words.release()
        except (OSError, ValueError):
            pass
        finally:
            shm.close_fd()
        if unlink(name):
            removed.append(name)
    stems = ["%s.%s.%s" % (prefix, hashed, kind) for kind in ("v", "k", "c")]
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        names = []
    for entry in sorted(names):
        for stem in stems:
            if entry.startswith(stem) and parse_version(entry[len(stem):]) is not None and unlink("/" + entry):
                removed.append("/" + entry)
    return removed


class SnapshotWriter:
    """flagd's side. One per (prefix, key) and process: creates the index (0640, optional group),
    publishes immutable per-version version files, refreshes the heartbeat, removes old versions,
    and at start removes the orphans of a crashed predecessor.

    :param group: gid or group name given to every file (readers are its members).
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
        self._gid = resolve_gid(group)
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
                unlink(version_name(prefix, deployment_key, version))
        #: The key of the member hashes this writer writes: one per writer, so a lookup of one
        #: member in several cohorts hashes once; random, so no one can aim ids at a collision.
        self._hash_key = os.urandom(16)
        self._adopt_cohort_files()
        words[W_POLL] = max(int(poll_interval_ms), 0)
        words[W_START] = process_start_ns(self._pid) or clock_ns()
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
            shm = posix_ipc.SharedMemory(self.index_name, posix_ipc.O_CREX, mode=FILE_MODE)
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
                    raise SnapshotCorruptError("%s is %d bytes, expected %d" % (self.index_name, stat.st_size, INDEX_SIZE))
                self._restrict(shm.fd)  # a restart may bring a new --group
            try:
                # Allocate first: tmpfs allocates on first touch, and a store into a page a full
                # /dev/shm cannot give is a SIGBUS. A creator that died between shm_open and here
                # left size 0 (or, before this rule, an unbacked page): this finishes its job.
                os.posix_fallocate(shm.fd, 0, INDEX_SIZE)
            except OSError as error:
                if created:
                    unlink(self.index_name)
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
                raise SnapshotCorruptError("%s is not a layout-%d flagd index" % (self.index_name, INDEX_LAYOUT))
            if magic == 0:  # a creator died before finishing the header: finish it
                with memoryview(mm).cast("Q") as words:
                    words[W_LAYOUT] = INDEX_LAYOUT
                    words[W_MAGIC] = INDEX_MAGIC
        return mm, created

    def _foreign(self, uid: int) -> "ForeignIndexError":
        return ForeignIndexError(
            "%s belongs to %s, not to this process's uid %d. Either that user's flagd publishes this key "
            "(run flagd as that user, or stop it), or another local user created the name to feed workers "
            "forged flags: workers refuse it either way. Remove it and any files beside it as root "
            "(rm %s%s.*), then start flagd again."
            % (self.index_name, owner_name(uid), self._uid, SHM_DIR, self.index_name.rsplit(".", 1)[0]))

    def _restrict(self, fd: int) -> None:
        os.fchmod(fd, FILE_MODE)  # posix_ipc's mode is filtered by the umask; set it exactly
        if self._gid is not None:
            os.fchown(fd, -1, self._gid)

    @property
    def version(self) -> int:
        """The last version this writer (or its predecessor) published; 0 if none."""
        version = self._words[W_VERSION]
        return 0 if version == RETIRED else version

    @property
    def words(self) -> Any:
        """The index as u64 words (None once closed), for the health words of ``health.py``."""
        return self._words

    def publish(self, document: Mapping[str, Any], catalog: Optional[PlannedCatalog] = None) -> int:
        """Write a new version and make it current; returns the version.

        Nothing raises once the version is stored: cleanup failures are logged.

        :param document: ``{"flags": [flag configs], ...meta}``; the meta entries (``source``,
            ``fetched_at_ns``, ``poll_interval_ms``, anything msgpack holds) are stored with the
            flags. ``flags`` may be left out when ``catalog`` is given.
        :param catalog: the flags already planned (flagd plans once to validate); planned here
            from ``document["flags"]`` otherwise.
        :raises FlagConfigError: the flags do not validate (nothing is written).
        :raises SnapshotError: no room in shared memory even after dropping the retained older
            versions (the current one stays), or the writer is closed.
        :raises WriterConflictError: every free version name was squatted while we looked.
        """
        if self._words is None:
            raise SnapshotError("publish() on a closed SnapshotWriter")
        if catalog is None:
            catalog = plan_flags(document.get("flags", []))
        image = encode_version(catalog, {key: value for key, value in document.items() if key != "flags"})
        size = image.size
        now = self._clock_ns()
        shm, version = self._create_data()
        name = shm.name
        try:
            self._restrict(shm.fd)
            self._allocate(shm.fd, name, size)
            with mmap.mmap(shm.fd, size) as mm:
                header = image.header(version, now)
                mm[len(header):] = image.body
                mm[:len(header)] = header
            # munmap above is a syscall: the kernel orders every byte of the file before the index
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
        for _ in range(CREATE_ATTEMPTS):
            if version > MAX_VERSION:
                raise SnapshotError("version numbers are exhausted for %s" % self.index_name)
            try:
                shm = posix_ipc.SharedMemory(version_name(self._prefix, self._key, version), posix_ipc.O_CREX,
                                             mode=FILE_MODE)
            except posix_ipc.ExistentialError:
                taken = set(list_versions(self._prefix, self._key))  # whoever owns them
                version += 1
                while version in taken:
                    version += 1
                continue
            self._last = version  # never reused, even if this publish fails below
            return shm, version
        self._last = version - 1
        raise WriterConflictError("could not create a version file after %d attempts (up to v%d): someone keeps "
                                  "creating the next version names" % (CREATE_ATTEMPTS, self._last))

    def _allocate(self, fd: int, name: str, size: int) -> None:
        """Reserve every page of a new version file before it is touched (tmpfs allocates on first touch;
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
        unlink(name)
        raise SnapshotError("no room for a %d-byte snapshot in shared memory (%s); %s stays current"
                            % (size, os.strerror(failure.errno or errno.ENOSPC), "v%d" % self.version))

    def _drop_retained(self) -> bool:
        """Unlink every kept version but the current one, to make room; True if any was dropped."""
        current = self.version
        dropped = False
        for version in sorted(v for v in self._kept if v != current):
            self._kept.discard(version)
            dropped = unlink(version_name(self._prefix, self._key, version)) or dropped
        if dropped:
            logger.warning("shared memory is full: dropped the versions retained before v%d to publish the next",
                           current)
        return dropped

    def _drop_old(self, current: int) -> None:
        for version in [v for v in self._kept if v < current - KEEP_PREVIOUS]:
            # A reader that already mapped it keeps its pages; one that read the index before this
            # publish and opens now gets ExistentialError and re-reads the index.
            unlink(version_name(self._prefix, self._key, version))
            self._kept.discard(version)

    # --- cohorts (layout.py, "cohorts") -----------------------------------------------------

    def _adopt_cohort_files(self) -> None:
        """At start: keep the current cohort directory and the member files it names; unlink the
        other cohort files this uid owns (a crashed predecessor's orphans, half-written ones too)."""
        words = self._words
        current = words[W_COHORT_VERSION]
        directories = list_versions(self._prefix, self._key, owner_uid=self._uid, kind="k")
        members = list_versions(self._prefix, self._key, owner_uid=self._uid, kind="c")
        self._last_directory = max([current if current <= MAX_VERSION else 0] + directories)
        self._last_members = max([0] + members)
        #: Kept cohort directories -> the member files each names.
        self._directories: Dict[int, Set[int]] = {}
        directory = self.cohort_directory() if current in directories else None
        if directory is None:
            words[W_COHORT_VERSION] = 0
        else:
            self._directories[current] = _member_numbers(directory)
        self._drop_cohort_files()
        for number in directories:
            if number not in self._directories:
                unlink(cohort_directory_name(self._prefix, self._key, number))

    def cohort_directory(self) -> Optional[CohortDirectory]:
        """The current cohort directory as published (None when there is none or it is unreadable)."""
        number = self._words[W_COHORT_VERSION] if self._words is not None else 0
        if not number or number > MAX_VERSION:
            return None
        try:
            shm = posix_ipc.SharedMemory(cohort_directory_name(self._prefix, self._key, number), flags=0,
                                         read_only=True)
        except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
            return None
        try:
            stat = os.fstat(shm.fd)
            if stat.st_uid != self._uid or not stat.st_size or not is_backed(stat):
                return None
            with mmap.mmap(shm.fd, stat.st_size, access=mmap.ACCESS_READ) as mm:
                return CohortDirectory(bytes(mm), cohort_directory_name(self._prefix, self._key, number), number)
        except (OSError, TableCorruptError):
            return None
        finally:
            shm.close_fd()

    def write_members(self, member_ids: Any) -> int:
        """Write one cohort's member ids (an iterable of str) into a new member file; returns its
        number, for the directory that will name it (nothing names it before that).

        :raises SnapshotError: no room in shared memory.
        """
        image = encode_members(member_ids, self._hash_key)
        number = self._write_cohort_file("c", image)
        self._last_members = max(self._last_members, number)
        return number

    def publish_cohorts(self, cohorts: List[Dict[str, Any]], meta: Mapping[str, Any]) -> int:
        """Write a new cohort directory listing ``cohorts`` (maps with ``id``, ``group_type``,
        ``size``, ``last_modified``, ``members`` (a number from :meth:`write_members`, 0 for none),
        ``fetched_at_ns``, ``error``, ``error_at_ns``) and make it current; returns its number.

        Directories older than the two before it are unlinked, and every member file no kept
        directory names. :raises SnapshotError: no room in shared memory (the current one stays).
        """
        if self._words is None:
            raise SnapshotError("publish_cohorts() on a closed SnapshotWriter")
        image = encode_cohort_directory(list(cohorts), dict(meta))
        number = self._write_cohort_file("k", image)
        self._last_directory = max(self._last_directory, number)
        self._directories[number] = {int(entry.get("members") or 0) for entry in cohorts} - {0}
        # THE COHORTS' PUBLISH POINT: one aligned 8-byte store, after the files are whole.
        self._words[W_COHORT_VERSION] = number
        try:
            for old in [n for n in self._directories if n < number - KEEP_PREVIOUS]:
                del self._directories[old]
                unlink(cohort_directory_name(self._prefix, self._key, old))
            self._drop_cohort_files()
        except Exception:  # published is published
            logger.warning("could not drop old cohort files", exc_info=True)
        return number

    def _drop_cohort_files(self) -> None:
        """Unlink the member files this uid owns that no kept directory names."""
        named = set().union(*self._directories.values()) if self._directories else set()
        for number in list_versions(self._prefix, self._key, owner_uid=self._uid, kind="c"):
            if number not in named:
                unlink(cohort_members_name(self._prefix, self._key, number))

    def _write_cohort_file(self, kind: str, image: CohortImage) -> int:
        """Create the next free ``.k``/``.c`` name (never reused, never someone else's), allocate,
        write whole, unmap; returns the number."""
        name_of = cohort_directory_name if kind == "k" else cohort_members_name
        number = (self._last_directory if kind == "k" else self._last_members) + 1
        for _ in range(CREATE_ATTEMPTS):
            name = name_of(self._prefix, self._key, number)
            try:
                shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=FILE_MODE)
            except posix_ipc.ExistentialError:
                taken = set(list_versions(self._prefix, self._key, kind=kind))
                number += 1
                while number in taken:
                    number += 1
                continue
            break
        else:
            raise WriterConflictError("could not create a cohort file after %d attempts" % CREATE_ATTEMPTS)
        if kind == "k":
            self._last_directory = number
        else:
            self._last_members = number
        try:
            self._restrict(shm.fd)
            try:
                os.posix_fallocate(shm.fd, 0, image.size)
            except OSError as error:
                unlink(name)
                raise SnapshotError("no room for the %d-byte cohort file %s in shared memory (%s)"
                                    % (image.size, name, os.strerror(error.errno or errno.ENOSPC))) from None
            with mmap.mmap(shm.fd, image.size) as mm:
                header = image.header(number, self._clock_ns())
                mm[len(header):] = image.body
                mm[:len(header)] = header
        finally:
            shm.close_fd()
        return number

    def record_cohort_health(self, values: Mapping[int, int]) -> None:
        """Store cohort health words (index words 17..23, layout.W_COHORT_*)."""
        if self._words is None:
            return
        for word, value in values.items():
            if 17 <= word <= 23:
                self._words[word] = max(0, min(int(value), 2 ** 64 - 1))

    def heartbeat(self, fetched_at_ns: Optional[int] = None) -> None:
        """Refresh the heartbeat (and the last successful fetch time when given)."""
        if self._words is None:
            raise SnapshotError("heartbeat() on a closed SnapshotWriter")
        if fetched_at_ns:
            self._words[W_FETCH] = fetched_at_ns  # independent 8-byte stores; readers only report them
        self._words[W_HEARTBEAT] = self._clock_ns()

    def close(self) -> None:
        """Unmap; leaves every file in place so workers keep serving. Idempotent."""
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


def _member_numbers(directory: CohortDirectory) -> Set[int]:
    numbers = set()
    for entry in directory.cohorts:
        number = entry.get("members")
        if isinstance(number, int) and 0 < number <= MAX_VERSION:
            numbers.add(number)
    return numbers
