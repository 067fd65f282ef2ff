"""Amplitude's flag-config API as both pollers use it (the SDK's and flagd's): where it is, which
headers a poll sends, how big an answer may be, and how failed polls are spaced.

No HTTP library is imported here, so flagd reads these values without loading one; the request
itself is :class:`amplitude_experiment._http.FlagConfigFetcher`.
"""

import random
from typing import Callable, Dict

from .version import LIBRARY

#: The flag-config hosts of Amplitude's US and EU data centers (docs/compatibility.md, "Hosts").
DEFAULT_SERVER_URL = "https://api.lab.amplitude.com"
EU_SERVER_URL = "https://flag.lab.eu.amplitude.com"
#: The poll path, appended to a server URL without its trailing slash.
FLAGS_PATH = "/sdk/v2/flags?v=0"
#: The shared-memory namespace flagd publishes under and workers read by default (``--shm-prefix``).
DEFAULT_SHM_PREFIX = "amplitude-flagd"
#: Amplitude's flag-config stream (Server-Sent Events, docs/streaming.md): hosts and path.
DEFAULT_STREAM_URL = "https://stream.lab.amplitude.com"
EU_STREAM_URL = "https://stream.lab.eu.amplitude.com"
STREAM_PATH = "/sdk/stream/v1/flags"
#: A stream event whose data is one space only says "still here".
KEEP_ALIVE = " "
#: No stream event (keep-alives included) for this long ends the connection as failed.
KEEP_ALIVE_S = 17.0
#: A stream connection is renewed quietly after this long, plus up to the jitter.
MAX_CONNECTION_S = 900.0
MAX_CONNECTION_JITTER_S = 5.0
#: After a failed stream connection the stream is tried again after about this long (see stream_retry_delay).
STREAM_RETRY_S = 15.0
STREAM_RETRY_JITTER_S = 1.0
#: The longest wait between stream attempts after many failures in a row.
MAX_STREAM_RETRY_S = 120.0
#: A flag-config document larger than this is a fault (of the server, the proxy or the file), not a config.
MAX_FLAG_CONFIG_BYTES = 64 * 1024 * 1024
#: The header naming the SDK, on every request to Amplitude's APIs (flag configs and cohorts alike).
LIBRARY_HEADER = "X-Amp-Exp-Library"


def flag_config_headers(deployment_key: str) -> Dict[str, str]:
    """The headers of a flag-config poll, as Amplitude's SDK sends them."""
    return {
        "Authorization": "Api-Key " + deployment_key,
        "Content-Type": "application/json;charset=utf-8",
        LIBRARY_HEADER: LIBRARY,
    }


class Backoff:
    """Delays between retries of a failing poll: doubling from ``minimum_s``, capped at ``maximum_s``, jittered.

    ``jitter`` is the randomised fraction of each delay: the delay lies in ``[base * (1 - jitter), base]``.
    Jitter keeps a fleet of processes that lost the upstream at the same moment from retrying in lockstep.
    """

    def __init__(self, minimum_s: float, maximum_s: float, jitter: float = 0.5,
                 uniform: Callable[[float, float], float] = random.uniform):
        self._minimum = minimum_s
        self._maximum = max(maximum_s, minimum_s)
        self._jitter = jitter
        self._uniform = uniform

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        base = min(self._maximum, self._minimum * (2 ** min(max(failures, 1) - 1, 30)))
        return base * (1 - self._jitter) + self._uniform(0, base * self._jitter)


def stream_retry_delay(failures: int, base_s: float = STREAM_RETRY_S, jitter_s: float = STREAM_RETRY_JITTER_S,
                       maximum_s: float = MAX_STREAM_RETRY_S,
                       uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the next stream attempt after ``failures`` failed ones in a row (1-based):
    ``base_s`` doubling per failure up to ``maximum_s``, plus or minus up to ``jitter_s`` (so a fleet
    that lost the stream at once does not reconnect in lockstep)."""
    base = min(max(maximum_s, base_s), base_s * (2 ** min(max(failures, 1) - 1, 20)))
    return max(0.0, base + uniform(-jitter_s, jitter_s))
