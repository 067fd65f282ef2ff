"""A logger that drops everything, for the clients the benchmark children and reference-side scripts build.

Standard library only, so both our interpreter and the reference's (.refvenv) can import it.
"""

import logging
from typing import Optional


def quiet_logger(name: str, level: Optional[int] = None) -> logging.Logger:
    """The logger ``name``, with nothing reaching a handler or its parents; ``level`` also skips
    the records below it before they are made."""
    logger = logging.getLogger(name)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    if level is not None:
        logger.setLevel(level)
    return logger
