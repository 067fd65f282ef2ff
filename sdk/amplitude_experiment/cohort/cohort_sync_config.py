DEFAULT_COHORT_SYNC_URL = "https://cohort-v2.lab.amplitude.com"
EU_COHORT_SYNC_URL = "https://cohort-v2.lab.eu.amplitude.com"
MIN_COHORT_POLLING_INTERVAL_MILLIS = 60000


class CohortSyncConfig:
    """Cohort download settings. ``api_key`` and ``secret_key`` are the project's analytics credentials.

    Accepted for API compatibility; see docs/compatibility.md for what this package does with cohorts.
    """

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        max_cohort_size: int = 2147483647,
        cohort_polling_interval_millis: int = MIN_COHORT_POLLING_INTERVAL_MILLIS,
        cohort_server_url: str = DEFAULT_COHORT_SYNC_URL,
    ):
        self.api_key = api_key
        self.secret_key = secret_key
        self.max_cohort_size = max_cohort_size
        self.cohort_polling_interval_millis = max(cohort_polling_interval_millis, MIN_COHORT_POLLING_INTERVAL_MILLIS)
        self.cohort_server_url = cohort_server_url
