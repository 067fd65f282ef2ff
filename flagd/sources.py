"""Where flagd's flag configs come from: Amplitude's flag API or a local file.

A source only fetches bytes. Parsing, validation and the decision to publish belong to the daemon,
so both sources go through the same checks (and the same parser as the SDK).
"""

import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from amplitude_experiment._flag_api import MAX_FLAG_CONFIG_BYTES, Backoff

from .log import Quoted

if TYPE_CHECKING:
    import requests

__all__ = ["ApiSource", "Backoff", "FileSource", "FlagSource", "SourceError"]

logger = logging.getLogger(__name__)

#: How many empty answers in a row, after a config with flags, make an empty config to publish.
EMPTY_CONFIRMATIONS = 2


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
    """``GET {server_url}/sdk/v2/flags?v=0`` with the SDK's headers (docs/compatibility.md, "Flag-config polls").

    The whole request ends within ``timeout_s``, an answer over ``max_bytes`` is a failed fetch, and an
    empty flag list (``[]``) after one with flags is a failed fetch until ``EMPTY_CONFIRMATIONS`` polls
    in a row said so: one bad answer of an upstream must not empty every worker on the host at once.
    One keep-alive connection, reused across polls. Not thread safe: the daemon's loop is its only user.
    """

    backs_off = True

    def __init__(self, url: str, deployment_key: str, timeout_s: float, name: str,
                 session_factory: Optional[Callable[[], "requests.Session"]] = None,
                 max_bytes: int = MAX_FLAG_CONFIG_BYTES):
        # Imported here: flagd with a flags file never loads an HTTP library.
        import requests

        from amplitude_experiment._http import FlagConfigFetcher

        self.name = name
        self._fetcher = FlagConfigFetcher(url, deployment_key, timeout_s, max_bytes,
                                          session_factory or requests.Session)
        # Until an answer proves otherwise, assume the last config had flags: a restarted flagd
        # facing an empty answer may be sitting on a published config with flags.
        self._last_had_flags = True
        self._empty_answers = 0
        #: Whether the last answer handed out was an empty list that had to be confirmed (for ``status``).
        self.confirmed_empty = False

    def fetch(self) -> bytes:
        from amplitude_experiment._http import FlagFetchError

        try:
            body = self._fetcher.fetch()
        except FlagFetchError as error:
            raise SourceError(str(error)) from None
        if not _is_empty_list(body):
            self._last_had_flags = True
            self._empty_answers = 0
            self.confirmed_empty = False
            return body
        if not self._last_had_flags:
            return body
        self._empty_answers += 1
        if self._empty_answers < EMPTY_CONFIRMATIONS:
            raise SourceError("the API answered an empty flag list after a config with flags; it is published "
                              "only if the next %d poll(s) answer the same" % (EMPTY_CONFIRMATIONS - self._empty_answers))
        logger.warning("event=empty_config_confirmed source=%s answers=%d msg=%s", Quoted(self.name),
                       self._empty_answers, Quoted("the API answered an empty flag list %d times in a row: "
                                                   "publishing it, every worker will have no flags"
                                                   % self._empty_answers))
        self._last_had_flags = False
        self._empty_answers = 0
        self.confirmed_empty = True
        return body

    def note_config(self, body: bytes) -> None:
        """A config that came another way (flagd's stream) is now the last one: an empty answer
        after it is judged against it, not against this source's own last answer."""
        self._last_had_flags = not _is_empty_list(body)
        self._empty_answers = 0
        self.confirmed_empty = False

    def close(self) -> None:
        self._fetcher.close()


def _is_empty_list(body: bytes) -> bool:
    if len(body) > 64 or b"[" not in body:
        return False
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return False
    return parsed == []


class FileSource:
    """A JSON flag list on disk, read whole on every check.

    Reading a small file is cheaper and more reliable than trusting mtimes (an edit within the
    same second, a copy that keeps the mtime); the daemon compares content anyway.
    """

    backs_off = False

    def __init__(self, path: str, max_bytes: int = MAX_FLAG_CONFIG_BYTES):
        self.name = "file:" + path
        self._path = path
        self._max_bytes = max_bytes

    def fetch(self) -> bytes:
        try:
            with open(self._path, "rb") as handle:
                data = handle.read(self._max_bytes + 1)
        except OSError as error:
            raise SourceError("cannot read %s: %s" % (self._path, error.strerror or error)) from None
        if len(data) > self._max_bytes:
            raise SourceError("%s is larger than %d bytes" % (self._path, self._max_bytes))
        return data

    def close(self) -> None:
        pass
