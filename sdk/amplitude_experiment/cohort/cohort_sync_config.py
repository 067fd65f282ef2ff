from .._cohort_api import (
    DEFAULT_COHORT_SERVER_URL as DEFAULT_COHORT_SYNC_URL,
    DEFAULT_MAX_COHORT_SIZE,
    EU_COHORT_SERVER_URL as EU_COHORT_SYNC_URL,
    MIN_COHORT_POLLING_INTERVAL_MILLIS,
)

__all__ = ["DEFAULT_COHORT_SYNC_URL", "EU_COHORT_SYNC_URL", "MIN_COHORT_POLLING_INTERVAL_MILLIS", "CohortSyncConfig"]


class CohortSyncConfig:
    """Cohort download settings for a local client that polls (docs/cohorts.md).

    ``api_key`` and ``secret_key`` are the project's analytics credentials, not the deployment
    key. ``cohort_polling_interval_millis`` is raised to at least 60000. In shared mode (flagd)
    this config is not needed: flagd downloads the cohorts for the host.
    """

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        max_cohort_size: int = DEFAULT_MAX_COHORT_SIZE,
        cohort_polling_interval_millis: int = MIN_COHORT_POLLING_INTERVAL_MILLIS,
        cohort_server_url: str = DEFAULT_COHORT_SYNC_URL,
    ):
        self.api_key = api_key
        self.secret_key = secret_key
        self.max_cohort_size = max_cohort_size
        self.cohort_polling_interval_millis = max(cohort_polling_interval_millis, MIN_COHORT_POLLING_INTERVAL_MILLIS)
        self.cohort_server_url = cohort_server_url
