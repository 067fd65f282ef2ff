"""The byte layout of flagd's shared-memory files: the one module that knows an offset.

Each deployment key has an index and one version file per published version (the key itself
never appears in a name or a byte; ``keyhash = key_hash(key)``)::

    index:        /<prefix>.<keyhash>.idx
    version file: /<prefix>.<keyhash>.v<N>      N in 1..MAX_VERSION, never reused

The index, 4096 bytes of little-endian u64 words (``memoryview(mm).cast('Q')``)::

    word  0  magic            b"AMPFIDX1"
          1  layout           INDEX_LAYOUT (1)
          2  version          current version, 0 = none yet.  THE PUBLISH POINT: stored last.
                              RETIRED (2**64-1) = this index was removed; readers re-open by name.
          3  writer_pid       pid of the publishing flagd
          4  writer_start_ns  that process's start time (wall clock), guards against pid reuse
          5  published_at_ns  when ``version`` was published
          6  last_fetch_ns    last successful upstream fetch (including "not modified")
          7  heartbeat_ns     refreshed by every publish loop iteration
          8  poll_interval_ms flagd's upstream poll interval; readers warn when the heartbeat is
                              three intervals old
          9..15 flagd's health: last error, when, what fails now (``health.py``);
                  bytes 1024..2047 hold the last error's text
          16..23 cohorts: 16 cohort_version, the current cohort directory ``.k<N>`` (0 = none);
                 stored last when cohorts are published, like ``version`` for flags.
                 17..22 cohort health (W_COHORT_*: cohorts listed, not loaded, last full
                 refresh ns, refresh interval ms, failed rounds in a row, last error ns);
                 23 reserved. The formats: "cohorts" below
          24..31 transport: 24 how flags arrive now (TRANSPORT_*), 25 since when (ns);
                 26..31 reserved for the stream's health; bytes 2048..2559 its last error's text
          32..47 events: 32 the hash of the analytics API key flagd delivers for (0 = none,
                 :func:`analytics_key_hash`), 33 the hash of its analytics endpoint URL
                 (:func:`analytics_endpoint_hash`), 34..44 event counters (W_EVENTS_*: messages
                 received, deduplicated, events sent, failed, queue depth, workers' fallbacks,
                 messages rejected, events dropped, queue capacity, message size, counting
                 since), 45 the hash of the analytics key the queue's messages were sent for
                 (with word 33, kept when flagd stops: a later flagd with another key or
                 endpoint does not deliver them), 46..47 reserved
          48.. reserved (0)

Other names a key's files may take (all under the same ``/<prefix>.<keyhash>.`` stem):
``.k<N>`` a cohort directory, ``.c<N>`` one cohort's members, ``.q`` the event queue (a POSIX
message queue, not a file).

A version file holds one version of one key's flags. flagd writes it once
(:func:`encode_version`) and never changes it; a worker maps it read-only and answers
:class:`~amplitude_experiment.evaluation.FlagCatalog` questions straight from the mapping
(:class:`FlagTable`): looking a flag up is a bisection over key hashes, and only the flags a
worker evaluates are ever decoded. All integers are little-endian; every section starts on an
8-byte boundary. A version file::

    offset 0     header, 64 bytes (HEADER)
                   magic b"AMPFSNP2" | format u32 = 2 | flag_count u32 | version u64 | length u64
                   | created_ns u64 | directory_length u32 | directory_crc u32 | meta_length u32
                   | order_count u32 | sequence_total u32 | reserved u32
    offset 64    directory, directory_length bytes, crc32 = directory_crc
                   meta        msgpack map (source, fetched_at_ns, poll_interval_ms, problems,
                               needs_exact_user_entry, content_digest, cohort_refs: group type ->
                               the cohort ids the flags' cohort conditions name, ...), meta_length bytes
                   key hashes  flag_count x u64, ascending (BLAKE2b-64 of the UTF-8 key)
                   positions   flag_count x u32: the storage position of each hash's flag
                   entries     flag_count x ENTRY (48 bytes), in storage order:
                               record offset u64 | record length u32 | key offset u32
                               | key length u32 | sequence start u32 | sequence length u32
                               | flags u32 (bit 0: on a dependency cycle) | digest 16 bytes
                   sequences   sequence_total x u32: per flag, the storage positions a request
                               for it alone evaluates, dependencies first
                   order       order_count x u32: the all-flags evaluation order
                   keys        the UTF-8 keys, back to back
    after it     records: each flag's config (msgpack, or JSON text where msgpack cannot hold
                 it), checked against its entry's BLAKE2b-128 digest when it is decoded

The directory's crc32 is checked once per version when the file is mapped (a 10,000-flag
directory is about 700 KB); a record is checked by its digest when a flag is first compiled.
"""

import re
import struct
import zlib
from bisect import bisect_left
from hashlib import blake2b
from typing import Any, Dict, List, Optional, Tuple

import msgpack

from ..evaluation.catalog import DIGEST_SIZE, PlannedCatalog, content_digest, decode_flag, flag_digest

__all__ = ["DATA_FORMAT", "analytics_endpoint_hash", "analytics_key_hash", "queue_name", "DATA_MAGIC", "ENTRY", "HEADER", "INDEX_SIZE", "MAX_VERSION", "RETIRED", "FlagTable",
           "IndexState", "TableCorruptError", "VersionImage", "encode_version", "index_name", "key_hash",
           "lookup_hash", "parse_version", "version_name"]

# --- names --------------------------------------------------------------------------------------


def key_hash(deployment_key: str) -> str:
    """Short stable hex digest of the deployment key, in every file name (the key stays secret)."""
    return blake2b(deployment_key.encode("utf-8"), digest_size=8, person=b"amp-flagd").hexdigest()


def index_name(prefix: str, deployment_key: str) -> str:
    """Name of this key's index (with the leading slash)."""
    return "/%s.%s.idx" % (prefix, key_hash(deployment_key))


def version_name(prefix: str, deployment_key: str, version: int) -> str:
    """Name of the version file holding ``version`` for this key."""
    return "/%s.%s.v%d" % (prefix, key_hash(deployment_key), version)


def analytics_key_hash(api_key: str) -> int:
    """The u64 a worker compares with index word 32 to learn whether flagd delivers its events
    (0 is never returned: it means "no key")."""
    digest = blake2b(api_key.encode("utf-8"), digest_size=8, person=b"amp-events").digest()
    return int.from_bytes(digest, "little") or 1


def queue_name(prefix: str, deployment_key: str) -> str:
    """Name of this key's event queue (a POSIX message queue, with the leading slash)."""
    return "/%s.%s.q" % (prefix, key_hash(deployment_key))


def analytics_endpoint_hash(url: str) -> int:
    """The u64 a worker compares with index word 33: the analytics endpoint flagd sends to (its full
    URL, a trailing slash ignored; 0 is never returned)."""
    digest = blake2b(url.rstrip("/").encode("utf-8"), digest_size=8, person=b"amp-endpoint").digest()
    return int.from_bytes(digest, "little") or 1


def parse_version(text: str) -> Optional[int]:
    """The version a ``v<N>`` name holds, or None when it is not one a writer could have made
    (not canonical decimal, 0, or above :data:`MAX_VERSION`)."""
    if not _VERSION_TEXT.match(text):
        return None
    version = int(text)
    return version if version <= MAX_VERSION else None


# --- the index ----------------------------------------------------------------------------------

INDEX_MAGIC = int.from_bytes(b"AMPFIDX1", "little")
INDEX_LAYOUT = 1
INDEX_SIZE = 4096
INDEX_WORDS = INDEX_SIZE // 8
# Word positions in the index.
W_MAGIC, W_LAYOUT, W_VERSION, W_PID, W_START, W_PUBLISHED, W_FETCH, W_HEARTBEAT, W_POLL = range(9)
#: Cohorts: the current cohort directory (its own publish point); 17..23 reserved for cohorts.
W_COHORT_VERSION = 16
#: How flags arrive (TRANSPORT_*) and since when; 26..31 reserved for the stream.
W_TRANSPORT, W_TRANSPORT_SINCE = 24, 25
TRANSPORT_NONE, TRANSPORT_POLL, TRANSPORT_STREAM, TRANSPORT_FILE = range(4)
#: Events: hashes of the analytics API key and endpoint flagd delivers for; 34..47 event counters.
W_ANALYTICS_KEY, W_ANALYTICS_ENDPOINT = 32, 33
#: The event counters flagd keeps in words 34..44 (``flagd/events.py`` writes them, ``status`` reads).
W_EVENTS_RECEIVED, W_EVENTS_DEDUPLICATED, W_EVENTS_SENT, W_EVENTS_FAILED, W_EVENTS_QUEUE_DEPTH, \
    W_EVENTS_WORKER_FALLBACKS, W_EVENTS_REJECTED, W_EVENTS_DROPPED, W_EVENTS_QUEUE_CAPACITY, \
    W_EVENTS_MESSAGE_SIZE, W_EVENTS_SINCE = range(34, 45)
#: The hash of the analytics key the event queue's messages were sent for (word 33 their endpoint's).
W_EVENTS_QUEUE_KEY = 45
#: Stored in the version word by :func:`remove_all` before unlinking, so mapped readers re-open.
RETIRED = 2 ** 64 - 1
#: The highest version number a writer uses, or accepts from a ``v<N>`` name; far below RETIRED.
MAX_VERSION = 2 ** 63 - 1
#: A version in a name: decimal, no sign, no leading zero, at most 19 digits (MAX_VERSION has 19).
_VERSION_TEXT = re.compile(r"[1-9][0-9]{0,18}\Z")


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

    @classmethod
    def of(cls, words: Any) -> "IndexState":
        """What ``words`` (the index as u64 words) say now, read one by one: for reports, not a
        consistent snapshot. RETIRED reads as version 0."""
        version = words[W_VERSION]
        return cls(0 if version == RETIRED else version, words[W_PID], words[W_START], words[W_PUBLISHED],
                   words[W_FETCH], words[W_HEARTBEAT], words[W_POLL])


# --- version files ------------------------------------------------------------------------------

DATA_MAGIC = b"AMPFSNP2"
DATA_FORMAT = 2
#: magic, format, flag_count, version, length, created_ns, directory_length, directory_crc,
#: meta_length, order_count, sequence_total, reserved -> 64 bytes.
HEADER = struct.Struct("<8sIIQQQIIIIII")
assert HEADER.size == 64
#: record offset, record length, key offset, key length, sequence start, sequence length, flags, digest.
ENTRY = struct.Struct("<QIIIIII%ds" % DIGEST_SIZE)
assert ENTRY.size == 48
ON_CYCLE = 1
#: A version file larger than this is refused by the writer (u32 offsets inside the directory).
MAX_DIRECTORY = 2 ** 32 - 1


#: Meta entries the layout adds to what the writer gives (see :func:`encode_version`).
_TABLE_META = frozenset(("problems", "needs_exact_user_entry", "content_digest", "cohort_refs"))


class TableCorruptError(ValueError):
    """A version file's header, directory or a record does not hold what the layout promises."""


def lookup_hash(key: str) -> int:
    """The 64-bit hash a key is found by (collisions are resolved by comparing the keys)."""
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _pad(size: int) -> int:
    return (size + 7) & ~7


class VersionImage:
    """A version file's bytes but for the header's version and time: what flagd writes per publish."""

    __slots__ = ("body", "flag_count", "meta_length", "order_count", "sequence_total", "directory_length",
                 "directory_crc")

    def __init__(self, body: bytes, flag_count: int, meta_length: int, order_count: int, sequence_total: int,
                 directory_length: int, directory_crc: int):
        self.body = body
        self.flag_count = flag_count
        self.meta_length = meta_length
        self.order_count = order_count
        self.sequence_total = sequence_total
        self.directory_length = directory_length
        self.directory_crc = directory_crc

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return HEADER.size + len(self.body)

    def header(self, version: int, created_ns: int) -> bytes:
        return HEADER.pack(DATA_MAGIC, DATA_FORMAT, self.flag_count, version, self.size, created_ns,
                           self.directory_length, self.directory_crc, self.meta_length, self.order_count,
                           self.sequence_total, 0)


def encode_version(catalog: PlannedCatalog, meta: Dict[str, Any]) -> VersionImage:
    """Lay out a planned config and its ``meta`` (a msgpack-able map) as a version file.

    The catalog's problems, ``needs_exact_user_entry`` and content digest are added to ``meta``.
    """
    keys = list(catalog.keys())
    position_of = {key: position for position, key in enumerate(keys)}
    meta = dict(meta)
    meta["problems"] = list(catalog.problems)
    meta["needs_exact_user_entry"] = bool(catalog.needs_exact_user_entry)
    meta["content_digest"] = content_digest(catalog)
    meta["cohort_refs"] = {group_type: list(ids) for group_type, ids in getattr(catalog, "cohort_refs", {}).items()}
    meta_bytes = msgpack.packb(meta, use_bin_type=True)
    encoded_keys = [key.encode("utf-8", "surrogatepass") for key in keys]
    sequences: List[int] = []
    spans: List[Tuple[int, int]] = []
    for key in keys:
        sequence = catalog.sequence(key) or ()
        spans.append((len(sequences), len(sequence)))
        sequences.extend(position_of[member] for member in sequence)
    order = [position_of[key] for key in catalog.evaluation_order()]
    count = len(keys)

    hashes_at = _pad(len(meta_bytes))
    positions_at = hashes_at + 8 * count
    entries_at = _pad(positions_at + 4 * count)
    sequences_at = entries_at + ENTRY.size * count
    order_at = sequences_at + 4 * len(sequences)
    keys_at = _pad(order_at + 4 * len(order))
    directory_length = _pad(keys_at + sum(map(len, encoded_keys)))
    if HEADER.size + directory_length > MAX_DIRECTORY:
        raise ValueError("a flag directory of %d bytes does not fit a version file" % directory_length)

    directory = bytearray(directory_length)
    directory[0:len(meta_bytes)] = meta_bytes
    lookup = sorted((lookup_hash(key), position) for position, key in enumerate(keys))
    struct.pack_into("<%dQ" % count, directory, hashes_at, *(hashed for hashed, _ in lookup))
    struct.pack_into("<%dI" % count, directory, positions_at, *(position for _, position in lookup))
    struct.pack_into("<%dI" % len(sequences), directory, sequences_at, *sequences)
    struct.pack_into("<%dI" % len(order), directory, order_at, *order)
    records: List[bytes] = []
    record_offset = HEADER.size + directory_length
    key_offset = 0
    for position, key in enumerate(keys):
        record = catalog.records[key]
        start, length = spans[position]
        flags = ON_CYCLE if key in catalog.cycle_keys else 0
        ENTRY.pack_into(directory, entries_at + ENTRY.size * position, record_offset, len(record), key_offset,
                        len(encoded_keys[position]), start, length, flags, catalog.digests[key])
        directory[keys_at + key_offset:keys_at + key_offset + len(encoded_keys[position])] = encoded_keys[position]
        key_offset += len(encoded_keys[position])
        record_offset += len(record)
        records.append(record)
    body = bytes(directory) + b"".join(records)
    return VersionImage(body, count, len(meta_bytes), len(order), len(sequences), directory_length,
                        zlib.crc32(directory))


class FlagTable:
    """One mapped version file, read in place: a :class:`~amplitude_experiment.evaluation.FlagCatalog`.

    Holds the mapping (through ``buffer``) for as long as the table is referenced: the pages of a
    version flagd has since unlinked stay readable until the last flag set using it is dropped.

    :raises TableCorruptError: (from the constructor) the header or the directory is not valid.
    """

    __slots__ = ("name", "version", "created_ns", "size", "meta", "problems", "needs_exact_user_entry",
                 "cohort_refs", "_buffer", "_count", "_hashes", "_positions", "_entries_at", "_sequences", "_order",
                 "_keys_at", "_key_cache", "_mapping", "__weakref__")

    def __init__(self, buffer: Any, name: str, version: int, mapping: Any = None):
        view = memoryview(buffer)
        size = len(view)
        if size < HEADER.size:
            raise TableCorruptError("%s is %d bytes, shorter than its header" % (name, size))
        (magic, fmt, count, stored_version, length, created_ns, directory_length, directory_crc, meta_length,
         order_count, sequence_total, _) = HEADER.unpack_from(view, 0)
        if magic != DATA_MAGIC:
            if magic[:7] == DATA_MAGIC[:7]:
                raise TableCorruptError(
                    "%s is a format-%s version file; this SDK reads format %d: upgrade the SDK or flagd so "
                    "both speak the same format" % (name, magic[7:].decode("ascii", "replace"), DATA_FORMAT))
            raise TableCorruptError("%s has magic %r, expected %r" % (name, magic, DATA_MAGIC))
        if fmt != DATA_FORMAT:
            raise TableCorruptError("%s has format %d, this SDK reads format %d" % (name, fmt, DATA_FORMAT))
        if stored_version != version:
            raise TableCorruptError("%s says version %d" % (name, stored_version))
        if length != size:
            raise TableCorruptError("%s says it is %d bytes, it is %d" % (name, length, size))
        directory_end = HEADER.size + directory_length
        hashes_at = HEADER.size + _pad(meta_length)
        positions_at = hashes_at + 8 * count
        entries_at = _pad(positions_at + 4 * count)
        sequences_at = entries_at + ENTRY.size * count
        order_at = sequences_at + 4 * sequence_total
        keys_at = _pad(order_at + 4 * order_count)
        if directory_end > size or keys_at > directory_end:
            raise TableCorruptError("%s has a directory that does not fit its %d bytes" % (name, size))
        directory = view[HEADER.size:directory_end]
        if zlib.crc32(directory) != directory_crc:
            raise TableCorruptError("%s fails its directory checksum" % name)
        try:
            meta = msgpack.unpackb(view[HEADER.size:HEADER.size + meta_length], raw=False)
        except (ValueError, msgpack.UnpackException) as error:
            raise TableCorruptError("%s has meta that does not decode: %s" % (name, error)) from None
        if not isinstance(meta, dict):
            raise TableCorruptError("%s has meta of type %s, expected a map" % (name, type(meta).__name__))
        self.name = name
        self.version = version
        self.created_ns = created_ns
        self.size = size
        self.meta: Dict[str, Any] = meta
        self.problems: List[str] = [str(problem) for problem in meta.get("problems") or ()]
        self.needs_exact_user_entry = bool(meta.get("needs_exact_user_entry"))
        refs = meta.get("cohort_refs")
        #: Group type -> cohort ids the flags' cohort conditions name (flagd's plan, stored in meta).
        self.cohort_refs: Dict[str, Tuple[str, ...]] = {
            str(group_type): tuple(str(i) for i in ids) for group_type, ids in refs.items()
            if isinstance(ids, list)} if isinstance(refs, dict) else {}
        self._mapping = mapping
        self._buffer = view
        self._count = count
        self._hashes = view[hashes_at:positions_at].cast("Q")
        self._positions = view[positions_at:positions_at + 4 * count].cast("I")
        self._entries_at = entries_at
        self._sequences = view[sequences_at:order_at].cast("I")
        self._order = view[order_at:order_at + 4 * order_count].cast("I")
        self._keys_at = keys_at
        self._key_cache: Dict[int, str] = {}

    # -- FlagCatalog

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return True  # a published version is something, even with no flags: ``if snapshot:`` means "one exists"

    def keys(self) -> List[str]:
        return [self._key(position) for position in range(self._count)]

    def digest(self, key: str) -> Optional[bytes]:
        position = self.position(key)
        return None if position is None else self._entry(position)[7]

    def sequence(self, key: str) -> Optional[Tuple[str, ...]]:
        position = self.position(key)
        if position is None:
            return None
        entry = self._entry(position)
        if entry[6] & ON_CYCLE:
            return None
        start, length = entry[4], entry[5]
        return tuple(self._key(member) for member in self._sequences[start:start + length])

    def evaluation_order(self) -> Tuple[str, ...]:
        return tuple(self._key(position) for position in self._order)

    def config(self, key: str) -> Any:
        position = self.position(key)
        if position is None:
            raise KeyError(key)
        return self.config_at(position)

    # -- by position

    def position(self, key: str) -> Optional[int]:
        """The storage position of ``key``, or None: a bisection over the mapped key hashes."""
        hashed = lookup_hash(key)
        hashes = self._hashes
        index = bisect_left(hashes, hashed)
        while index < self._count and hashes[index] == hashed:
            position = self._positions[index]
            if self._key(position) == key:
                return position
            index += 1
        return None

    def config_at(self, position: int) -> Any:
        """The config of the flag at ``position``, checked against its digest.

        :raises TableCorruptError: the record is out of bounds, fails its digest or does not decode.
        """
        offset, length = self._entry(position)[0:2]
        if offset + length > self.size:
            raise TableCorruptError("%s: record %d lies outside the file" % (self.name, position))
        record = self._buffer[offset:offset + length]
        if flag_digest(record) != self._entry(position)[7]:
            raise TableCorruptError("%s: the record of flag %r fails its digest" % (self.name, self._key(position)))
        try:
            return decode_flag(record)
        except ValueError as error:
            raise TableCorruptError("%s: %s" % (self.name, error)) from None

    def _entry(self, position: int) -> Tuple[Any, ...]:
        return ENTRY.unpack_from(self._buffer, self._entries_at + ENTRY.size * position)

    def _key(self, position: int) -> str:
        key = self._key_cache.get(position)
        if key is None:
            entry = self._entry(position)
            start = self._keys_at + entry[2]
            key = str(self._buffer[start:start + entry[3]], "utf-8", "surrogatepass")
            self._key_cache[position] = key
        return key

    def flags(self) -> List[Any]:
        """Every flag config in storage order (``amplitude-flagd dump``, tests)."""
        return [self.config_at(position) for position in range(self._count)]

    @property
    def document(self) -> Dict[str, Any]:
        """What the writer was given: its meta entries and ``"flags"``, every config decoded
        (``amplitude-flagd dump``, tests)."""
        document = {key: value for key, value in self.meta.items() if key not in _TABLE_META}
        document["flags"] = self.flags()
        return document

    def __repr__(self) -> str:
        return "FlagTable(%s, version=%d, flags=%d, size=%d)" % (self.name, self.version, self._count, self.size)


# --- cohorts ------------------------------------------------------------------------------------
#
# A cohort directory ``.k<N>`` lists the cohorts flagd holds for the key; each cohort's members
# live in an immutable member file ``.c<M>`` that the directory names by M. Both are written
# whole before anything names them and never change; numbers are never reused. Index word 16
# (W_COHORT_VERSION) names the current directory and is stored last: THE cohorts' publish point.
# A changed cohort costs one new member file and a new (small) directory; the other member files
# and every flag version stay as they are.
#
# cohort directory ``.k<N>``:
#     offset 0   header, 64 bytes (COHORT_HEADER)
#                  magic b"AMPFCDR1" | format u32 = 1 | body crc32 u32 | number u64 (N) | length u64
#                  | created_ns u64 | body_length u64 | reserved 16 bytes
#     offset 64  body: msgpack map {"cohorts": [{"id", "group_type", "size", "last_modified",
#                  "members" (M, 0 = none loaded), "fetched_at_ns", "error", "error_at_ns"}, ...],
#                  ...meta (source, interval_ms)}
#
# member file ``.c<M>``:
#     offset 0   header, 64 bytes (COHORT_HEADER)
#                  magic b"AMPFCMB1" | format u32 = 1 | crc32 of the rest u32 | number u64 (M)
#                  | length u64 | created_ns u64 | count u32 | fence bits u32 (B) | hash key 16 bytes
#     offset 64  fences: 2**B + 1 x u32 (padded to 8 bytes): fences[i] is the position of the first
#                  member whose high half's top B bits are >= i, so a lookup bisects only
#                  fences[b]..fences[b+1] (about 2 to 4 members)
#     then       high halves: count x u64, ascending
#     then       low halves:  count x u64, parallel (sorted by (high, low))
#
# A member id is stored as the 128-bit BLAKE2b hash of its UTF-8 bytes, salted with the file's
# hash key: 16 random bytes the writer draws once and stores in each header (BLAKE2b's salt, not
# its key: a key costs a second compression per lookup; unpredictable either way, so no one can
# aim ids at a collision beforehand). See :func:`member_hash`. The hash is split into two u64
# halves. A worker bisects the high halves in place (a memoryview of the mapping, nothing copied)
# and confirms on the low half. A lookup of someone who is not a member is a false positive only
# when all 128 bits of the hash equal a member's: probability at most n / 2**128 per lookup for a
# cohort of n members
# (3e-33 for a million), far below 1e-12.

COHORT_DIRECTORY_MAGIC = b"AMPFCDR1"
COHORT_MEMBERS_MAGIC = b"AMPFCMB1"
COHORT_FORMAT = 1
#: The header of both cohort files (see above): magic, format, crc, number, length, created_ns,
#: count (cohorts or members), fence bits (member files), 16 bytes (the member file's hash key).
COHORT_HEADER = struct.Struct("<8sIIQQQII16s")
assert COHORT_HEADER.size == 64
#: Index words 17..23: cohort health, written by flagd, read by status and workers.
W_COHORT_COUNT, W_COHORT_MISSING, W_COHORT_REFRESHED, W_COHORT_INTERVAL, W_COHORT_FAILURES, W_COHORT_ERROR_AT = \
    range(17, 23)
_HASH_KEY_SIZE = 16
_LOW_MASK = 2 ** 64 - 1


#: A loaded cohort whose last successful download is older than this many cohort refresh
#: intervals is *stale* (served as it was; poll mode, workers' status and flagd's status agree).
COHORT_STALE_INTERVALS = 2


def cohort_entry_stale(entry: Dict[str, Any], now_ns: int, default_interval_ms: int = 60000) -> bool:
    """Whether a cohort directory entry is loaded and stale (:data:`COHORT_STALE_INTERVALS`)."""
    if not entry.get("members"):
        return False
    fetched = entry.get("fetched_at_ns") or 0
    interval_ns = (entry.get("interval_ms") or default_interval_ms) * 1_000_000
    return not fetched or now_ns - fetched > COHORT_STALE_INTERVALS * interval_ns


def cohort_directory_name(prefix: str, deployment_key: str, number: int) -> str:
    """Name of cohort directory ``number`` for this key (with the leading slash)."""
    return "/%s.%s.k%d" % (prefix, key_hash(deployment_key), number)


def cohort_members_name(prefix: str, deployment_key: str, number: int) -> str:
    """Name of member file ``number`` for this key (with the leading slash)."""
    return "/%s.%s.c%d" % (prefix, key_hash(deployment_key), number)


def salted_hasher(hash_key: bytes) -> Any:
    """The BLAKE2b state every member id of a file with ``hash_key`` is hashed from: copied per
    member (:func:`member_digest`), which skips setting up the salted state each time (a third
    of a lookup's hashing)."""
    return blake2b(digest_size=16, salt=hash_key)


def member_digest(salted: Any, member: str) -> bytes:
    """The 16-byte digest a member id is stored as, from :func:`salted_hasher`'s state."""
    state = salted.copy()
    state.update(member.encode("utf-8", "surrogatepass"))
    return state.digest()


def member_hash(hash_key: bytes, member: str) -> int:
    """The 128-bit hash a member id is stored as in a member file with ``hash_key``."""
    return int.from_bytes(member_digest(salted_hasher(hash_key), member), "big")


_HALVES = struct.Struct(">QQ").unpack


class CohortImage:
    """A cohort file's bytes but for the header's number and time."""

    __slots__ = ("magic", "body", "count", "bits", "hash_key", "crc")

    def __init__(self, magic: bytes, body: bytes, count: int, hash_key: bytes = b"\0" * _HASH_KEY_SIZE,
                 bits: int = 0):
        self.magic = magic
        self.body = body
        self.count = count
        self.bits = bits
        self.hash_key = hash_key
        self.crc = zlib.crc32(body)

    @property
    def size(self) -> int:
        return COHORT_HEADER.size + len(self.body)

    def header(self, number: int, created_ns: int) -> bytes:
        return COHORT_HEADER.pack(self.magic, COHORT_FORMAT, self.crc, number, self.size, created_ns, self.count,
                                  self.bits, self.hash_key)


def encode_members(member_ids: Any, hash_key: bytes) -> CohortImage:
    """Lay out a cohort's member ids (an iterable of str) as a member file's body."""
    import array

    # Sorting the big-endian digests as bytes sorts them by (high, low): no Python int per member.
    salted = salted_hasher(hash_key)
    digests = sorted({member_digest(salted, member) for member in member_ids})
    count = len(digests)
    if count >= 2 ** 32:
        raise ValueError("a cohort of %d members does not fit a member file" % count)
    halves = array.array("Q")
    if halves.itemsize != 8:  # pragma: no cover - CPython on every 64-bit platform
        raise ValueError("array 'Q' is not 8 bytes here")
    halves.frombytes(b"".join(digests))
    little = struct.pack("=Q", 1) == struct.pack("<Q", 1)
    if little:
        halves.byteswap()  # the digests' big-endian halves as numbers
    highs, lows = halves[0::2], halves[1::2]
    bits = fence_bits(count)
    shift = 64 - bits
    # fences[b]: the first member whose top ``bits`` bits are >= b (bits 0: one fence, [0, count]).
    fences = array.array("I", [bisect_left(highs, bucket << shift) for bucket in range(1 << bits)] + [count]) \
        if bits else array.array("I", [0, count])
    if not little:  # pragma: no cover - big-endian hosts: the file is little-endian
        for part in (highs, lows, fences):
            part.byteswap()
    fence_bytes = fences.tobytes()
    fence_bytes += b"\0" * (-len(fence_bytes) % 8)
    return CohortImage(COHORT_MEMBERS_MAGIC, fence_bytes + highs.tobytes() + lows.tobytes(), count, hash_key, bits)


def fence_bits(count: int) -> int:
    """Bits of the fence table of a member file of ``count`` members: about 2 to 4 members a fence
    (a million members: 2**18 fences, 1 MiB of the file, shared by every worker)."""
    return min(18, max(0, count.bit_length() - 2))


def encode_cohort_directory(cohorts: List[Dict[str, Any]], meta: Dict[str, Any]) -> CohortImage:
    """Lay out a cohort directory: ``cohorts`` (one map per cohort, see above) and ``meta``."""
    document = dict(meta)
    document["cohorts"] = cohorts
    return CohortImage(COHORT_DIRECTORY_MAGIC, msgpack.packb(document, use_bin_type=True), len(cohorts))


def _check_cohort_header(view: Any, name: str, magic: bytes, number: int) -> Tuple[Any, ...]:
    size = len(view)
    if size < COHORT_HEADER.size:
        raise TableCorruptError("%s is %d bytes, shorter than its header" % (name, size))
    fields = COHORT_HEADER.unpack_from(view, 0)
    found_magic, fmt, crc, stored_number, length = fields[:5]
    if found_magic != magic:
        raise TableCorruptError("%s has magic %r, expected %r" % (name, found_magic, magic))
    if fmt != COHORT_FORMAT:
        raise TableCorruptError("%s has format %d, this SDK reads format %d" % (name, fmt, COHORT_FORMAT))
    if stored_number != number:
        raise TableCorruptError("%s says number %d" % (name, stored_number))
    if length != size:
        raise TableCorruptError("%s says it is %d bytes, it is %d" % (name, length, size))
    if zlib.crc32(view[COHORT_HEADER.size:]) != crc:
        raise TableCorruptError("%s fails its checksum" % name)
    return fields


class CohortDirectory:
    """One mapped cohort directory, decoded: ``cohorts`` (a list of maps) and ``meta``.

    :raises TableCorruptError: the header or the body is not valid.
    """

    __slots__ = ("name", "number", "created_ns", "cohorts", "meta")

    def __init__(self, buffer: Any, name: str, number: int):
        view = memoryview(buffer)
        fields = _check_cohort_header(view, name, COHORT_DIRECTORY_MAGIC, number)
        try:
            document = msgpack.unpackb(view[COHORT_HEADER.size:], raw=False)
        except (ValueError, msgpack.UnpackException) as error:
            raise TableCorruptError("%s does not decode: %s" % (name, error)) from None
        if not isinstance(document, dict) or not isinstance(document.get("cohorts"), list):
            raise TableCorruptError("%s holds no cohort list" % name)
        self.name = name
        self.number = number
        self.created_ns = fields[5]
        self.cohorts: List[Dict[str, Any]] = [entry for entry in document.pop("cohorts") if isinstance(entry, dict)]
        self.meta: Dict[str, Any] = document


class CohortMembers:
    """One mapped member file, read in place: :meth:`contains` bisects the mapping.

    Holds the mapping (through the views) for as long as it is referenced.

    :raises TableCorruptError: (from the constructor) the header or the arrays are not valid.
    """

    __slots__ = ("name", "number", "count", "hash_key", "created_ns", "_salted", "_shift", "_fences", "_highs",
                 "_lows", "_mapping")

    def __init__(self, buffer: Any, name: str, number: int, mapping: Any = None):
        view = memoryview(buffer)
        fields = _check_cohort_header(view, name, COHORT_MEMBERS_MAGIC, number)
        count, bits = fields[6], fields[7]
        fences_at = COHORT_HEADER.size
        highs_at = fences_at + _pad(4 * ((1 << bits) + 1)) if bits <= 32 else len(view) + 1
        if bits != fence_bits(count) or highs_at + 16 * count != len(view):
            raise TableCorruptError("%s: %d members do not fit its %d bytes" % (name, count, len(view)))
        self.name = name
        self.number = number
        self.count = count
        self.hash_key: bytes = fields[8]
        self._salted = salted_hasher(self.hash_key)
        self.created_ns = fields[5]
        self._shift = 64 - bits
        self._fences = view[fences_at:fences_at + 4 * ((1 << bits) + 1)].cast("I")
        middle = highs_at + 8 * count
        self._highs = view[highs_at:middle].cast("Q")
        self._lows = view[middle:].cast("Q")
        if self._fences[-1] != count:
            raise TableCorruptError("%s: its fence table does not end at its %d members" % (name, count))
        self._mapping = mapping

    def contains_hash(self, hashed: int) -> bool:
        """Whether a member hashed to ``hashed`` (:func:`member_hash` with :attr:`hash_key`) is in the file."""
        return self.contains_halves(hashed >> 64, hashed & _LOW_MASK)

    def halves(self, member: str) -> Tuple[int, int]:
        """The (high, low) u64 halves of ``member``'s hash in this file, as lookups use it."""
        return _HALVES(member_digest(self._salted, member))

    def contains_halves(self, high: int, low: int) -> bool:
        """:meth:`contains_hash` of the hash's two halves (:meth:`halves`)."""
        highs = self._highs
        fences = self._fences
        bucket = high >> self._shift if self._shift < 64 else 0
        count = fences[bucket + 1]
        index = bisect_left(highs, high, fences[bucket], count)
        while index < count and highs[index] == high:
            if self._lows[index] == low:
                return True
            index += 1
        return False

    def contains(self, member: str) -> bool:
        return self.contains_halves(*self.halves(member))

    def __len__(self) -> int:
        return self.count
