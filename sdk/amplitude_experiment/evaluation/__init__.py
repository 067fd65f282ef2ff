"""Pure evaluation: flag JSON -> compiled :class:`FlagSet`; (flag set, context) -> results.

Nothing here does I/O or logs; problems come back as values for the caller to report.
"""

from .engine import evaluate
from .flags import EvaluatedVariant, FlagConfigError, FlagSet, compile_flags

__all__ = ["EvaluatedVariant", "FlagConfigError", "FlagSet", "compile_flags", "evaluate"]
