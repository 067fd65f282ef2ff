"""Flags of every type and outcome, and an OpenFeature API reset between tests."""

import threading
from typing import Any, Dict, List, Optional

import pytest

pytest.importorskip("openfeature")

from openfeature import _event_support, api  # noqa: E402
from openfeature.event import EventDetails, ProviderEvent  # noqa: E402

from amplitude_experiment.openfeature import PROVIDER_NAME  # noqa: E402
from waiting import wait_until  # noqa: E402

FLAGS_PATH = "/sdk/v2/flags"
KEY = "server-openfeature-test-key-0001"
RELEASE = {"deployed": True, "evaluationMode": "local", "flagType": "release", "flagVersion": 1}
OFF = {"key": "off", "metadata": {"default": True}}


def all_users(key: str, variant: Dict[str, Any], metadata: Optional[Dict[str, Any]] = None,
              segment_name: str = "All Other Users") -> Dict[str, Any]:
    """A flag that gives every user ``variant``."""
    return {"key": key, "metadata": dict(RELEASE, **(metadata or {})),
            "variants": {variant["key"]: variant, "off": OFF},
            "segments": [{"metadata": {"segmentName": segment_name}, "variant": variant["key"]}]}


def targeted(key: str, selector: List[str], values: List[str], op: str = "is") -> Dict[str, Any]:
    """"on" for users whose ``selector`` matches ``values``, the default "off" for everyone else."""
    return {"key": key, "metadata": dict(RELEASE),
            "variants": {"on": {"key": "on", "value": "on"}, "off": OFF},
            "segments": [{"metadata": {"segmentName": "Targeted"},
                          "conditions": [[{"selector": ["context"] + selector, "op": op, "values": values}]],
                          "variant": "on"},
                         {"metadata": {"segmentName": "All Other Users"}, "variant": "off"}]}


def bucketed(key: str, distributions: List[Any], allocation: int = 100,
             selector: Optional[List[str]] = None) -> Dict[str, Any]:
    """A flag whose only segment buckets every user by ``selector`` (user_id) over ``distributions``."""
    variants = {"off": OFF}
    for name, _low, _high in distributions:
        variants[name] = {"key": name, "value": name}
    return {"key": key, "metadata": dict(RELEASE, flagType="experiment"),
            "variants": variants,
            "segments": [{"metadata": {"segmentName": "All Other Users"}, "variant": "off",
                          "bucket": {"selector": ["context", "user"] + (selector or ["user_id"]), "salt": "s4lt",
                                     "allocations": [{"range": [0, allocation], "distributions": [
                                         {"variant": name, "range": [low, high]}
                                         for name, low, high in distributions]}]}}]}


FULL = 42949673
HALF = 21474837


def typed_flags() -> List[Dict[str, Any]]:
    return [
        all_users("bool-on", {"key": "on", "value": "on"}),
        all_users("bool-true", {"key": "yes", "value": "TRUE"}),
        all_users("bool-false", {"key": "no", "value": "false"}),
        all_users("bool-key-only", {"key": "on"}),
        all_users("bool-bad", {"key": "maybe", "value": "maybe"}),
        all_users("string-flag", {"key": "blue", "value": "blue", "payload": {"hex": "#00f"}}),
        all_users("int-payload", {"key": "big", "value": "big", "payload": 42}),
        all_users("int-value", {"key": "seventeen", "value": "17"}),
        all_users("int-unparsable", {"key": "seventeen", "value": "seventeen"}),
        all_users("int-from-float", {"key": "half", "value": "half", "payload": 2.5}),
        all_users("float-payload", {"key": "rate", "value": "rate", "payload": 2.5}),
        all_users("float-int-payload", {"key": "rate", "value": "rate", "payload": 3}),
        all_users("float-value", {"key": "quarter", "value": "0.25"}),
        all_users("object-payload", {"key": "cfg", "value": "cfg", "payload": {"limit": 10, "tags": ["a"]}}),
        all_users("object-list", {"key": "cfg", "value": "cfg", "payload": [1, 2, 3]}),
        all_users("object-none", {"key": "cfg", "value": "cfg"}),
        all_users("default-only", {"key": "off", "metadata": {"default": True}}),
        all_users("disabled", {"key": "on", "value": "on"}, metadata={"deployed": False}),
        bucketed("split", [("control", 0, HALF), ("treatment", HALF, FULL)]),
        bucketed("rollout-all", [("on", 0, FULL)]),
        bucketed("rollout-some", [("on", 0, FULL)], allocation=1),
        bucketed("fails-on-odd-input", [("on", 0, FULL)], selector=["user_properties", "odd"]),
        targeted("by-user", ["user", "user_id"], ["alice"]),
        targeted("by-device", ["user", "device_id"], ["dev-1"]),
        targeted("by-country", ["user", "country"], ["Germany"]),
        targeted("by-plan", ["user", "user_properties", "plan"], ["pro"]),
        targeted("by-org", ["groups", "org", "group_name"], ["acme"]),
        targeted("by-org-size", ["groups", "org", "group_properties", "size"], ["big"]),
        {"key": "no-segment-matches", "metadata": dict(RELEASE), "variants": {"on": {"key": "on", "value": "on"}},
         "segments": [{"conditions": [[{"selector": ["context", "user", "user_id"], "op": "is",
                                        "values": ["nobody"]}]], "variant": "on"}]},
    ]


def set_provider_and_wait(provider: Any, domain: Optional[str] = None) -> None:
    """Register ``provider`` and return once it is initialized, whichever openfeature-sdk is installed.

    0.10 initializes in ``set_provider_and_wait`` (and raises what ``initialize`` raised); 0.8, the
    last for Python 3.9, initializes inside ``set_provider`` and reports a failure as an ERROR event.
    Tests read the outcome from the status and the events, which both versions give.
    """
    wait = getattr(api, "set_provider_and_wait", None)
    try:
        if wait is not None:
            wait(provider, domain)
        else:
            api.set_provider(provider, domain)
    except Exception:
        pass


class Events:
    """Records provider events delivered to API-level handlers (they run on OpenFeature's thread pool)."""

    def __init__(self) -> None:
        self.seen: List[Any] = []
        self._lock = threading.Lock()
        self._handlers = []
        for event in ProviderEvent:
            handler = self._recorder(event)
            self._handlers.append((event, handler))
            api.add_handler(event, handler)

    def _recorder(self, event: ProviderEvent) -> Any:
        def record(details: EventDetails) -> None:
            with self._lock:
                self.seen.append((event, details))
        return record

    def kinds(self) -> List[ProviderEvent]:
        """Our provider's events in the order delivered (OpenFeature also replays the no-op provider's READY)."""
        with self._lock:
            return [event for event, details in self.seen if details.provider_name == PROVIDER_NAME]

    def wait_for(self, event: ProviderEvent, count: int = 1, timeout: float = 10.0) -> EventDetails:
        wait_until(lambda: self.kinds().count(event) >= count, timeout, "%d x %s (saw %s)" % (count, event, self.kinds()))
        with self._lock:
            return [details for kind, details in self.seen
                    if kind == event and details.provider_name == PROVIDER_NAME][count - 1]


@pytest.fixture(autouse=True)
def _fresh_openfeature():
    """OpenFeature's API is process-global: each test starts with no provider and no handlers."""
    yield
    api.clear_providers()
    api.clear_hooks()
    _event_support.clear()


@pytest.fixture
def events() -> Events:
    return Events()
