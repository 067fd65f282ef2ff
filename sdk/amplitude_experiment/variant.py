from typing import Any, Dict, Optional


class Variant:
    """The variant a flag gave a user.

    The first positional argument is ``value``, not ``key``. Equality compares ``key``, ``value`` and
    ``payload`` and ignores ``metadata``, as the reference does; instances are not hashable.
    """

    def __init__(
        self,
        value: Optional[str] = None,
        payload: Any = None,
        key: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ):
        self.value = value
        self.payload = payload
        self.key = key
        self.metadata = metadata

    def __eq__(self, other: object) -> bool:
        if other is None:
            return False
        return self.key == other.key and self.value == other.value and self.payload == other.payload

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Variant(key=%r, value=%r, payload=%r, metadata=%r)" % (
            self.key,
            self.value,
            self.payload,
            self.metadata,
        )

    def __str__(self) -> str:
        return "key: %s, value: %s, payload: %s, metadata:%s" % (
            self.key,
            self.value,
            self.payload,
            self.metadata,
        )
