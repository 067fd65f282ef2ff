"""The WSGI app of the gunicorn and uWSGI examples: flags from flagd's shared snapshot (shared mode).

``GET /?user_id=u1`` answers ``{"pid": ..., "variants": {flag: variant key}, "snapshot_version": N}``,
so you can see which worker answered and which snapshot it evaluated. Settings come from the
environment (see flag_report.py), so gunicorn, uWSGI and the tests can share it.
"""

import json
from urllib.parse import parse_qs

from flag_report import report, started_client

# Built at import: with gunicorn's preload_app, or uWSGI without lazy-apps, this runs once in the
# master and each worker inherits the client; it needs no post-fork hook (uWSGI forks in C and
# runs Python's os.register_at_fork hooks only with py-call-osafterfork).
experiment = started_client()


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    body = json.dumps(report(experiment, query.get("user_id", ["demo-user"])[0])).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
