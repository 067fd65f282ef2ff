from typing import List, Optional


class FetchOptions:
    """Per-call options of ``fetch_v2``; ``None`` leaves the server's default in place.

    By default the server tracks assignment and not exposure. Attribute names are camelCase, as in
    the reference.
    """

    def __init__(
        self,
        tracksAssignment: Optional[bool] = None,
        tracksExposure: Optional[bool] = None,
        flagKeys: Optional[List[str]] = None,
    ):
        self.tracksAssignment = tracksAssignment
        self.tracksExposure = tracksExposure
        self.flagKeys = flagKeys

    def __repr__(self) -> str:
        return "FetchOptions(tracksAssignment=%r, tracksExposure=%r, flagKeys=%r)" % (
            self.tracksAssignment,
            self.tracksExposure,
            self.flagKeys,
        )

    __str__ = __repr__
