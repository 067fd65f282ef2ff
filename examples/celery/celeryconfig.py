"""Celery settings of the example: kombu's filesystem transport as the broker, results in files.

Nothing here is about flags; it only spares the example a broker server. ``CELERY_EXAMPLE_DIR`` says
where the queue and the results live (default: a folder under the system's temporary directory).
"""

import os
import tempfile

data_dir = os.environ.get("CELERY_EXAMPLE_DIR", os.path.join(tempfile.gettempdir(), "amplitude-celery-example"))
for _folder in ("queue", "processed", "results", "control"):
    os.makedirs(os.path.join(data_dir, _folder), exist_ok=True)

broker_url = "filesystem://"
broker_transport_options = {
    "data_folder_in": os.path.join(data_dir, "queue"),
    "data_folder_out": os.path.join(data_dir, "queue"),
    "processed_folder": os.path.join(data_dir, "processed"),
    # Exchange tables; kombu's default is ./control, in whatever directory the worker started.
    "control_folder": os.path.join(data_dir, "control"),
    "store_processed": False,
    "polling_interval": 0.1,
}
result_backend = "file://" + os.path.join(data_dir, "results")
broker_connection_retry_on_startup = True
# One task at a time per pool process, handed to whichever process is idle.
worker_prefetch_multiplier = 1
