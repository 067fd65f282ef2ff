import logging
from typing import Optional

from .._logging import resolve_logger
from ..server_zone import ServerZone

DEFAULT_SERVER_URL = "https://api.lab.amplitude.com"
EU_SERVER_URL = "https://api.lab.eu.amplitude.com"


class RemoteEvaluationConfig:
    """Settings of a :class:`RemoteEvaluationClient`, with the reference's names and defaults.

    Unlike the reference, ``fetch_retry_timeout_millis`` is honoured: retries use it as their
    request timeout (docs/compatibility.md).
    """

    def __init__(
        self,
        debug: bool = False,
        server_url: str = DEFAULT_SERVER_URL,
        fetch_timeout_millis: int = 10000,
        fetch_retries: int = 0,
        fetch_retry_backoff_min_millis: int = 500,
        fetch_retry_backoff_max_millis: int = 10000,
        fetch_retry_backoff_scalar: float = 1.5,
        fetch_retry_timeout_millis: int = 10000,
        fetch_pool_acquire_timeout_millis: Optional[int] = None,
        server_zone: ServerZone = ServerZone.US,
        connection_pool_max_size: int = 1,
        logger: Optional[logging.Logger] = None,
    ):
        self.debug = debug
        self.server_url = server_url
        self.fetch_timeout_millis = fetch_timeout_millis
        self.fetch_retries = fetch_retries
        self.fetch_retry_backoff_min_millis = fetch_retry_backoff_min_millis
        self.fetch_retry_backoff_max_millis = fetch_retry_backoff_max_millis
        self.fetch_retry_backoff_scalar = fetch_retry_backoff_scalar
        self.fetch_retry_timeout_millis = fetch_retry_timeout_millis
        self.fetch_pool_acquire_timeout_millis = fetch_pool_acquire_timeout_millis
        self.server_zone = server_zone
        if server_url == DEFAULT_SERVER_URL and server_zone == ServerZone.EU:
            self.server_url = EU_SERVER_URL
        self.connection_pool_max_size = connection_pool_max_size
        self.logger = resolve_logger(debug, logger)
