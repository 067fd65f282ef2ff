"""Amplitude's cohort download API as the SDK's cohort sync and flagd use it (docs/cohorts.md).

``GET <cohort server>/sdk/v1/cohort/<id>?maxCohortSize=<n>[&lastModified=<ms>]`` with Basic auth
of the project's analytics API key and secret key. 200 is the cohort (JSON: ``cohortId``,
``groupType``, ``lastModified``, ``size``, ``memberIds``), 204 "not modified since lastModified",
202 "not ready yet", 413 "larger than maxCohortSize", 429 "slow down".

Unlike Amplitude's SDK, one download never outlives its time limit: 202, 429, 5xx and transport
errors are retried every :data:`RETRY_DELAY_S` only while the limit allows (and at most
:data:`MAX_COUNTED_ERRORS` error answers), then the download fails with a :class:`CohortDownloadError`
that says why; the caller retries later on its own backoff.
"""

import base64
import json
import threading
import time
from typing import Any, Callable, FrozenSet, NamedTuple, Optional
from urllib.parse import quote

from ._flag_api import LIBRARY_HEADER
from .version import LIBRARY

__all__ = ["COHORT_PATH", "DEFAULT_COHORT_SERVER_URL", "EU_COHORT_SERVER_URL", "MIN_COHORT_POLLING_INTERVAL_MILLIS",
           "Cohort", "CohortDownloadError", "CohortFetcher", "cohort_headers"]

DEFAULT_COHORT_SERVER_URL = "https://cohort-v2.lab.amplitude.com"
EU_COHORT_SERVER_URL = "https://cohort-v2.lab.eu.amplitude.com"
#: Cohorts are refreshed at most this often (a shorter interval is raised to it).
MIN_COHORT_POLLING_INTERVAL_MILLIS = 60000
DEFAULT_MAX_COHORT_SIZE = 2147483647
COHORT_PATH = "/sdk/v1/cohort/"
#: Pause between two attempts of one download (202, 429, an error answer or no answer).
RETRY_DELAY_S = 0.1
#: Error answers (not 202, not 429) after which one download gives up.
MAX_COUNTED_ERRORS = 3
#: A cohort answer larger than this is a fault, not a cohort (a million ids is about 30 MB).
MAX_COHORT_BYTES = 1024 * 1024 * 1024


class Cohort(NamedTuple):
    """One downloaded cohort. ``member_ids``: user ids for group type ``"User"``, group names otherwise."""

    cohort_id: str
    group_type: str
    last_modified: int
    size: int
    member_ids: FrozenSet[str]


class CohortDownloadError(Exception):
    """A cohort download that gave no cohort. ``kind``: ``too_large`` (413 or more members than
    the maximum), ``not_ready`` (202 until the time limit), ``http`` (an error status),
    ``transport`` (no answer, or too slow), ``garbage`` (200 with a body that is not a cohort)."""

    def __init__(self, kind: str, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.kind = kind
        self.status = status


def cohort_headers(api_key: str, secret_key: str) -> dict:
    """The headers of a cohort download, as Amplitude's SDK sends them."""
    token = base64.b64encode(("%s:%s" % (api_key, secret_key)).encode("utf-8")).decode("ascii")
    return {"Authorization": "Basic " + token, LIBRARY_HEADER: LIBRARY}


def parse_cohort(body: bytes) -> Cohort:
    """The cohort a 200 answer holds. :raises CohortDownloadError: (``garbage``) when it holds none."""
    try:
        document = json.loads(body)
        members = document["memberIds"]
        if not isinstance(members, list):
            raise TypeError("memberIds is %s, not a list" % type(members).__name__)
        cohort = Cohort(str(document["cohortId"]), str(document["groupType"]), int(document["lastModified"]),
                        int(document["size"]), frozenset(member for member in members if isinstance(member, str)))
    except (ValueError, KeyError, TypeError) as error:
        text = body[:120].decode("utf-8", "replace")
        raise CohortDownloadError("garbage", "answered 200 with a body that is not a cohort (%s: %s): %r"
                                  % (type(error).__name__, error, text)) from None
    return cohort


class CohortFetcher:
    """Downloads cohorts from ``server_url`` (a base URL, e.g. an evaluation-proxy's), each within
    ``timeout_s``. Thread-safe: each thread uses its own keep-alive connection."""

    def __init__(self, server_url: str, api_key: str, secret_key: str, max_cohort_size: int = DEFAULT_MAX_COHORT_SIZE,
                 timeout_s: float = 10.0, session_factory: Optional[Callable[[], Any]] = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 max_bytes: int = MAX_COHORT_BYTES):
        self.base_url = server_url.rstrip("/")
        self.max_cohort_size = max_cohort_size
        self._headers = cohort_headers(api_key, secret_key)
        self._secrets = [secret for secret in (secret_key, api_key, self._headers["Authorization"][6:]) if secret]
        self._timeout = timeout_s
        self._session_factory = session_factory
        self._sleep = sleep
        self._monotonic = monotonic
        self._max_bytes = max_bytes
        self._local = threading.local()
        #: Requests sent so far (every attempt), for status and tests.
        self.requests = 0

    def url(self, cohort_id: str, last_modified: Optional[int] = None) -> str:
        url = "%s%s%s?maxCohortSize=%d" % (self.base_url, COHORT_PATH, quote(cohort_id, safe=""), self.max_cohort_size)
        if last_modified is not None:
            url += "&lastModified=%d" % last_modified
        return url

    def download(self, cohort_id: str, last_modified: Optional[int] = None) -> Optional[Cohort]:
        """The cohort, or None when it did not change since ``last_modified`` (204).

        :raises CohortDownloadError: saying why there is no cohort; never holds the credentials.
        """
        from ._http import FlagFetchError

        deadline = self._monotonic() + self._timeout
        url = self.url(cohort_id, last_modified)
        errors = 0
        while True:
            failure: CohortDownloadError
            self.requests += 1
            try:
                status, body = self._fetcher().get(url)
            except FlagFetchError as error:
                failure = CohortDownloadError("transport", self._redact(str(error)))
                errors += 1
            else:
                if status == 200:
                    cohort = parse_cohort(body)
                    if len(cohort.member_ids) > self.max_cohort_size:
                        raise CohortDownloadError("too_large", "cohort %s has %d members, more than the maximum "
                                                  "cohort size of %d" % (cohort_id, len(cohort.member_ids),
                                                                         self.max_cohort_size), 200)
                    return cohort
                if status == 204:
                    return None
                if status == 413:
                    raise CohortDownloadError("too_large", "cohort %s is larger than the maximum cohort size of %d "
                                              "(HTTP 413)" % (cohort_id, self.max_cohort_size), 413)
                if status == 202:
                    failure = CohortDownloadError("not_ready", "cohort %s is not ready yet (HTTP 202 until the %.1f s "
                                                  "time limit)" % (cohort_id, self._timeout), 202)
                elif status == 429:
                    failure = CohortDownloadError("http", "HTTP 429 (rate limited): %s"
                                                  % self._redact(body[:200].decode("utf-8", "replace")), 429)
                else:
                    errors += 1
                    failure = CohortDownloadError("http", "HTTP %d: %s" % (
                        status, self._redact(body[:200].decode("utf-8", "replace")) or "(empty body)"), status)
            if errors >= MAX_COUNTED_ERRORS or self._monotonic() + RETRY_DELAY_S >= deadline:
                raise failure
            self._sleep(RETRY_DELAY_S)

    def _fetcher(self) -> Any:
        fetcher = getattr(self._local, "fetcher", None)
        if fetcher is None:
            import requests

            from ._http import FlagConfigFetcher

            fetcher = FlagConfigFetcher(self.base_url, "", self._timeout, self._max_bytes,
                                        self._session_factory or requests.Session, headers=self._headers)
            self._local.fetcher = fetcher
        return fetcher

    def _redact(self, text: str) -> str:
        from ._logging import redact

        for secret in self._secrets:
            text = redact(text, secret)
        return text

    def forget_sessions(self) -> None:
        """After ``fork()``: this thread's connection is the parent's; start afresh."""
        self._local = threading.local()
