from typing import Optional


class EvaluateOptions:
    """Per-call options of ``evaluate_v2``. Only ``tracks_exposure is True`` enables exposure events."""

    def __init__(self, tracks_exposure: Optional[bool] = None):
        self.tracks_exposure = tracks_exposure
