"""Old names of the snapshot package's parts, kept while other branches still import them."""

from .errors import ForeignIndexError, SnapshotError, WriterConflictError  # noqa: F401
from .errors import SnapshotCorruptError as SegmentCorruptError  # noqa: F401
from .errors import SnapshotPermissionError as SegmentPermissionError  # noqa: F401
from .host import (  # noqa: F401
    DEFAULT_FLAGD_USER,
    SHM_DIR,
    list_published,
    list_versions,
    publisher_alive,
    trusted_owners,
)
from .host import FILE_MODE as SEGMENT_MODE  # noqa: F401
from .layout import (  # noqa: F401
    INDEX_SIZE,
    MAX_VERSION,
    RETIRED,
    W_HEARTBEAT,
    W_POLL,
    W_VERSION,
    IndexState,
    index_name,
    key_hash,
    parse_version,
)
from .layout import version_name as data_name  # noqa: F401
from .reader import OPEN_ATTEMPTS, Snapshot, SnapshotReader  # noqa: F401
from .writer import KEEP_PREVIOUS, SnapshotWriter, remove_all, remove_by_key_hash  # noqa: F401
