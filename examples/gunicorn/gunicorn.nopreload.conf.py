"""gunicorn without preload_app: every worker imports the app (and builds its client) after the fork.

    gunicorn -c examples/gunicorn/gunicorn.nopreload.conf.py wsgi_app:application

Shared mode behaves the same either way: each worker maps flagd's snapshot on its first evaluation.
Choose this when the app itself must not be imported in the master (e.g. it opens connections).
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
chdir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # examples/, for wsgi_app.py
preload_app = False
max_requests = 10000
max_requests_jitter = 1000
