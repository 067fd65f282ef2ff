"""Remote evaluation: ask Amplitude's evaluation servers for a user's variants over HTTP.

The request, the results and the failure outcomes are the reference's (docs/compatibility.md, 'Remote requests', 'Remote results and retries', quirks Q2 and Q11 kept). Operational differences, all listed in docs/compatibility.md
("Remote evaluation"): every response body is read so keep-alive connections stay usable (Q1),
retries use ``fetch_retry_timeout_millis`` (Q3), the pool holds 10 connections by default,
``fetch_async_v2`` runs on a bounded executor, and bad input fails before any request is sent.
"""

import base64
import json
import logging
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Tuple

import requests
from requests.adapters import HTTPAdapter

from .._fork import FORKS
from .._http import base_url, excerpt
from ..exception import FetchException
from ..user import User
from ..variant import Variant
from ..version import LIBRARY
from .config import RemoteEvaluationConfig
from .fetch_options import FetchOptions

VARDATA_PATH = "/sdk/v2/vardata?v=0"
# Amplitude's CDN caches a remote evaluation only when the encoded user is smaller than this.
CDN_BODY_LIMIT = 8000
WORKER_NAME = "amplitude_experiment.remote_fetch"

Variants = Dict[str, Variant]


class ClientClosedError(RuntimeError):
    """A fetch on a client after ``close()``. Retryable, like the reference's closed-pool error."""


class _Rejected(Exception):
    """The first attempt got a permanent 4xx; ``fetch_v2`` answers ``None`` for it (quirk Q2)."""

    def __init__(self, error: FetchException):
        super().__init__(str(error))
        self.error = error


def is_retryable(error: Exception) -> bool:
    """Whether a failed first attempt is retried: the one place that classifies fetch errors.

    As in the reference (docs/compatibility.md, 'Remote results and retries'): 429, 5xx and non-4xx statuses are retried, other 4xx are not, and
    every error without a status (network, timeout, a body that is not the expected JSON) is.
    """
    if isinstance(error, FetchException):
        status = error.status_code
        return status < 400 or status >= 500 or status == 429
    return True


class RemoteEvaluationClient:
    """Fetches a user's variants from Amplitude's remote evaluation API.

    Thread-safe: one client serves every thread of a process, with up to
    ``connection_pool_max_size`` fetches on the wire at once over keep-alive connections.
    Fork-safe: in a child process the client builds a new HTTP session and executor on first use.

    Usage::

        >>> client = RemoteEvaluationClient("<DEPLOYMENT_KEY>")
        >>> variants = client.fetch_v2(User(user_id="u1"))
        >>> variants["checkout-redesign"].value
        'treatment'
    """

    def __init__(
        self,
        api_key: str,
        config: Optional[RemoteEvaluationConfig] = None,
    ):
        """
        :param api_key: the deployment key; it selects the flags and authorises the requests.
        :param config: settings; the defaults when ``None``.
        :raises ValueError: when the key is empty or a setting cannot be used.
        """
        if not api_key:
            raise ValueError("Experiment API key is empty")
        self.api_key = api_key
        self.config = config or RemoteEvaluationConfig()
        self.logger: logging.Logger = self.config.logger
        config = self.config
        self._url = base_url(config.server_url, "server_url") + VARDATA_PATH
        self._timeout = _seconds(config.fetch_timeout_millis, "fetch_timeout_millis")
        self._retry_timeout = _seconds(config.fetch_retry_timeout_millis, "fetch_retry_timeout_millis")
        self._acquire_timeout: Optional[float] = None  # wait as long as it takes
        if config.fetch_pool_acquire_timeout_millis is not None:
            if config.fetch_pool_acquire_timeout_millis < 0:
                raise ValueError("fetch_pool_acquire_timeout_millis must be None or >= 0, got %r"
                                 % (config.fetch_pool_acquire_timeout_millis,))
            self._acquire_timeout = config.fetch_pool_acquire_timeout_millis / 1000.0
        self._pool_size = int(config.connection_pool_max_size)
        if self._pool_size < 1:
            raise ValueError("connection_pool_max_size must be at least 1, got %r" % (config.connection_pool_max_size,))
        if config.fetch_retries < 0:
            raise ValueError("fetch_retries must be >= 0, got %r" % (config.fetch_retries,))
        # The URL and fixed headers are prepared once; each fetch copies this and adds its body.
        self._template = requests.PreparedRequest()
        self._template.prepare(method="POST", url=self._url, headers={
            "Authorization": "Api-Key " + api_key,
            "Content-Type": "application/json;charset=utf-8",
        })
        self._closed = threading.Event()
        self._in_worker = threading.local()
        self._reset_process_state()

    # --- public API ---------------------------------------------------------------------------

    def fetch_v2(self, user: User, fetch_options: Optional[FetchOptions] = None) -> Optional[Variants]:
        """Fetch every variant the server assigns to ``user``, default ("off") variants included.

        Sets ``user.library`` when it is empty, as the reference does. A failed fetch is retried
        ``fetch_retries`` times with growing waits.

        :param user: who to evaluate.
        :param fetch_options: tracking headers and the flags to evaluate; server defaults if ``None``.
        :return: flag key → :class:`Variant`; ``None`` when the server rejects the request with a
            4xx other than 429 (never retried); ``{}`` when a retryable error occurs and
            ``fetch_retries`` is 0.
        :raises TypeError: when ``user`` is not a :class:`User` that JSON can encode (no request is sent).
        :raises Exception: the last error (``FetchException``, ``TimeoutError``, ``ConnectionError``)
            when every retry failed.
        """
        try:
            return self._fetch(self._prepare(user, fetch_options))
        except _Rejected:
            return None
        except Exception as error:
            self.logger.error("[Experiment] Failed to fetch variants: %s", error)
            raise

    def fetch_async_v2(self, user: User, callback: Optional[Callable[..., Any]] = None) -> "Future[Optional[Variants]]":
        """Fetch like :meth:`fetch_v2` on a worker thread, then call ``callback``.

        The callback gets ``(user, variants)`` on success, ``(user, None)`` after a permanent 4xx,
        and ``(user, {}, error)`` when the fetch failed, as in the reference. If it raises on
        success it is called again with ``(user, {}, error)``; whatever it raises is logged.
        Fetches run on at most ``connection_pool_max_size`` threads, not one thread per call.

        :return: a future that resolves like :meth:`fetch_v2` once the callback has returned.
        """
        return self._submit(self._run_async, user, callback)

    def fetch(self, user: User, fetch_options: Optional[FetchOptions] = None) -> Variants:
        """Deprecated: use :meth:`fetch_v2`. Fetch without default variants, and never raise.

        :return: the variants minus those the server marked default and not deployed; ``{}``
            on any failure.
        """
        warnings.warn("fetch is deprecated: use fetch_v2", DeprecationWarning, stacklevel=2)
        try:
            variants = self.fetch_v2(user, fetch_options)
        except Exception:
            return {}
        return _without_defaults(variants) if variants else {}

    def fetch_async(self, user: User, callback: Optional[Callable[..., Any]] = None) -> "Future[Variants]":
        """Deprecated: use :meth:`fetch_async_v2`. Fetch on a worker, then ``callback(user, variants, error)``.

        The callback always gets three arguments, as in the reference (quirk Q11): the variants
        without defaults and ``None``, or ``{}`` and the error (a rejected request included).
        """
        warnings.warn("fetch_async is deprecated: use fetch_async_v2", DeprecationWarning, stacklevel=2)
        return self._submit(self._run_deprecated_async, user, callback)

    def close(self) -> None:
        """Release the connections and stop the async workers; idempotent.

        Async fetches already running finish (each within its timeout); queued ones and any later
        fetch fail at once with :class:`ClientClosedError`, so every callback still runs.
        """
        if self._generation != FORKS.generation:
            self._reset_process_state()  # never touch the parent's session from a child
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            executor, session = self._executor, self._session
            self._executor = None
        if executor is not None:
            # A callback may close the client from a worker thread, which cannot join itself.
            executor.shutdown(wait=not getattr(self._in_worker, "active", False))
        session.close()

    def __enter__(self) -> "RemoteEvaluationClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- fetching -----------------------------------------------------------------------------

    def _prepare(self, user: User, fetch_options: Optional[FetchOptions]) -> requests.PreparedRequest:
        """Check and encode the input, so bad input fails before any request is sent."""
        if user is None or not hasattr(user, "to_json"):
            raise TypeError("[Experiment] fetch needs an amplitude_experiment.User, got %s" % type(user).__name__)
        if not user.library:
            user.library = LIBRARY
        try:
            body = user.to_json().encode("utf-8")
        except (TypeError, ValueError, RecursionError) as error:
            raise TypeError("[Experiment] the user cannot be encoded as JSON: %s" % error) from error
        if len(body) > CDN_BODY_LIMIT:
            self.logger.warning(
                "[Experiment] encoded user is %d bytes; Amplitude's CDN caches only users under %d bytes",
                len(body), CDN_BODY_LIMIT,
            )
        request = self._template.copy()
        headers = request.headers
        if fetch_options is not None:
            if fetch_options.tracksAssignment is not None:
                headers["X-Amp-Exp-Track"] = "track" if fetch_options.tracksAssignment else "no-track"
            if fetch_options.tracksExposure is not None:
                headers["X-Amp-Exp-Exposure-Track"] = "track" if fetch_options.tracksExposure else "no-track"
            if fetch_options.flagKeys:
                headers["X-Amp-Exp-Flag-Keys"] = _encode_flag_keys(fetch_options.flagKeys)
        request.prepare_body(body, None)
        return request

    def _fetch(self, request: requests.PreparedRequest) -> Variants:
        """The first attempt, then the retries (docs/compatibility.md, 'Remote results and retries'); raises :class:`_Rejected` for a permanent 4xx."""
        try:
            return self._attempt(request, self._timeout)
        except Exception as error:
            self.logger.error("[Experiment] Fetch failed: %s", error)
            if not is_retryable(error):
                raise _Rejected(error) from error  # type: ignore[arg-type]
            last_error = error
        retries = self.config.fetch_retries
        if retries == 0:
            return {}
        delay_millis = self.config.fetch_retry_backoff_min_millis
        for _ in range(retries):
            if isinstance(last_error, ClientClosedError) or self._closed.wait(delay_millis / 1000.0):
                raise ClientClosedError("[Experiment] the client was closed while retrying a fetch") from last_error
            try:
                return self._attempt(request, self._retry_timeout)
            except Exception as error:
                # As in the reference, once retrying, every error is retried (4xx included).
                self.logger.error("[Experiment] Retry failed: %s", error)
                last_error = error
            delay_millis = min(delay_millis * self.config.fetch_retry_backoff_scalar,
                               self.config.fetch_retry_backoff_max_millis)
        raise last_error

    def _attempt(self, request: requests.PreparedRequest, timeout: float) -> Variants:
        """One POST; any failure is raised as the error the caller may see.

        It goes straight to the session's adapter: like the reference, a fetch follows no
        redirect and keeps no cookie, and the proxy and TLS settings were resolved when the
        session was built, so nothing is looked up per request.
        """
        if self._closed.is_set():
            raise ClientClosedError("[Experiment] the client is closed")
        adapter, send_settings, slots = self._process_resources()
        if not slots.acquire(timeout=self._acquire_timeout):
            raise TimeoutError("[Experiment] timed out waiting %dms for a connection from the pool (max_size=%d)"
                               % (self.config.fetch_pool_acquire_timeout_millis, self._pool_size))
        started = time.monotonic()
        try:
            response = adapter.send(request, timeout=timeout, **send_settings)
            response.content  # read it all, so the connection goes back to the pool clean (Q1)
        except requests.Timeout as error:
            raise TimeoutError("[Experiment] POST %s timed out after %d ms: %s"
                               % (self._url, timeout * 1000, error)) from error
        except requests.RequestException as error:
            raise ConnectionError("[Experiment] POST %s failed: %s" % (self._url, error)) from error
        finally:
            slots.release()
        variants = _variants_from(response, self.api_key)
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("[Experiment] fetched %d variants in %.1f ms",
                              len(variants), (time.monotonic() - started) * 1000)
        return variants

    # --- async --------------------------------------------------------------------------------

    def _submit(self, task: Callable[..., Any], user: User, callback: Optional[Callable[..., Any]]) -> Future:
        # Encode in the caller's thread: the caller may change the user as soon as we return.
        try:
            request, error = self._prepare(user, None), None
        except Exception as bad_input:
            request, error = None, bad_input
        executor = self._process_executor()
        if executor is not None:
            try:
                return executor.submit(task, user, request, error, callback)
            except RuntimeError:
                pass  # closed meanwhile: run below, where the closed client fails at once
        future: Future = Future()
        try:
            future.set_result(task(user, request, error, callback))
        except Exception as failure:
            future.set_exception(failure)
        return future

    def _run_async(self, user: User, request: Optional[requests.PreparedRequest], error: Optional[Exception],
                   callback: Optional[Callable[..., Any]]) -> Optional[Variants]:
        try:
            if error is not None:
                raise error
            variants: Optional[Variants] = self._fetch(request)  # type: ignore[arg-type]
        except _Rejected:
            variants = None
        except Exception as failure:
            self.logger.error("[Experiment] Failed to fetch variants: %s", failure)
            self._call_back(callback, user, {}, failure)
            raise
        if callback is not None:
            try:
                callback(user, variants)
            except Exception as failure:
                self.logger.exception("[Experiment] fetch_async_v2 callback raised; calling it again with the error")
                self._call_back(callback, user, {}, failure)
        return variants

    def _run_deprecated_async(self, user: User, request: Optional[requests.PreparedRequest], error: Optional[Exception],
                              callback: Optional[Callable[..., Any]]) -> Variants:
        variants: Variants = {}
        try:
            if error is not None:
                raise error
            variants = _without_defaults(self._fetch(request))  # type: ignore[arg-type]
        except _Rejected as rejected:
            error = rejected.error
        except Exception as failure:
            self.logger.error("[Experiment] Failed to fetch variants: %s", failure)
            error = failure
        if error is not None:
            self._call_back(callback, user, {}, error)
            return {}
        if callback is not None:
            try:
                callback(user, variants, None)
            except Exception as failure:
                self.logger.exception("[Experiment] fetch_async callback raised; calling it again with the error")
                self._call_back(callback, user, {}, failure)
        return variants

    def _call_back(self, callback: Optional[Callable[..., Any]], *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self.logger.exception("[Experiment] fetch callback raised")

    # --- per-process resources ----------------------------------------------------------------

    def _reset_process_state(self) -> None:
        """Sockets, threads and locks do not survive ``fork()``: each process gets its own.

        Nothing of the parent's is closed or acquired here, since another thread may have held it
        at the moment of the fork. Two threads of a fresh child may both get here; the session
        built by the loser is dropped, which is harmless.
        """
        self._generation = FORKS.generation
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._pool_size)
        self._executor: Optional[ThreadPoolExecutor] = None
        self._session = session = requests.Session()
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, pool_block=True)
        session.mount("http://", self._adapter)
        session.mount("https://", self._adapter)
        # Proxy and CA-bundle variables are read once per process, not on every request (that
        # was a third of a fetch's CPU time with requests' defaults).
        settings = session.merge_environment_settings(self._url, {}, None, None, None)
        self._send_settings = {"verify": settings["verify"], "cert": settings["cert"], "proxies": settings["proxies"]}

    def _mark_worker(self) -> None:
        self._in_worker.active = True

    def _process_resources(self) -> Tuple[HTTPAdapter, Dict[str, Any], threading.BoundedSemaphore]:
        if self._generation != FORKS.generation:
            self._reset_process_state()
        return self._adapter, self._send_settings, self._slots

    def _process_executor(self) -> Optional[ThreadPoolExecutor]:
        """This process's executor, created on first use; ``None`` once closed."""
        if self._generation != FORKS.generation:
            self._reset_process_state()
        with self._lock:
            if self._closed.is_set():
                return None
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._pool_size, thread_name_prefix=WORKER_NAME, initializer=self._mark_worker)
            return self._executor


def _seconds(millis: Any, option: str) -> float:
    if not isinstance(millis, (int, float)) or millis <= 0:
        raise ValueError("%s must be a positive number of milliseconds, got %r" % (option, millis))
    return millis / 1000.0


def _encode_flag_keys(flag_keys: Any) -> str:
    """The ``X-Amp-Exp-Flag-Keys`` value: compact JSON, UTF-8, URL-safe base64 without padding (docs/compatibility.md, 'Remote requests')."""
    try:
        text = json.dumps(list(flag_keys), separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise TypeError("[Experiment] FetchOptions.flagKeys must be a list of strings: %s" % error) from error
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def _variants_from(response: requests.Response, secret: str) -> Variants:
    """Turn a response into variants, or raise a :class:`FetchException` carrying its status.

    Body excerpts in the message have ``secret`` (the deployment key) redacted: error pages echo headers.
    """
    status = response.status_code
    if status != 200:
        detail = ": " + excerpt(response.content, secret) if response.content else ""
        raise FetchException(status, "Fetch error response: status=%d %s%s" % (status, response.reason or "", detail))
    try:
        raw = json.loads(response.content)
    except ValueError:
        raise FetchException(status, "Fetch response is not JSON: status=%d, body: %s"
                             % (status, excerpt(response.content, secret))) from None
    if not isinstance(raw, dict):
        raise FetchException(status, "Fetch response is not a JSON object of variants: status=%d, body: %s"
                             % (status, excerpt(response.content, secret)))
    variants: Variants = {}
    for key, fields in raw.items():
        if not isinstance(fields, dict):
            raise FetchException(status, "Fetch response has a variant that is not a JSON object (%r): status=%d, "
                                 "body: %s" % (key, status, excerpt(response.content, secret)))
        value = fields.get("value")
        if value is not None and not isinstance(value, str):
            value = json.dumps(value, separators=(",", ":"))  # remote values are strings (docs/compatibility.md, 'Remote results and retries')
        variants[key] = Variant(key=fields.get("key"), value=value, payload=fields.get("payload"),
                                metadata=fields.get("metadata"))
    return variants


def _without_defaults(variants: Variants) -> Variants:
    """Drop what the deprecated methods hid: variants marked default on flags not deployed (docs/compatibility.md, 'Deprecated filters')."""
    kept: Variants = {}
    for key, variant in variants.items():
        metadata = variant.metadata if isinstance(variant.metadata, dict) else {}
        default = metadata.get("default")
        deployed = metadata.get("deployed")
        if default and deployed is not None and not deployed:
            continue
        kept[key] = variant
    return kept

