"""Pure evaluation: flag JSON -> planned catalog -> compiled :class:`FlagSet`; (flag set, context) -> results.

Nothing here does I/O or logs; problems come back as values for the caller to report.
"""

from .catalog import FlagCatalog, PlannedCatalog, content_digest, decode_config, plan_flags
from .engine import evaluate
from .flags import EvaluatedVariant, FlagConfigError
from .flagset import CompiledFlagCache, FlagSet, ValidatedFlags, compile_flags

__all__ = ["CompiledFlagCache", "EvaluatedVariant", "FlagCatalog", "FlagConfigError", "FlagSet", "PlannedCatalog",
           "ValidatedFlags", "compile_flags", "content_digest", "decode_config", "evaluate", "plan_flags"]
