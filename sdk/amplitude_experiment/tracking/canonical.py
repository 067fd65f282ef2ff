"""The canonical form of an evaluation result: the dedup key and the insert-id hash input."""

import time
from typing import Any, Dict, Mapping, Optional

from .dedup import DAY_MILLIS, DedupFilter


def canonicalize(user_id: Any, device_id: Any, results: Mapping[str, Any]) -> str:
    """``"<uid> <did> "`` then ``"<flag> <variant key> "`` per result in flag-key order (docs/compatibility.md, 'Tracking events').

    Empty ids print as ``None`` and variants without a key are skipped, as in the reference, so
    insert ids computed from this string match the reference's and Amplitude deduplicates across
    a mixed fleet.
    """
    parts = [_id(user_id), _id(device_id)]
    append = parts.append
    for flag_key in sorted(results):
        variant_key = results[flag_key].key
        if variant_key is None:
            continue
        # Inlined str checks: this runs on the caller's thread for every evaluation.
        append(flag_key.strip() if type(flag_key) is str else _stripped(flag_key))
        append(variant_key.strip() if type(variant_key) is str else _stripped(variant_key))
    append("")
    return " ".join(parts)


def _id(value: Any) -> str:
    return _stripped(value) if value else "None"


def _stripped(value: Any) -> str:
    # A non-string id or key makes the reference raise AttributeError; tracking never raises.
    return (value if isinstance(value, str) else str(value)).strip()


class TrackedResult:
    """A user and the variants one evaluation gave them, stamped with the evaluation time.

    :param user: the evaluated :class:`~amplitude_experiment.User` (only read).
    :param results: flag key to :class:`~amplitude_experiment.Variant`, as ``evaluate_v2`` returned it.
    :param timestamp: milliseconds since the epoch; now when omitted.
    """

    def __init__(self, user: Any, results: Dict[str, Any], timestamp: Optional[float] = None):
        self.user = user
        self.results = results
        self.timestamp = time.time() * 1000 if timestamp is None else timestamp
        self._canonical: Optional[str] = None

    def canonicalize(self) -> str:
        """The dedup key and insert-id hash input of this result (:func:`canonicalize`)."""
        if self._canonical is None:
            self._canonical = canonicalize(self.user.user_id, self.user.device_id, self.results)
        return self._canonical


class ResultFilter:
    """Passes a result the first time its canonical form is seen within ``ttl_millis``.

    Thread-safe. Empty results never pass.
    """

    def __init__(self, size: int, ttl_millis: int = DAY_MILLIS):
        self.ttl_millis = ttl_millis
        self.cache = DedupFilter(size, ttl_millis)

    def should_track(self, result: TrackedResult) -> bool:
        """Whether to send events for ``result``; a True answer remembers it."""
        if not result.results:
            return False
        return self.cache.should_track(result.canonicalize(), result.timestamp)
