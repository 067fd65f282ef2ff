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
import sys

from celery import Celery

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # examples/flag_report.py
from flag_report import report, started_client  # noqa: E402

app = Celery("tasks")
app.config_from_object("celeryconfig")

# Built when the worker imports this module, before billiard forks the pool: every child inherits
# the client. Shared mode needs no worker_process_init handler.
experiment = started_client()


@app.task
def evaluate(user_id: str = "demo-user") -> dict:
    """The variants for ``user_id``, with the pid of the pool process that evaluated them."""
    return report(experiment, user_id)
