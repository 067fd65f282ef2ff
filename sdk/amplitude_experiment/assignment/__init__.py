"""Assignment tracking (deprecated by Amplitude in favour of exposures), under the reference's names."""

from ..tracking.assignment import Assignment, AssignmentFilter, AssignmentService, to_event
from ..tracking.dedup import DAY_MILLIS
from .assignment_config import AssignmentConfig

__all__ = ["DAY_MILLIS", "Assignment", "AssignmentConfig", "AssignmentFilter", "AssignmentService", "to_event"]
