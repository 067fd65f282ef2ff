"""Assignment and exposure events for local evaluation (placeholder until issue 5 lands)."""

import logging
from typing import Any, Dict, Optional


class EvaluationTracker:
    """Turns evaluation results into analytics events. Never raises into evaluation."""

    def track(self, user: Any, variants: Dict[str, Any], tracks_exposure: bool) -> None:
        raise NotImplementedError

    def flush(self, timeout: Optional[float]) -> None:
        raise NotImplementedError


def build_tracker(config: Any, logger: logging.Logger) -> Optional[EvaluationTracker]:
    """A tracker for ``config.assignment_config`` / ``config.exposure_config``, or None when neither is set."""
    return None
