"""Where a local client's flags come from: the seam between the client and its flag sources.

The client asks ``current()`` on every evaluation, so implementations keep it to attribute loads
(and, in shared mode, one 8-byte read of the file index).
"""

import logging
from typing import Any, Dict, Optional, Protocol

from ..evaluation import FlagSet
from ._poller import PollingFlagSource
from ._shared_source import AutoFlagSource, SharedSnapshotSource
from .config import LocalEvaluationConfig


class FlagSource(Protocol):
    """Supplies the compiled flags a client evaluates. Implementations are thread- and fork-safe."""

    def start(self) -> None:
        """Load the first flags (waiting for them as the source's contract says) and begin updating."""

    def current(self) -> Optional[FlagSet]:
        """The newest flags, or ``None`` before any were loaded. Called on every evaluation."""

    def stop(self) -> None:
        """Stop updating; idempotent."""

    def status(self) -> Dict[str, Any]:
        """What the source is and how fresh its flags are, for operators and health checks."""


def build_flag_source(api_key: str, config: LocalEvaluationConfig, logger: logging.Logger) -> FlagSource:
    """The source ``config.flag_source`` asks for: "poll", "flagd" (shared snapshot only) or "auto".

    With ``stream_updates`` the process's own updates come from the flag stream (polling as its
    fallback); in shared mode flagd streams for the host instead (``amplitude-flagd run --stream``).
    """
    if config.flag_source == "poll":
        return _own_source(api_key, config, logger)
    from .._coexist import conflict_message

    conflict = conflict_message()
    if conflict:
        logger.warning("[Experiment] %s", conflict.split(": ", 1)[1])
    if config.flag_source == "flagd":
        return SharedSnapshotSource(api_key, config, logger)
    return AutoFlagSource(api_key, config, logger, poller=_own_source(api_key, config, logger))


def _own_source(api_key: str, config: LocalEvaluationConfig, logger: logging.Logger) -> Any:
    """What this process runs when it fetches flags itself: the poller, or the stream over it."""
    if config.stream_updates:
        from ._streamer import StreamingFlagSource

        return StreamingFlagSource(api_key, config, logger)
    return PollingFlagSource(api_key, config, logger)

