"""A Celery app whose prefork workers evaluate flags from flagd's shared snapshot (shared mode).

    AMPLITUDE_DEPLOYMENT_KEY=... celery -A tasks worker --pool prefork --concurrency 4

The broker is kombu's filesystem transport and results go to files (``celeryconfig.py``), so the
example needs no broker server; swap in Redis or RabbitMQ for real use, nothing about flags changes.
Settings come from the environment, as in the gunicorn example:

    AMPLITUDE_DEPLOYMENT_KEY  the deployment key flagd publishes for (required)
    AMPLITUDE_FLAG_SOURCE     "auto" (default), "flagd" or "poll"
    AMPLITUDE_SHM_PREFIX      flagd's --shm-prefix (default "amplitude-flagd")
    AMPLITUDE_SERVER_URL      where "auto"/"poll" would poll from (default: Amplitude)
    CELERY_EXAMPLE_DIR        where broker messages and results live (default: a folder in /tmp)
"""

import os

from celery import Celery

from amplitude_experiment import Experiment, LocalEvaluationConfig, User

app = Celery("tasks")
app.config_from_object("celeryconfig")


def _config() -> LocalEvaluationConfig:
    options = {
        "flag_source": os.environ.get("AMPLITUDE_FLAG_SOURCE", "auto"),
        "shm_prefix": os.environ.get("AMPLITUDE_SHM_PREFIX", "amplitude-flagd"),
    }
    if os.environ.get("AMPLITUDE_SERVER_URL"):
        options["server_url"] = os.environ["AMPLITUDE_SERVER_URL"]
    return LocalEvaluationConfig(**options)


# Built when the worker imports this module, before billiard forks the pool: every child inherits
# the client. Shared mode needs no worker_process_init handler: the client starts no thread and maps
# the snapshot lazily in the child that first evaluates.
experiment = Experiment.initialize_local(os.environ["AMPLITUDE_DEPLOYMENT_KEY"], _config())
experiment.start()


@app.task
def evaluate(user_id: str = "demo-user") -> dict:
    """The variants for ``user_id``, with the pid of the pool process that evaluated them."""
    variants = experiment.evaluate_v2(User(user_id=user_id))
    return {
        "pid": os.getpid(),
        "variants": {key: variant.key for key, variant in sorted(variants.items())},
        "snapshot_version": experiment.flag_source_status.get("version"),
    }
