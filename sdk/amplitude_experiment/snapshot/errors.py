"""Errors of the shared snapshot: every one a :class:`SnapshotError`."""

__all__ = ["ForeignIndexError", "SnapshotCorruptError", "SnapshotError", "SnapshotPermissionError",
           "WriterConflictError"]


class SnapshotError(Exception):
    """Base of every error the snapshot package raises."""


class SnapshotPermissionError(SnapshotError):
    """A shared-memory file is writable by someone other than its owner, or no trusted user owns it."""


class SnapshotCorruptError(SnapshotError):
    """A shared-memory file's header, directory or checksum does not hold what the layout promises."""


class WriterConflictError(SnapshotError):
    """Another live process publishes for this key, or the index belongs to another user."""


class ForeignIndexError(WriterConflictError):
    """The index exists and belongs to another user: squatted, or another user's flagd."""
