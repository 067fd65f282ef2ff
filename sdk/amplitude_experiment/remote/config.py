import logging
from typing import Optional

from .._logging import resolve_logger
from ..server_zone import ServerZone

DEFAULT_SERVER_URL = "https://api.lab.amplitude.com"
EU_SERVER_URL = "https://api.lab.eu.amplitude.com"

# The reference defaults to 1, which serialises every fetch of a process on one connection
# (docs/compatibility.md, 'Connection pool'). Ten lets a threaded server fetch concurrently; an explicit value, 1
# included, is honoured (docs/compatibility.md, "Remote evaluation").
DEFAULT_CONNECTION_POOL_MAX_SIZE = 10


class RemoteEvaluationConfig:
    """Settings of a :class:`RemoteEvaluationClient`, with the reference's names.

    The defaults are the reference's except ``connection_pool_max_size`` (10, not 1). Unlike the
    reference, ``fetch_retry_timeout_millis`` is honoured: the first attempt of a fetch uses
    ``fetch_timeout_millis`` and each retry uses ``fetch_retry_timeout_millis``
    (docs/compatibility.md).

    :param debug: log at DEBUG on the shared ``Amplitude`` logger; ignored when ``logger`` is given.
    :param server_url: where to fetch variants, an ``http://`` or ``https://`` URL.
    :param fetch_timeout_millis: connect and read timeout of the first attempt of a fetch.
    :param fetch_retries: how many times a failed fetch is retried; 0 means no retry.
    :param fetch_retry_backoff_min_millis: the wait before the first retry.
    :param fetch_retry_backoff_max_millis: the longest wait between retries.
    :param fetch_retry_backoff_scalar: how much the wait grows after each failed retry.
    :param fetch_retry_timeout_millis: connect and read timeout of each retry.
    :param fetch_pool_acquire_timeout_millis: how long a fetch may wait for a free connection when
        all are busy; ``None`` waits as long as it takes. Running out raises ``TimeoutError``,
        which is retried like a network error.
    :param server_zone: ``ServerZone.EU`` switches the default ``server_url`` to the EU host.
    :param connection_pool_max_size: how many connections, and so concurrent fetches, the client
        keeps; more concurrent fetches wait for one to be free.
    :param logger: a logger of your own, used as it is.
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
        connection_pool_max_size: int = DEFAULT_CONNECTION_POOL_MAX_SIZE,
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
