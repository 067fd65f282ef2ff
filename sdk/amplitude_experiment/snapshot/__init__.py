"""Versioned flag snapshots in POSIX shared memory, by idea: ``layout`` (every byte and name),
``writer`` (flagd's side), ``reader`` (the workers' side), ``host`` (where the files live and
whom a reader trusts), ``errors``.
"""

from .errors import (
    ForeignIndexError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotPermissionError,
    WriterConflictError,
)
from .host import publisher_alive, trusted_owners
from .layout import FlagTable, IndexState, index_name, key_hash, version_name
from .reader import Snapshot, SnapshotFollower, SnapshotReader
from .writer import SnapshotWriter, remove_all

__all__ = [
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
    "publisher_alive",
    "remove_all",
    "trusted_owners",
    "version_name",
]
