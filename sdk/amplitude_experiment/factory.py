import threading
from typing import Any, Callable, Dict, Optional, TypeVar

from .local.client import LocalEvaluationClient
from .local.config import LocalEvaluationConfig
from .remote.client import RemoteEvaluationClient
from .remote.config import RemoteEvaluationConfig

Client = TypeVar("Client")
_instances_lock = threading.Lock()
remote_evaluation_instances: Dict[str, RemoteEvaluationClient] = {}
local_evaluation_instances: Dict[str, LocalEvaluationClient] = {}


class Experiment:
    """One client per deployment key and kind, for the life of the process.

    A later call with the same key returns the first client and ignores its ``config``, as the
    reference does, but logs a warning when that call passed a config of its own. Unlike the
    reference, concurrent first calls cannot build two clients.
    """

    @staticmethod
    def initialize_remote(api_key: str, config: Optional[RemoteEvaluationConfig] = None) -> RemoteEvaluationClient:
        """Return the remote evaluation client for ``api_key``, creating it on first use."""
        return _one_per_key(remote_evaluation_instances, api_key, lambda: RemoteEvaluationClient(api_key, config),
                            config, "initialize_remote")

    @staticmethod
    def initialize_local(api_key: str, config: Optional[LocalEvaluationConfig] = None) -> LocalEvaluationClient:
        """Return the local evaluation client for ``api_key``, creating it on first use; call ``start()`` on it."""
        return _one_per_key(local_evaluation_instances, api_key, lambda: LocalEvaluationClient(api_key, config),
                            config, "initialize_local")


def _one_per_key(registry: Dict[str, Client], api_key: str, build: Callable[[], Client],
                 config: Any = None, caller: str = "") -> Client:
    with _instances_lock:
        client = registry.get(api_key)
        if client is None:
            client = registry[api_key] = build()
            return client
    existing: Any = client
    if config is not None and config is not existing.config:
        from .snapshot.layout import key_hash  # the key's one public name (flagd's logs use it too)

        existing.logger.warning(
            "[Experiment] Experiment.%s(<key hash %s>, config): a client for this deployment key already exists; "
            "it is returned and the new config is ignored. Build the client once (or call %s without a config).",
            caller, key_hash(api_key), caller)
    return client
