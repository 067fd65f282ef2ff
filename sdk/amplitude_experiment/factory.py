import threading
from typing import Callable, Dict, Optional, TypeVar

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
    reference does. Unlike the reference, concurrent first calls cannot build two clients.
    """

    @staticmethod
    def initialize_remote(api_key: str, config: Optional[RemoteEvaluationConfig] = None) -> RemoteEvaluationClient:
        """Return the remote evaluation client for ``api_key``, creating it on first use."""
        return _one_per_key(remote_evaluation_instances, api_key, lambda: RemoteEvaluationClient(api_key, config))

    @staticmethod
    def initialize_local(api_key: str, config: Optional[LocalEvaluationConfig] = None) -> LocalEvaluationClient:
        """Return the local evaluation client for ``api_key``, creating it on first use; call ``start()`` on it."""
        return _one_per_key(local_evaluation_instances, api_key, lambda: LocalEvaluationClient(api_key, config))


def _one_per_key(registry: Dict[str, Client], api_key: str, build: Callable[[], Client]) -> Client:
    with _instances_lock:
        client = registry.get(api_key)
        if client is None:
            client = registry[api_key] = build()
        return client
