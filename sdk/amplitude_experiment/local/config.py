import logging
from typing import Optional, Union

from .._flag_api import DEFAULT_SERVER_URL, DEFAULT_SHM_PREFIX, DEFAULT_STREAM_URL, EU_SERVER_URL, EU_STREAM_URL
from .._logging import resolve_logger
from ..assignment import AssignmentConfig
from ..cohort.cohort_sync_config import DEFAULT_COHORT_SYNC_URL, EU_COHORT_SYNC_URL, CohortSyncConfig
from ..exposure import ExposureConfig
from ..server_zone import ServerZone

EU_STREAM_SERVER_URL = EU_STREAM_URL

#: Where a local client takes its flags from; see docs/shared-mode.md.
FLAG_SOURCES = ("auto", "flagd", "poll")


class LocalEvaluationConfig:
    """Settings of a :class:`LocalEvaluationClient`, with the reference's names and defaults.

    :param flag_source: ``"auto"`` (default) evaluates from the host's flagd snapshot for this
        deployment key when one is published and polls Amplitude itself otherwise; ``"flagd"``
        only uses the snapshot; ``"poll"`` always polls, like Amplitude's SDK.
    :param shm_prefix: the shared-memory namespace flagd publishes under (its ``--shm-prefix``).
    :param flagd_owner: uid or user name flagd runs as. A shared-memory file is trusted only when this
        process's own uid, root or that user owns it (and no one else can write it); by default
        that user is ``amplitude-flagd`` (the system user of systemd/sysusers.d) when it exists.
        Anything else is refused: /dev/shm is writable by every local user.
    """

    def __init__(
        self,
        debug: bool = False,
        server_url: str = DEFAULT_SERVER_URL,
        server_zone: ServerZone = ServerZone.US,
        flag_config_polling_interval_millis: int = 30000,
        flag_config_poller_request_timeout_millis: int = 10000,
        stream_updates: bool = False,
        stream_server_url: str = DEFAULT_STREAM_URL,
        stream_flag_conn_timeout: int = 1500,
        assignment_config: Optional[AssignmentConfig] = None,
        exposure_config: Optional[ExposureConfig] = None,
        cohort_sync_config: Optional[CohortSyncConfig] = None,
        logger: Optional[logging.Logger] = None,
        flag_source: str = "auto",
        shm_prefix: str = DEFAULT_SHM_PREFIX,
        flagd_owner: Optional[Union[int, str]] = None,
    ):
        if flag_source not in FLAG_SOURCES:
            raise ValueError("flag_source must be one of %s, got %r" % (", ".join(FLAG_SOURCES), flag_source))
        self.debug = debug
        self.server_url = server_url
        self.server_zone = server_zone
        self.cohort_sync_config = cohort_sync_config
        self.stream_server_url = stream_server_url
        if server_zone == ServerZone.EU:
            if server_url == DEFAULT_SERVER_URL:
                self.server_url = EU_SERVER_URL
                if cohort_sync_config is not None and cohort_sync_config.cohort_server_url == DEFAULT_COHORT_SYNC_URL:
                    cohort_sync_config.cohort_server_url = EU_COHORT_SYNC_URL
            # The reference only switches when the stream URL equals the *api* default (quirk Q6).
            if stream_server_url in (DEFAULT_STREAM_URL, DEFAULT_SERVER_URL):
                self.stream_server_url = EU_STREAM_SERVER_URL
        self.flag_config_polling_interval_millis = flag_config_polling_interval_millis
        self.flag_config_poller_request_timeout_millis = flag_config_poller_request_timeout_millis
        self.stream_updates = stream_updates
        self.stream_flag_conn_timeout = stream_flag_conn_timeout
        self.assignment_config = assignment_config
        self.exposure_config = exposure_config
        self.flag_source = flag_source
        self.shm_prefix = shm_prefix
        self.flagd_owner = flagd_owner
        self.logger = resolve_logger(debug, logger)
