from .assignment_config import AssignmentConfig

__all__ = ["AssignmentConfig"]
