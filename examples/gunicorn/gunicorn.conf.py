"""gunicorn with preload_app: the app (and its Experiment client) is imported once in the master.

    gunicorn -c examples/gunicorn/gunicorn.conf.py wsgi_app:application

In shared mode that needs no server hooks: the client starts no thread, so there is nothing that a
fork would lose, and it maps flagd's snapshot lazily in each worker on its first evaluation.
"""

import gc
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
chdir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # examples/, for wsgi_app.py
preload_app = True
# Recycled workers are forked from the master again; they map the current snapshot on their first
# evaluation, not whatever the master might have held.
max_requests = 10000
max_requests_jitter = 1000


def when_ready(server):
    # Objects created at preload are shared copy-on-write with the workers; freezing them keeps the
    # workers' garbage collector from touching (and so copying) those pages.
    gc.freeze()
