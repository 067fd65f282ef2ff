import threading
from typing import Dict, Optional

from .local.client import LocalEvaluationClient
from .local.config import LocalEvaluationConfig
from .remote.client import RemoteEvaluationClient
from .remote.config import RemoteEvaluationConfig

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
        with _instances_lock:
            client = remote_evaluation_instances.get(api_key)
            if client is None:
                client = remote_evaluation_instances[api_key] = RemoteEvaluationClient(api_key, config)
            return client

    @staticmethod
    def initialize_local(api_key: str, config: Optional[LocalEvaluationConfig] = None) -> LocalEvaluationClient:
        """Return the local evaluation client for ``api_key``, creating it on first use; call ``start()`` on it."""
        with _instances_lock:
            client = local_evaluation_instances.get(api_key)
            if client is None:
                client = local_evaluation_instances[api_key] = LocalEvaluationClient(api_key, config)
            return client
