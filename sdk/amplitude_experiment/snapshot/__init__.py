"""Versioned flag snapshots in POSIX shared memory: the one definition of the segment layout.

flagd writes with :class:`SnapshotWriter`; the SDK's shared mode reads with :class:`SnapshotReader`.
"""

from .segment import (
    ForeignIndexError,
    IndexState,
    SegmentCorruptError,
    SegmentPermissionError,
    Snapshot,
    SnapshotError,
    SnapshotReader,
    SnapshotWriter,
    WriterConflictError,
    index_name,
    key_hash,
    publisher_alive,
    remove_all,
)

__all__ = [
    "ForeignIndexError",
    "IndexState",
    "SegmentCorruptError",
    "SegmentPermissionError",
    "Snapshot",
    "SnapshotError",
    "SnapshotReader",
    "SnapshotWriter",
    "WriterConflictError",
    "index_name",
    "key_hash",
    "publisher_alive",
    "remove_all",
]
