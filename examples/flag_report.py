"""What the gunicorn, uWSGI and Celery examples share: the client, from the environment, and the report.

    AMPLITUDE_DEPLOYMENT_KEY  the deployment key flagd publishes for (required)
    AMPLITUDE_FLAG_SOURCE     "auto" (default), "flagd" or "poll"
    AMPLITUDE_SHM_PREFIX      flagd's --shm-prefix (default "amplitude-flagd")
    AMPLITUDE_SERVER_URL      where "auto"/"poll" would poll from (default: Amplitude)
    AMPLITUDE_POLL_INTERVAL_MS  how often "auto"/"poll" would poll (default: the SDK's, 30 s)
"""

import os
from typing import Any, Dict

from amplitude_experiment import Experiment, LocalEvaluationClient, LocalEvaluationConfig, User


def started_client() -> LocalEvaluationClient:
    """The process's local evaluation client, configured from the environment and started.

    Call it at import time of the app: in shared mode the client starts no thread and maps the
    snapshot lazily in the process that first evaluates, so a client made in a pre-fork master
    (gunicorn preload_app, uWSGI without lazy-apps, Celery prefork) works in every worker.
    """
    options: Dict[str, Any] = {
        "flag_source": os.environ.get("AMPLITUDE_FLAG_SOURCE", "auto"),
        "shm_prefix": os.environ.get("AMPLITUDE_SHM_PREFIX", "amplitude-flagd"),
    }
    if os.environ.get("AMPLITUDE_SERVER_URL"):
        options["server_url"] = os.environ["AMPLITUDE_SERVER_URL"]
    if os.environ.get("AMPLITUDE_POLL_INTERVAL_MS"):
        options["flag_config_polling_interval_millis"] = int(os.environ["AMPLITUDE_POLL_INTERVAL_MS"])
    client = Experiment.initialize_local(os.environ["AMPLITUDE_DEPLOYMENT_KEY"], LocalEvaluationConfig(**options))
    client.start()
    return client


def report(client: LocalEvaluationClient, user_id: str) -> Dict[str, Any]:
    """``{pid, variants: {flag: variant key}, snapshot_version}``: who answered, with which snapshot."""
    variants = client.evaluate_v2(User(user_id=user_id))
    return {
        "pid": os.getpid(),
        "variants": {key: variant.key for key, variant in sorted(variants.items())},
        "snapshot_version": client.flag_source_status.get("version"),
    }
