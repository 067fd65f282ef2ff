"""CONTRACT STUB (to be replaced by the real implementation, same names and signatures).

Segment layout owner: both flagd (writer) and the SDK (reader) import from here, nothing else
computes an offset.

Names: segments are named by a hash of the deployment key, never the key itself:
    index:  /<prefix>.<keyhash>.idx          data: /<prefix>.<keyhash>.v<N>
"""

from typing import Any, Dict, Optional, Union


def key_hash(deployment_key: str) -> str:
    """Short stable hex digest of the deployment key used in segment names."""
    raise NotImplementedError


def index_name(prefix: str, deployment_key: str) -> str:
    """Name of the index segment for this key (with the leading slash)."""
    raise NotImplementedError


class Snapshot:
    """One published version: ``version``, ``created_ns``, and ``document`` (the decoded msgpack map:
    {"flags": [...flag configs in storage order...], "source": str, "fetched_at_ns": int, ...})."""

    version: int
    created_ns: int
    document: Dict[str, Any]


class IndexState:
    """What the index says: version (0 = nothing published), publisher_pid, publisher_start_ns,
    published_at_ns, last_fetch_ns, heartbeat_ns."""


class SnapshotWriter:
    """flagd's side. One per (prefix, key). Creates the index (0640, optional group), publishes
    immutable per-version data segments, refreshes the heartbeat, removes old versions and orphans."""

    def __init__(self, prefix: str, deployment_key: str, group: Optional[Union[int, str]] = None) -> None:
        raise NotImplementedError

    def publish(self, document: Dict[str, Any]) -> int:
        """Write ``document`` as a new version (msgpack) and make it current; returns the version."""
        raise NotImplementedError

    def heartbeat(self, fetched_at_ns: Optional[int] = None) -> None:
        """Refresh the heartbeat (and the last successful fetch time when given)."""
        raise NotImplementedError

    def close(self) -> None:
        """Unmap; leaves every segment in place so workers keep serving."""
        raise NotImplementedError


class SnapshotReader:
    """The SDK's side: maps read-only, never creates or unlinks. ``current_version()`` is the hot-path
    8-byte load; ``load()`` validates and decodes the current version."""

    def __init__(self, prefix: str, deployment_key: str, owner: Optional[Union[int, str]] = None) -> None:
        raise NotImplementedError

    def current_version(self) -> int:
        raise NotImplementedError

    def load(self) -> Optional[Snapshot]:
        raise NotImplementedError

    def state(self) -> IndexState:
        raise NotImplementedError
