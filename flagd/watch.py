"""Notices a changed flags file within a second, whatever the poll interval.

A ``stat()`` every :data:`WATCH_SECONDS` costs one syscall; inotify would need a dependency or
ctypes and still miss edits through bind mounts and some network file systems. The signature
covers in-place writes (mtime, size, ctime) and editors or deploy tools that rename a new file
into place (inode). The daemon still reads the whole file and compares content before publishing.
"""

import os
from typing import Optional, Tuple

__all__ = ["FileWatch", "WATCH_SECONDS"]

#: How often the flags file is stat()ed: a change is published within this plus one read and publish.
WATCH_SECONDS = 0.25

Signature = Optional[Tuple[int, int, int, int, int]]


class FileWatch:
    """``changed()`` is True once after each change of the file at ``path`` (appearing or vanishing included)."""

    def __init__(self, path: str):
        self.path = path
        self._signature = self._stat()

    def changed(self) -> bool:
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        return True

    def _stat(self) -> Signature:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns
