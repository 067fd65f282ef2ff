"""Where flagd's flag configs come from: Amplitude's flag API or a local file.

A source only fetches bytes. Parsing, validation and the decision to publish belong to the daemon,
so both sources go through the same checks (and the same parser as the SDK).
"""

import logging
import random
from typing import Callable, Optional, Protocol

import requests

from amplitude_experiment.version import LIBRARY


__all__ = ["ApiSource", "Backoff", "FileSource", "FlagSource", "SourceError"]

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024 * 1024  # a bigger "flags file" is a mistake, not a config


class SourceError(Exception):
    """A fetch that produced no bytes to validate (network, HTTP status, unreadable file)."""


class FlagSource(Protocol):
    """A place flag configs are read from."""

    #: ``file:<path>`` or the server URL: what the snapshot records as its source. Never the key.
    name: str
    #: Whether failures should be retried on an exponential backoff (remote) or at the poll interval.
    backs_off: bool

    def fetch(self) -> bytes:
        """The current flag-config document, raw. :raises SourceError: when there is none."""

    def close(self) -> None:
        """Release connections; idempotent."""


class ApiSource:
    """``GET {server_url}/sdk/v2/flags?v=0`` with the reference SDK's headers (reference-sdk.md §2.8).

    One keep-alive connection, reused across polls. Not thread safe: the daemon's loop is its only user.
    """

    backs_off = True

    def __init__(self, url: str, deployment_key: str, timeout_s: float, name: str,
                 session_factory: Callable[[], requests.Session] = requests.Session):
        self.name = name
        self._url = url
        self._timeout = timeout_s
        self._headers = {
            "Authorization": "Api-Key " + deployment_key,
            "Content-Type": "application/json;charset=utf-8",
            "X-Amp-Exp-Library": LIBRARY,
        }
        self._session_factory = session_factory
        self._session: Optional[requests.Session] = None

    def fetch(self) -> bytes:
        if self._session is None:
            self._session = self._session_factory()
        try:
            response = self._session.get(self._url, headers=self._headers, timeout=self._timeout)
        except requests.RequestException as error:
            # A broken connection must not be reused for the next attempt.
            self.close()
            raise SourceError("request failed: %s" % _without_url(error, self._url)) from None
        if response.status_code != 200:
            body = response.content[:200].decode("utf-8", "replace")
            raise SourceError("HTTP %d: %s" % (response.status_code, body))
        return response.content

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


class FileSource:
    """A JSON flag list on disk, read whole on every check.

    Reading a small file is cheaper and more reliable than trusting mtimes (an edit within the
    same second, a copy that keeps the mtime); the daemon compares content anyway.
    """

    backs_off = False

    def __init__(self, path: str):
        self.name = "file:" + path
        self._path = path

    def fetch(self) -> bytes:
        try:
            with open(self._path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise SourceError("cannot read %s: %s" % (self._path, error.strerror or error)) from None
        if len(data) > MAX_FILE_BYTES:
            raise SourceError("%s is larger than %d bytes" % (self._path, MAX_FILE_BYTES))
        return data

    def close(self) -> None:
        pass


class Backoff:
    """Delays between retries of a failing remote source: doubling, capped, with jitter.

    Jitter ("equal jitter": half fixed, half random) keeps a fleet of hosts that lost the upstream at
    the same moment from retrying in lockstep.
    """

    def __init__(self, minimum_s: float, maximum_s: float, uniform: Callable[[float, float], float] = random.uniform):
        self._minimum = minimum_s
        self._maximum = max(maximum_s, minimum_s)
        self._uniform = uniform

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        base = min(self._maximum, self._minimum * (2 ** min(max(failures, 1) - 1, 30)))
        return base / 2 + self._uniform(0, base / 2)


def _without_url(error: Exception, url: str) -> str:
    """requests repeats the whole URL in its messages; the source name already says where."""
    return str(error).replace(url, "<url>")
