"""Versioned flag snapshots in POSIX shared memory: the one definition of the segment layout.

flagd writes with :class:`SnapshotWriter`; the SDK's shared mode reads with :class:`SnapshotReader`.
"""
