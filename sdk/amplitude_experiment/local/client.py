import logging
import threading
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .._fork import notice_fork
from ..evaluation import evaluate
from ..evaluation.cohorts import enrich_user
from ..tracking import build_tracker
from ..user import User
from ..variant import Variant
from ._context import user_to_context
from ._metrics import client_metrics
from ._sources import build_flag_source
from .config import LocalEvaluationConfig
from .evaluate_options import EvaluateOptions


class LocalEvaluationClient:
    """Evaluates flags in this process from configs polled from Amplitude or published by flagd.

    Thread-safe, and fork-safe in every mode: a client built before ``fork()`` (gunicorn
    ``preload_app``, the uWSGI master, Celery prefork) works in each child. In shared mode
    (``flag_source="auto"`` with flagd running, or ``"flagd"``) it starts no thread at all.

    Usage::

        >>> client = LocalEvaluationClient("<DEPLOYMENT_KEY>")
        >>> client.start()
        >>> client.evaluate_v2(User(user_id="u1"), ["checkout-redesign"])
    """

    def __init__(self, api_key: str, config: Optional[LocalEvaluationConfig] = None):
        if not api_key:
            raise ValueError("Experiment API key is empty")
        self.api_key = api_key
        self.config = config or LocalEvaluationConfig()
        self.logger: logging.Logger = self.config.logger
        self._source = build_flag_source(api_key, self.config, self.logger)
        #: The source's loaded cohorts, asked per evaluation of flags with cohort conditions.
        self._cohort_membership = getattr(self._source, "cohort_membership", None)
        self._tracker = build_tracker(self.config, self.logger)
        if self._tracker is not None and self.config.flag_source != "poll":
            # flagd deduplicates host-wide and delivers when it serves this analytics key (docs/tracking.md).
            self._tracker.route_to_host(self.config.shm_prefix, api_key, self.config.flagd_owner)
        # Per-process Prometheus metrics when prometheus_client and PROMETHEUS_MULTIPROC_DIR are there.
        self._metrics = client_metrics(self._source.status, self.config.flag_source)
        self._failures_logged: Tuple[Any, set] = (None, set())
        self._stop_lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """Load the flag configs and keep them current.

        Polling mode fetches once before returning and then polls every
        ``flag_config_polling_interval_millis``; a failed fetch is logged and retried, never
        raised. Shared mode attaches to flagd's snapshot; with ``flag_source="flagd"`` it waits up
        to the request timeout for one and raises ``RuntimeError`` if none is published.
        """
        self._source.start()

    def evaluate_v2(
        self,
        user: User,
        flag_keys: Optional[Iterable[str]] = None,
        options: Optional[EvaluateOptions] = None,
    ) -> Dict[str, Variant]:
        """Variants of the flags in ``flag_keys`` (all flags when ``None``) for ``user``.

        Default variants are included; dependencies of the requested flags are evaluated and
        returned too. An empty ``flag_keys`` returns ``{}``, as in the reference. Never raises for
        bad input: a flag that fails on it is left out and logged.
        """
        flags = self._source.current()
        if flags is None:
            return {}
        metrics = self._metrics
        if metrics is not None:
            metrics.evaluated(flags)
        if flags.cohort_refs and self._cohort_membership is not None and user is not None:
            # Fill the user's cohort ids from the loaded cohorts (docs/cohorts.md): this process's
            # cohort sync, or flagd's in shared mode; None when no cohorts are loaded at all.
            membership = self._cohort_membership()
            if membership is not None:
                enrich_user(user, flags.cohort_refs, membership)
        results, failures = evaluate(flags, user_to_context(user, flags.needs_exact_user_entry), flag_keys)
        if failures:
            self._log_failures(flags, failures)
        variants = {}
        for key, result in results.items():
            # Variant's four attributes set directly: a third cheaper than calling the class.
            variant = _new_variant(Variant)
            variant.value = result["value"]
            variant.payload = result["payload"]
            variant.key = result["key"]
            variant.metadata = result["metadata"].copy()  # callers may mutate theirs
            variants[key] = variant
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("[Experiment] evaluate_v2 user=%s flag_keys=%s -> %s", user, flag_keys, variants)
        tracker = self._tracker
        if tracker is not None:
            tracker.track(user, variants, options is not None and options.tracks_exposure is True)
        return variants

    def evaluate(self, user: User, flag_keys: Optional[List[str]] = None) -> Dict[str, Variant]:
        """Deprecated: ``evaluate_v2`` without default variants and without undeployed flags."""
        _warn_deprecated("Use evaluate_v2")
        variants = self.evaluate_v2(user, set(flag_keys) if flag_keys is not None else None)
        return {key: variant for key, variant in variants.items() if not _is_default_or_undeployed(variant)}

    def stop(self, timeout: Optional[float] = 10.0) -> None:
        """Stop updating flags and flush pending events, waiting at most ``timeout`` seconds (None: no limit).

        The client still evaluates with the flags it last had. Idempotent.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._source.stop()
        if self._metrics is not None:
            self._metrics.flush()
        if self._tracker is not None:
            self._tracker.flush(timeout)

    @property
    def flag_source_status(self) -> Dict[str, Any]:
        """Which source serves the flags and how fresh they are: a ``FlagSourceStatus``
        (amplitude_experiment.local.status), the same keys for every source."""
        if self._metrics is not None:
            self._metrics.flush()
        status = self._source.status()
        if self._tracker is not None:
            status["events"] = self._tracker.host_status()
        return status

    @staticmethod
    def reset_after_fork() -> None:
        """Tell the SDK it runs in a new fork child, for servers that fork without Python's at-fork hooks.

        Only needed in polling mode under uWSGI without ``py-call-osafterfork``; safe to call twice.
        """
        notice_fork()

    def __enter__(self) -> "LocalEvaluationClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _log_failures(self, flags: Any, failures: List[Any]) -> None:
        """Log each (flag, error type) once per flag set, so a bad user value cannot flood the log."""
        logged_for, logged = self._failures_logged
        if logged_for is not flags:
            logged = set()
            self._failures_logged = (flags, logged)
        for flag_key, error in failures:
            marker = (flag_key, type(error))
            if marker in logged:
                continue
            logged.add(marker)
            self.logger.error(
                "[Experiment] flag %r could not be evaluated for this user and was left out: %r", flag_key, error
            )


_new_variant = object.__new__


def _is_default_or_undeployed(variant: Variant) -> bool:
    metadata = variant.metadata or {}
    default = metadata.get("default")
    deployed = metadata.get("deployed")
    return bool(default) or (deployed is not None and not deployed)


def _warn_deprecated(message: str) -> None:
    """Warn even where DeprecationWarning is filtered out, as the reference does (docs/compatibility.md, 'Deprecated filters')."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", DeprecationWarning)
        warnings.warn(message, DeprecationWarning, stacklevel=3)
