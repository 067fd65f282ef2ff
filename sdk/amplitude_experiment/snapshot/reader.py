"""The workers' side of the shared snapshot: map read-only, follow the current version.

:class:`SnapshotReader` opens read-only and lazily; refuses a file that group or others can
write, that no trusted user owns (its own uid, root, flagd's user: ``host.trusted_owners``), or
(for a version file) whose owner differs from the index's; touches no page it has not seen
backed (st_blocks: an index that is not reads as "nothing published"); maps ACCESS_READ and
closes its fd at once; validates a version's header and directory once, and keeps the mapping
for as long as the version's flag table is referenced. A name that vanished between the index
read and the open (the writer unlinked it) is retried a bounded number of times, after which the
previous version stays.

:class:`SnapshotFollower` is what an evaluation calls: one 8-byte load of the index and an int
compare per call; at most once a second it re-maps a retired or missing index, catches up on a
version it skipped and checks flagd's heartbeat.

Both may be shared by threads (state is swapped as one reference) and survive ``fork()``
(mappings are MAP_SHARED). On Python < 3.13 CPython's mmap keeps a read-only, close-on-exec
duplicate fd per mapping (the index and the mapped version); 3.13+ maps with ``trackfd=False``.
"""

import mmap
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Generic, Iterable, List, Optional, Tuple, TypeVar

import posix_ipc

from .._fork import FORKS
from .errors import SnapshotCorruptError, SnapshotError, SnapshotPermissionError
from .host import SHM_DIR, OwnerSpec, check_owner, is_backed, trusted_owners
from .layout import (
    INDEX_LAYOUT,
    INDEX_MAGIC,
    INDEX_SIZE,
    INDEX_WORDS,
    RETIRED,
    W_HEARTBEAT,
    W_LAYOUT,
    W_MAGIC,
    W_POLL,
    W_VERSION,
    W_COHORT_VERSION,
    CohortDirectory,
    CohortMembers,
    FlagTable,
    IndexState,
    TableCorruptError,
    key_hash,
)

__all__ = ["OPEN_ATTEMPTS", "CohortFollower", "CohortView", "Snapshot", "SnapshotFollower", "SnapshotReader"]

#: Attempts of a reader to open the version the index names before it keeps its previous snapshot.
OPEN_ATTEMPTS = 3


#: Stand-in for the index words before the index is mapped: every word reads 0 ("nothing yet").
_NOT_MAPPED: Tuple[int, ...] = (0,) * INDEX_WORDS

#: Python 3.13+ can map without keeping a duplicate of the fd; before that CPython's mmap keeps one
#: (close-on-exec, read-only) for as long as the mapping lives: one per process for the index.
_NO_FD_KEPT: Dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


#: One published version, as the reader returns it: a :class:`~.layout.FlagTable`.
Snapshot = FlagTable


class SnapshotReader:
    """The SDK's side: maps read-only, never creates, writes or unlinks anything.

    ``current_version()`` is the hot-path 8-byte load (``words[W_VERSION]`` on the kept
    memoryview, which callers may also hold themselves as :attr:`words`). ``load()`` validates and
    decodes the current version, once per version. Opens lazily, in the process that first asks.

    :param owner: uid or user name flagd runs as. Files are trusted only when this process's
        uid, root or that user owns them (by default :data:`DEFAULT_FLAGD_USER`, when it exists).
        Whoever owns them, a shared-memory file that group or others can write is refused, and version files
        must have the index's owner.
    """

    def __init__(self, prefix: str, deployment_key: str, owner: OwnerSpec = None, *,
                 clock_ns: Callable[[], int] = time.time_ns, hashed_key: Optional[str] = None) -> None:
        # hashed_key: read the key whose key_hash() this is, without knowing the key (status --all).
        hashed = hashed_key if hashed_key is not None else key_hash(deployment_key)
        self._prefix = prefix
        self._stem = "/%s.%s.v" % (prefix, hashed)
        self._base = "/%s.%s." % (prefix, hashed)
        #: Mapped member files by number, kept while the current cohort directory names them.
        self._members: Dict[int, CohortMembers] = {}
        self.index_name = "/%s.%s.idx" % (prefix, hashed)
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

        :raises SnapshotPermissionError: the index is writable by others or no trusted user owns it.
        :raises SnapshotCorruptError: the file is not a flagd index.
        """
        if self.words is not _NOT_MAPPED and self.words[W_VERSION] != RETIRED:
            return True
        self.words = _NOT_MAPPED
        self._last = None
        self._members = {}  # a new index may reuse member file numbers
        try:
            mm, stat = self._map(self.index_name)
        except posix_ipc.ExistentialError:
            return False
        if mm is None:
            return False  # created but not allocated yet, or not backed: not published
        if stat.st_size != INDEX_SIZE:
            raise SnapshotCorruptError("%s is %d bytes, expected %d" % (self.index_name, stat.st_size, INDEX_SIZE))
        words = memoryview(mm).cast("Q")
        if words[W_MAGIC] != INDEX_MAGIC:
            return False  # being created right now, or not ours: look again later
        if words[W_LAYOUT] != INDEX_LAYOUT:
            raise SnapshotCorruptError("%s has index layout %d, this SDK reads %d"
                                      % (self.index_name, words[W_LAYOUT], INDEX_LAYOUT))
        self._index_uid = stat.st_uid
        self.words = words
        return True

    def _map(self, name: str) -> Tuple[Optional[mmap.mmap], os.stat_result]:
        """Open ``name`` read-only, check who may have written it and that every page is backed,
        map it ACCESS_READ, close the fd.

        The mapping is None for an empty file (mmap cannot map 0 bytes) and for one whose pages
        are not all allocated (reading a hole on a full /dev/shm is a SIGBUS).
        """
        if self._trusted is None:
            self._trusted = trusted_owners(self._owner)
        try:
            shm = posix_ipc.SharedMemory(name, flags=0, read_only=True)
        except posix_ipc.PermissionsError:
            raise SnapshotPermissionError(
                "%s exists but this process (uid %d) may not read it: add the user to the files' group "
                "(flagd --group)" % (name, os.geteuid())) from None
        try:
            stat = os.fstat(shm.fd)
            check_owner(name, stat, self._trusted)
            if stat.st_size == 0 or not is_backed(stat):
                return None, stat
            # PROT_READ + O_RDONLY fd: this process cannot write the file at the API or MMU level.
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
        return IndexState.of(self.words)

    # -- data

    def load(self) -> Optional[Snapshot]:
        """The current snapshot, validated and decoded (cached per version); None if none is published.

        If the named version keeps vanishing (a writer publishing faster than this reader opens),
        the previous snapshot is returned after :data:`OPEN_ATTEMPTS` tries.

        :raises SnapshotCorruptError: the file the index names fails validation.
        :raises SnapshotPermissionError: a shared-memory file has an unsafe mode or the wrong owner.
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
        """Open, validate and map ``version`` now, bypassing the cache (``flagd dump``, tests).

        :raises posix_ipc.ExistentialError: that version's file does not exist (any more).
        :raises SnapshotCorruptError: it fails validation.
        :raises SnapshotPermissionError: it has an unsafe mode or the wrong owner.
        """
        name = self._stem + str(version)
        mm, stat = self._map(name)
        if mm is None:
            if stat.st_size:
                raise SnapshotCorruptError("%s is not backed by memory (is %s full?)" % (name, SHM_DIR))
            raise SnapshotCorruptError("%s is empty" % name)
        if self._index_uid is not None and stat.st_uid != self._index_uid:
            raise SnapshotPermissionError("%s is owned by uid %d, the index by uid %d"
                                         % (name, stat.st_uid, self._index_uid))
        try:
            # The table keeps the mapping: flags are decoded from it when a request first needs them.
            return FlagTable(mm, name, version, mapping=mm)
        except TableCorruptError as error:
            raise SnapshotCorruptError(str(error)) from None  # the mapping goes with the last reference


    # -- cohorts

    def read_cohorts(self, number: int) -> "CohortView":
        """Open, validate and map cohort directory ``number`` and every member file it names.

        Member files mapped for an earlier directory are reused (they never change).

        :raises posix_ipc.ExistentialError: a file does not exist (any more).
        :raises SnapshotCorruptError: one fails validation.
        :raises SnapshotPermissionError: one has an unsafe mode or the wrong owner.
        """
        if not number:
            return CohortView(None, {})
        name = self._base + "k%d" % number
        try:
            directory = CohortDirectory(self._map_checked(name)[0], name, number)
        except TableCorruptError as error:
            raise SnapshotCorruptError(str(error)) from None
        members: Dict[int, CohortMembers] = {}
        by_id: Dict[str, Tuple[str, Optional[CohortMembers]]] = {}
        for entry in directory.cohorts:
            file_number = entry.get("members")
            loaded = None
            if isinstance(file_number, int) and file_number > 0:
                loaded = self._members.get(file_number) or members.get(file_number)
                if loaded is None:
                    name = self._base + "c%d" % file_number
                    mm = self._map_checked(name)[0]
                    try:
                        loaded = CohortMembers(mm, name, file_number, mapping=mm)
                    except TableCorruptError as error:
                        raise SnapshotCorruptError(str(error)) from None
                members[file_number] = loaded
            by_id[str(entry.get("id"))] = (str(entry.get("group_type")), loaded)
        self._members = members
        return CohortView(directory, by_id)

    def _map_checked(self, name: str) -> Tuple[Any, os.stat_result]:
        mm, stat = self._map(name)
        if mm is None:
            raise SnapshotCorruptError("%s is empty or not backed by memory" % name)
        if self._index_uid is not None and stat.st_uid != self._index_uid:
            raise SnapshotPermissionError("%s is owned by uid %d, the index by uid %d"
                                         % (name, stat.st_uid, self._index_uid))
        return mm, stat


class CohortView:
    """The cohorts of one published cohort directory, read in place (a ``CohortMembership``).

    ``cohorts_containing`` hashes the member once per member file's hash key and bisects each
    mapped file: nothing of a cohort is copied into this process's heap.
    """

    __slots__ = ("directory", "_by_id")

    def __init__(self, directory: Optional[CohortDirectory], by_id: Dict[str, Tuple[str, Optional[CohortMembers]]]):
        self.directory = directory
        self._by_id = by_id

    def cohorts_containing(self, group_type: str, member: str, cohort_ids: Iterable[str]) -> List[str]:
        found = []
        hashed_with = None  # flagd hashes every member file with one key: one hash per call
        high = low = 0
        by_id = self._by_id
        for cohort_id in cohort_ids:
            entry = by_id.get(cohort_id)
            if entry is None:
                continue
            entry_type, members = entry
            if entry_type != group_type or members is None:
                continue
            if members.hash_key != hashed_with:
                hashed_with = members.hash_key
                high, low = members.halves(member)
            if members.contains_halves(high, low):
                found.append(cohort_id)
        return found

    @property
    def cohorts(self) -> List[Dict[str, Any]]:
        """The directory's entries (no member ids)."""
        return list(self.directory.cohorts) if self.directory is not None else []


class CohortFollower:
    """Serves the :class:`CohortView` of the cohort directory the index names (word 16).

    ``current()`` is one 8-byte load and two compares while the directory does not move; a
    directory that cannot be read is reported once and the previous view kept. Like the flags,
    the cohorts fail static: while the index is retired (flagd's files removed) or a new index
    has no flags published yet, the cohorts the served flags were published with stay. A new
    index (another mapping) may reuse directory numbers, so its directory is read afresh.
    """

    def __init__(self, reader: SnapshotReader, on_problem: Callable[[str], None]) -> None:
        self.reader = reader
        self._on_problem = on_problem
        #: (the index mapping, the directory number served, its view).
        self._state: Tuple[Any, int, Optional[CohortView]] = (None, 0, None)
        self.last_problem: Optional[str] = None

    def current(self) -> Optional[CohortView]:
        words = self.reader.words
        state = self._state
        if words[W_COHORT_VERSION] == state[1] and words is state[0]:
            return state[2]
        version = words[W_VERSION]
        if version == RETIRED or (version == 0 and words is not state[0] and state[2] is not None):
            return state[2]  # retired, or a new index without flags yet: keep what the flags served use
        return self._refresh(words)

    def _refresh(self, words: Any) -> Optional[CohortView]:
        number = words[W_COHORT_VERSION]
        if number == 0:
            self._state = (words, 0, None)
            return None
        for _ in range(OPEN_ATTEMPTS):
            try:
                view = self.reader.read_cohorts(number)
            except posix_ipc.ExistentialError:
                self.reader.retries += 1
                latest = words[W_COHORT_VERSION]
                if latest != number:
                    number = latest
                    continue
                break
            except SnapshotError as error:
                self.last_problem = "cohort directory %d refused, keeping the previous cohorts: %s" % (number, error)
                self._on_problem(self.last_problem)
                break
            self.last_problem = None
            self._state = (words, number, view)
            return view
        self._state = (words, number, self._state[2])  # fail static until the index moves again
        return self._state[2]


# --- following the current version from the hot path --------------------------------------------

#: Evaluations between two looks at the clock for the once-a-second checks (heartbeat, re-attach).
CHECK_EVERY = 64
#: Seconds between two of those checks.
CHECK_SECONDS = 1.0
#: A heartbeat older than this many poll intervals is stale.
STALE_INTERVALS = 3

T = TypeVar("T")


class SnapshotFollower(Generic[T]):
    """Serves ``build(version)`` for the version the index names, rebuilding when it moves.

    ``current()`` is the evaluation hot path: one aligned 8-byte load from the read-only index
    and an int compare, no lock, no syscall. When the version word moves it maps the new
    version and calls ``build`` once for it (the SDK makes a lazily compiled flag set); a version
    that fails (refused, corrupt, or ``build`` raised) is reported once through ``on_problem``
    and the previous result keeps being served. At most once a second (every :data:`CHECK_EVERY`
    calls, then the clock) it re-maps a retired or missing index by name, catches up on a
    version it skipped, and checks flagd's heartbeat: ``on_heartbeat(stale, age_ns)`` hears when
    it turns older than :data:`STALE_INTERVALS` poll intervals and when it is fresh again.

    Thread-safe and fork-safe: the hot path takes no lock (state is one tuple swapped as a
    reference). Two threads that see a new version at once may both build it; a short lock around
    the swap makes the later one serve the earlier one's build, and a thread that built or looked
    at an older version than the one installed meanwhile serves the installed one: every caller
    gets one object per version, newest last (an OpenFeature provider announces each object it
    meets as a new version).
    """

    def __init__(self, reader: SnapshotReader, build: Callable[[FlagTable], T], *,
                 on_problem: Callable[[str], None], on_heartbeat: Callable[[bool, int], None],
                 default_interval_ms: int = 30000, monotonic: Callable[[], float] = time.monotonic,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.reader = reader
        self._build = build
        self._on_problem = on_problem
        self._on_heartbeat = on_heartbeat
        self._default_interval_ms = max(int(default_interval_ms), 1)
        self._monotonic = monotonic
        self._wall_clock_ns = wall_clock_ns
        # The hot path reads only these two attributes: the index words (zeros before the index is
        # mapped) and (index version acknowledged, what build made of the version served, that
        # version's table), swapped as one tuple so a thread never pairs one version's table with
        # another's build.
        self._words: Any = reader.words
        self._state: Tuple[int, Optional[T], Optional[FlagTable]] = (0, None, None)
        #: The last problem met and when (wall-clock seconds), None once a version is served cleanly.
        self.last_problem: Optional[str] = None
        self.last_problem_at: Optional[float] = None
        self.stale = False
        self._countdown = CHECK_EVERY
        self._next_check = 0.0
        self._failed_version = -1
        self._swap_lock = threading.Lock()
        self._swap_lock_generation = FORKS.generation

    # -- the hot path

    def current(self) -> Optional[T]:
        state = self._state
        if self._words[W_VERSION] != state[0]:
            return self._refresh()
        self._countdown -= 1  # unlocked on purpose: a lost decrement only delays the next check
        if self._countdown < 0:
            self._periodic()
        return state[1]

    @property
    def table(self) -> Optional[FlagTable]:
        """The version served (its flag table), None before one is."""
        return self._state[2]

    # -- attaching and refreshing (off the hot path)

    def try_attach(self) -> bool:
        """Map the index and serve its version if one is published; False if none is usable yet.

        Refused or corrupt files are reported once per version, never raised.
        """
        try:
            attached = self.reader.attach()
        except SnapshotError as error:
            self._problem(0, "index refused: %s" % error)
            return False
        self._words = self.reader.words
        if not attached:
            self.note_problem("index does not exist")
            return False
        self._refresh()
        if self._state[1] is None and self.last_problem is None:
            self.note_problem("the index exists but no version is published yet")
        return self._state[1] is not None

    def note_problem(self, message: str) -> None:
        """Remember ``message`` as the last problem, with the time."""
        self.last_problem = message
        self.last_problem_at = self._wall_clock_ns() / 1e9

    def catch_up(self) -> Optional[T]:
        """Serve the version the index names now, as an evaluation would have (for status calls
        in a process that has not evaluated since the index moved)."""
        words = self._words
        state = self._state
        version = words[W_VERSION]
        if version != state[0]:
            return self._refresh()
        table = state[2]
        if version and version != RETIRED and table is not None and version != table.version \
                and version != self._failed_version:
            return self._refresh()  # a version skipped while the newest kept vanishing
        return state[1]

    def state(self) -> IndexState:
        """What the index says now (mapping it by name if it is not mapped), for status reports.

        :raises SnapshotError: the index is refused.
        """
        state = self.reader.state()
        self._words = self.reader.words
        return state

    def interval_ms(self) -> int:
        """flagd's poll interval: from the index, else the served version's meta, else the default."""
        interval = self._words[W_POLL]
        if not interval and self.table is not None:
            interval = self.table.meta.get("poll_interval_ms") or 0
        return int(interval) if interval else self._default_interval_ms

    def heartbeat_age_ns(self, now_ns: int) -> Optional[int]:
        heartbeat = self._words[W_HEARTBEAT]
        return max(now_ns - heartbeat, 0) if heartbeat else None

    def check_heartbeat(self, now_ns: Optional[int] = None) -> None:
        """Compare the heartbeat's age with :data:`STALE_INTERVALS` poll intervals; report a change."""
        age_ns = self.heartbeat_age_ns(self._wall_clock_ns() if now_ns is None else now_ns)
        if age_ns is None:
            return
        stale = age_ns > STALE_INTERVALS * self.interval_ms() * 1_000_000
        if stale != self.stale:
            self.stale = stale
            self._on_heartbeat(stale, age_ns)

    def _refresh(self) -> Optional[T]:
        seen = self._words[W_VERSION]
        if seen == RETIRED:
            # flagd's files were removed on purpose: find a new index by name, keep serving meanwhile.
            self._reattach()
            if self._words[W_VERSION] in (0, RETIRED):
                return self._state[1]
            return self._refresh()
        try:
            table = self.reader.load()
        except SnapshotError as error:
            state = self._state
            self._problem(seen, "snapshot v%d refused, keeping %s: %s" % (seen, self._describe(), error))
            self._state = (seen, state[1], state[2])  # fail static: do not retry until the index moves again
            return state[1]
        # Read after the load: another thread may have installed this very version meanwhile, and
        # what it built must not be paired with the version this thread saw before.
        state = self._state
        served, served_table = state[1], state[2]
        found_table = served_table
        if table is not None and (served_table is None or table.version != served_table.version):
            try:
                built = self._build(table)
            except Exception as error:
                self._problem(seen, "snapshot v%d could not be used, keeping %s: %s"
                              % (table.version, self._describe(), error))
                self._state = (seen, served, served_table)
                return served
            served, served_table = built, table
            self.last_problem = None
        with self._swapping():
            installed = self._state[2]
            if installed is not found_table and installed is not None and served_table is not None \
                    and installed.version >= served_table.version:
                # Another thread installed this version (or a newer one) while this one built or
                # looked: serve what it installed, never a second build nor an older version.
                return self._state[1]
            # A version older than ``seen`` (the newest kept vanishing while we opened it) is still
            # acknowledged as ``seen``; the once-a-second check in _periodic catches up on it.
            self._state = (seen, served, served_table)
        return served

    def _swapping(self) -> Any:
        """The lock around installing a build (renewed in a fork child: a thread of the parent may
        have held it at the fork)."""
        if self._swap_lock_generation != FORKS.generation:
            self._swap_lock = threading.Lock()
            self._swap_lock_generation = FORKS.generation
        return self._swap_lock

    def _reattach(self) -> None:
        # A new index may reuse version numbers: forget which version we serve, keep serving it.
        try:
            self.reader.attach()
        except SnapshotError as error:
            self._problem(RETIRED, "index refused: %s" % error)
        self._words = self.reader.words
        # Acknowledge whatever the (new or absent) index says so the hot path stays quiet; a new
        # version is loaded by _periodic's comparison with the version served.
        self._state = (self._words[W_VERSION], self._state[1], None)
        self._countdown = 0
        self._next_check = 0.0

    def _periodic(self) -> None:
        self._countdown = CHECK_EVERY
        now = self._monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_SECONDS
        reader = self.reader
        if not reader.attached or self._words[W_VERSION] == RETIRED:
            if reader.attached:
                self._reattach()
            else:
                self.try_attach()
        version = self._words[W_VERSION]
        held = self.table.version if self.table is not None else 0
        if version and version != RETIRED and version != held and version != self._failed_version:
            self._refresh()
        if reader.attached:
            self.check_heartbeat()

    def _problem(self, version: int, message: str) -> None:
        """Report a refused or unusable version once per version."""
        self.note_problem(message)
        if version != self._failed_version:
            self._failed_version = version
            self._on_problem(message)

    def _describe(self) -> str:
        return "snapshot v%d" % self.table.version if self.table is not None else "no flags"
