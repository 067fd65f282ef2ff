"""Versioned flag snapshots in POSIX shared memory, by idea: ``layout`` (every byte and name),
``writer`` (flagd's side), ``reader`` (the workers' side), ``host`` (where the files live and
whom a reader trusts), ``health`` (flagd's health words), ``errors``.

The shared-memory files are an index and one version file per published version; "segment"
stays the word for a flag's targeting segments (docs/shared-mode.md).
"""

from .errors import (
    ForeignIndexError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotPermissionError,
    WriterConflictError,
)
from .host import (
    DEFAULT_FLAGD_USER,
    FILE_MODE,
    SHM_DIR,
    list_published,
    list_versions,
    publisher_alive,
    trusted_owners,
)
from .layout import (
    INDEX_SIZE,
    MAX_VERSION,
    RETIRED,
    W_VERSION,
    FlagTable,
    IndexState,
    index_name,
    key_hash,
    parse_version,
    version_name,
)
from .reader import OPEN_ATTEMPTS, Snapshot, SnapshotFollower, SnapshotReader
from .writer import KEEP_PREVIOUS, SnapshotWriter, remove_all, remove_by_key_hash

__all__ = [
    "DEFAULT_FLAGD_USER",
    "FILE_MODE",
    "INDEX_SIZE",
    "KEEP_PREVIOUS",
    "MAX_VERSION",
    "OPEN_ATTEMPTS",
    "RETIRED",
    "SHM_DIR",
    "W_VERSION",
    "FlagTable",
    "ForeignIndexError",
    "IndexState",
    "Snapshot",
    "SnapshotCorruptError",
    "SnapshotError",
    "SnapshotFollower",
    "SnapshotPermissionError",
    "SnapshotReader",
    "SnapshotWriter",
    "WriterConflictError",
    "index_name",
    "key_hash",
    "list_published",
    "list_versions",
    "parse_version",
    "publisher_alive",
    "remove_all",
    "remove_by_key_hash",
    "trusted_owners",
    "version_name",
]
