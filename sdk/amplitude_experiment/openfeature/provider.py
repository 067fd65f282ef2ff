"""``AmplitudeProvider``: OpenFeature's provider interface over a local (and optional remote) client.

Each resolution is one ``evaluate_v2(user, [flag_key])`` plus a context mapping, a dict lookup for
the reason and a type conversion. Status follows the client's flags without a thread of its own:
every resolution compares the flag set the client serves with the last one seen (an identity
test), and at most once per ``status_check_seconds`` reads ``flag_source_status`` for staleness.
"""

import logging
import threading
import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from .._fork import FORKS
from ..local.client import LocalEvaluationClient
from ..local.evaluate_options import EvaluateOptions
from ..remote.client import RemoteEvaluationClient
from ..remote.fetch_options import FetchOptions
from ..variant import Variant
from ._context import TARGETING_FIELDS, context_to_user
from ._reasons import FlagIndex
from ._typed import ABSENT, ResolutionError, to_boolean, to_float, to_integer, to_object, to_string

PROVIDER_NAME = "amplitude-experiment"
#: Resolutions between two clock reads for the status check (at most this many late).
RESOLUTIONS_PER_CLOCK_READ = 16
#: Distinct unexpected errors logged with a traceback; later ones are counted in the debug log only.
MAX_LOGGED_ERRORS = 100

_DISABLED = Reason.DISABLED  # a module global: reading an Enum member off its class costs more

_NOT_READY = "not_ready"
_READY = "ready"
_STALE = "stale"

_NOT_LOADED = ("no flag configs loaded yet: the client's log and its flag_source_status say why "
               "(a failed poll, or no flagd snapshot for this deployment key)")

ObjectValue = Union[Sequence[Any], Mapping[str, Any]]


class AmplitudeProvider(AbstractProvider):
    """An OpenFeature provider evaluating Amplitude flags with a :class:`LocalEvaluationClient`.

    Usage::

        >>> from openfeature import api
        >>> api.set_provider_and_wait(AmplitudeProvider(Experiment.initialize_local(key)))
        >>> api.get_client().get_boolean_value("new-dashboard", False, EvaluationContext("user-1"))

    :param local_client: evaluates every flag it has (any flag source: auto, flagd, poll).
        ``initialize`` starts it and ``shutdown`` stops it.
    :param remote_client: asked (one HTTP request per resolution) for flags the local client does
        not have; closed by ``shutdown``. None: such flags resolve to FLAG_NOT_FOUND.
    :param targeting_key_field: the ``User`` field the targeting key fills: "user_id" or "device_id".
    :param track_exposures: with an ``ExposureConfig`` on the client, each resolution tracks an
        exposure, as ``evaluate_v2(..., EvaluateOptions(tracks_exposure=True))`` does.
    :param status_check_seconds: at most this often a resolution reads the client's
        ``flag_source_status`` to find out whether the flags went stale or recovered.
    :param stale_intervals: STALE once flagd's heartbeat (or the last successful poll) is older
        than this many poll intervals.
    :param stale_after_failures: STALE once this many polls in a row failed (poll mode).
    :raises ValueError: for a ``targeting_key_field`` other than the two above.
    """

    def __init__(
        self,
        local_client: LocalEvaluationClient,
        remote_client: Optional[RemoteEvaluationClient] = None,
        *,
        targeting_key_field: str = "user_id",
        track_exposures: bool = True,
        status_check_seconds: float = 1.0,
        stale_intervals: float = 3,
        stale_after_failures: int = 3,
    ):
        super().__init__()
        if targeting_key_field not in TARGETING_FIELDS:
            raise ValueError("targeting_key_field must be one of %s, got %r"
                             % (", ".join(TARGETING_FIELDS), targeting_key_field))
        self._client = local_client
        self._remote = remote_client
        self._logger: logging.Logger = getattr(local_client, "logger", None) or logging.getLogger("Amplitude")
        self._targeting_field = targeting_key_field
        self._options = EvaluateOptions(tracks_exposure=True) if track_exposures else None
        self._track_exposures = track_exposures
        self._check_seconds = max(float(status_check_seconds), 0.0)
        # Resolutions between two looks at the clock; every one when checks are asked for each time.
        self._check_every = RESOLUTIONS_PER_CLOCK_READ if self._check_seconds > 0 else 0
        self._countdown = 0
        self._stale_intervals = stale_intervals
        self._stale_after_failures = stale_after_failures
        self._monotonic: Callable[[], float] = time.monotonic
        # The client's flag source, asked for its current flag set: the same call evaluate_v2 makes
        # first (one attribute load in shared mode). A public accessor on the client would do too.
        self._source = local_client._source
        self._seen_flags: Any = None
        self._index = FlagIndex(None)
        self._state = _NOT_READY
        self._initialized = False
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._lock_generation = FORKS.generation
        self._logged_errors: set = set()

    # --- lifecycle ----------------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start the local client; OpenFeature marks the provider READY when this returns.

        :raises ProviderNotReadyError: when the client started without flags (its first poll
            failed); the provider turns READY by itself once flags arrive.
        :raises Exception: what ``LocalEvaluationClient.start`` raises (``flag_source="flagd"`` and
            no snapshot published); here too the provider turns READY once a snapshot appears.
        """
        with self._locked():
            self._initialized = True  # from here on, flags that arrive late make the provider READY
        try:
            self._client.start()
        finally:
            with self._locked():
                flags = self._source.current()
                self._install(flags)
                self._state = _READY if flags is not None else _NOT_READY
                self._next_check = 0.0
                self._countdown = 0
        if flags is None:
            raise ProviderNotReadyError("the Amplitude client started without flag configs (%s); the provider "
                                        "turns READY once they load" % self._problem())

    def shutdown(self) -> None:
        """Stop the local client (it keeps its last flags) and close the remote client."""
        self._initialized = False
        self._client.stop()
        if self._remote is not None:
            self._remote.close()

    # --- resolution ---------------------------------------------------------------------------

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: Optional[EvaluationContext] = None) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, to_boolean)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: Optional[EvaluationContext] = None) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, to_string)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: Optional[EvaluationContext] = None) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, to_integer)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: Optional[EvaluationContext] = None) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, to_float)

    def resolve_object_details(self, flag_key: str, default_value: ObjectValue,
                               evaluation_context: Optional[EvaluationContext] = None
                               ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(flag_key, default_value, evaluation_context, to_object)

    def _resolve(self, flag_key: str, default_value: Any, context: Optional[EvaluationContext],
                 converter: Callable[[Variant], Any]) -> FlagResolutionDetails[Any]:
        """Never raises: every failure is a resolution with an error code and the caller's default."""
        variant: Optional[Variant] = None
        try:
            flags = self._source.current()
            if flags is not self._seen_flags:
                self._flags_changed()
            self._countdown -= 1  # unlocked on purpose: a lost decrement only delays a status check
            if self._countdown < 0:
                self._maybe_check_health()
            if flags is None:
                return FlagResolutionDetails(default_value, ErrorCode.PROVIDER_NOT_READY, _NOT_LOADED, Reason.ERROR)
            user = context_to_user(context, self._targeting_field)
            variant = self._client.evaluate_v2(user, [flag_key], self._options).get(flag_key)
            index = self._index
            if variant is None:
                if flag_key in index:
                    return FlagResolutionDetails(
                        default_value, ErrorCode.GENERAL,
                        "flag %r gave no variant for this context: no segment matched, or its evaluation failed "
                        "(logged by the client)" % flag_key, Reason.ERROR)
                if self._remote is not None:
                    return self._resolve_remote(flag_key, default_value, user, converter)
                return FlagResolutionDetails(default_value, ErrorCode.FLAG_NOT_FOUND,
                                             "no flag %r in the flag configs" % flag_key, Reason.ERROR)
            metadata = variant.metadata
            outcome = index.outcomes.get((flag_key, variant.key, metadata.get("segmentName") if metadata else None))
            if outcome is None:
                outcome = index.outcome(flag_key, variant)
            reason, flag_metadata = outcome
            if reason is _DISABLED:
                return FlagResolutionDetails(default_value, None, None, reason, variant.key, flag_metadata)
            value = converter(variant)
            if value is ABSENT:
                value = _absent_value(variant, reason, default_value)
            return FlagResolutionDetails(value, None, None, reason, variant.key, flag_metadata)
        except ResolutionError as error:
            return FlagResolutionDetails(default_value, error.error_code, error.message, Reason.ERROR,
                                         variant.key if variant is not None else None)
        except Exception as error:
            self._log_unexpected(flag_key, error)
            return FlagResolutionDetails(default_value, ErrorCode.GENERAL,
                                         "flag %r could not be resolved: %r" % (flag_key, error), Reason.ERROR)

    def _resolve_remote(self, flag_key: str, default_value: Any, user: Any,
                        converter: Callable[[Variant], Any]) -> FlagResolutionDetails[Any]:
        """A flag the local client does not have, from remote evaluation (its reason is never SPLIT:
        the server does not say whether the segment bucketed)."""
        options = FetchOptions(tracksExposure=True if self._track_exposures else None, flagKeys=[flag_key])
        variants = self._remote.fetch_v2(user, options)
        if variants is None:
            return FlagResolutionDetails(default_value, ErrorCode.GENERAL,
                                         "remote evaluation refused the request (see the client's log)", Reason.ERROR)
        variant = variants.get(flag_key)
        if variant is None:
            return FlagResolutionDetails(default_value, ErrorCode.FLAG_NOT_FOUND,
                                         "no flag %r locally or from remote evaluation" % flag_key, Reason.ERROR)
        reason, metadata = FlagIndex(None).outcome(flag_key, variant)
        if reason is Reason.TARGETING_MATCH:
            reason = Reason.UNKNOWN
        if reason is Reason.DISABLED:
            return FlagResolutionDetails(default_value, None, None, reason, variant.key, metadata)
        value = converter(variant)
        if value is ABSENT:
            value = _absent_value(variant, reason, default_value)
        return FlagResolutionDetails(value, None, None, reason, variant.key, metadata)

    # --- status and events (off the hot path) -------------------------------------------------

    def _flags_changed(self) -> None:
        """The client serves another flag set: READY if it is the first, else CONFIGURATION_CHANGED."""
        with self._locked():
            previous = self._seen_flags
            flags = self._source.current()  # the newest: a thread holding an older set must not go back
            if flags is previous:
                return
            old_index = self._install(flags)
            if not self._initialized or flags is None:
                return
            self._next_check = 0.0  # a new version may mean the source recovered: look now
            self._countdown = 0
            if previous is None:
                self._state = _READY
                event, details = self.emit_provider_ready, ProviderEventDetails(message="flag configs loaded")
            else:
                event, details = self.emit_provider_configuration_changed, ProviderEventDetails(
                    flags_changed=_changed_keys(old_index, self._index), message="new flag configs served")
        self._emit(event, details)

    def _maybe_check_health(self) -> None:
        """Every ``_check_every`` resolutions: check the health if ``status_check_seconds`` passed."""
        self._countdown = self._check_every
        if self._monotonic() >= self._next_check:
            self._check_health()

    def _check_health(self) -> None:
        """STALE when the flags stopped being refreshed, READY again when they are."""
        self._next_check = self._monotonic() + self._check_seconds
        if not self._initialized or self._seen_flags is None:
            return
        try:
            status = self._client.flag_source_status
            stale = self._stale_reason(status)
        except Exception as error:
            self._logger.debug("[Experiment] OpenFeature provider could not read the flag source status: %r", error)
            return
        with self._locked():
            if stale is not None and self._state != _STALE:
                self._state = _STALE
                event, details = self.emit_provider_stale, ProviderEventDetails(message=stale)
            elif stale is None and self._state == _STALE:
                self._state = _READY
                event, details = self.emit_provider_ready, ProviderEventDetails(message="flag configs fresh again")
            else:
                return
        self._emit(event, details)

    def _emit(self, event: Callable[[ProviderEventDetails], None], details: ProviderEventDetails) -> None:
        """Hand an event to OpenFeature; a failure there is logged, never lost in a resolution's result."""
        try:
            event(details)
        except Exception:
            self._logger.exception("[Experiment] OpenFeature provider could not emit %s", event.__name__)

    def _stale_reason(self, status: Mapping[str, Any]) -> Optional[str]:
        """Why the flags are stale, from ``flag_source_status``; None when they are fresh."""
        if status.get("source") == "flagd":
            age = status.get("heartbeat_age_seconds")
            interval = status.get("poll_interval_seconds")
            if age is not None and interval and age > self._stale_intervals * interval:
                return "flagd's heartbeat is %.1f s old (poll interval %.1f s): is flagd running?" % (age, interval)
            return None
        failures = status.get("consecutive_failures") or 0
        if failures >= self._stale_after_failures:
            return "%d flag config polls in a row failed: %s" % (failures, status.get("last_error"))
        age = status.get("age_seconds")
        interval = self._client.config.flag_config_polling_interval_millis / 1000.0
        if age is not None and age > self._stale_intervals * interval:
            return "the last successful flag config poll was %.1f s ago" % age
        return None

    def _install(self, flags: Any) -> FlagIndex:
        """Make ``flags`` the seen flag set (caller holds the lock); returns the previous index."""
        old_index = self._index
        self._seen_flags = flags
        self._index = FlagIndex(flags)
        return old_index

    def _locked(self) -> threading.Lock:
        # A lock copied into a fork child may be held by a thread that does not exist there: replace it.
        if self._lock_generation != FORKS.generation:
            self._lock = threading.Lock()
            self._lock_generation = FORKS.generation
        return self._lock

    def _problem(self) -> str:
        try:
            status = self._client.flag_source_status
        except Exception as error:
            return "flag source status unavailable: %r" % error
        return status.get("last_error") or "nothing loaded from source %r" % status.get("source")

    def _log_unexpected(self, flag_key: str, error: Exception) -> None:
        marker = (flag_key, type(error))
        if marker in self._logged_errors or len(self._logged_errors) >= MAX_LOGGED_ERRORS:
            self._logger.debug("[Experiment] OpenFeature resolution of %r failed: %r", flag_key, error)
            return
        self._logged_errors.add(marker)
        self._logger.error("[Experiment] OpenFeature resolution of %r failed; the caller's default is used",
                           flag_key, exc_info=error)


def _absent_value(variant: Variant, reason: str, default_value: Any) -> Any:
    """The caller's default stands in for the default variant's missing value; any other variant lacks one."""
    if reason is not Reason.DEFAULT:
        raise ResolutionError(ErrorCode.TYPE_MISMATCH, "variant %r carries no value or payload for this type"
                              % variant.key)
    return default_value


def _changed_keys(old: FlagIndex, new: FlagIndex) -> List[str]:
    """Keys of flags added, removed or changed between two flag-set versions (by content digest)."""
    old_digests, new_digests = old.digests(), new.digests()
    changed = [key for key, digest in new_digests.items() if old_digests.get(key) != digest]
    changed.extend(key for key in old_digests if key not in new_digests)
    return sorted(changed)


__all__ = ["AmplitudeProvider", "PROVIDER_NAME"]
