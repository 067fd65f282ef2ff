"""The dedup filter in front of event building: one event (set) per distinct result per day."""

import hashlib
import threading
from collections import OrderedDict

#: The reference's dedup TTL and insert-id day: 24 hours in milliseconds.
DAY_MILLIS = 24 * 60 * 60 * 1000


class DedupFilter:
    """An LRU set of canonical results with a sliding TTL (docs/compatibility.md, 'Tracking events').

    Thread-safe, unlike the reference's cache: evaluations run on many threads at once. Keys are
    stored as 16-byte digests of the canonical string, so the memory of a full cache does not grow
    with the number of flags per result. A ``capacity`` of zero or less disables deduplication.

    :param capacity: the most results remembered; the least recently seen is forgotten first.
    :param ttl_millis: how long a result stays remembered after it was last seen.
    """

    def __init__(self, capacity: int, ttl_millis: int = DAY_MILLIS):
        self.capacity = capacity
        self.ttl_millis = ttl_millis
        self._seen: "OrderedDict[bytes, float]" = OrderedDict()
        self._lock = threading.Lock()

    def should_track(self, canonical: str, now_millis: float) -> bool:
        """True the first time ``canonical`` is offered, or again once its entry expired.

        A repeat within the TTL returns False and restarts the TTL, as the reference's cache does.
        """
        if self.capacity <= 0:
            return True
        key = _digest(canonical)
        with self._lock:
            last_seen = self._seen.get(key)
            if last_seen is not None:
                if now_millis - last_seen <= self.ttl_millis:
                    self._seen[key] = now_millis
                    self._seen.move_to_end(key)
                    return False
                del self._seen[key]
            elif len(self._seen) >= self.capacity:
                self._seen.popitem(last=False)
            self._seen[key] = now_millis
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def _digest(canonical: str) -> bytes:
    # surrogatepass: a user id is any str, lone surrogates included, and must never make us raise.
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).digest()
