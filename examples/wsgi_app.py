"""The WSGI app of the gunicorn and uWSGI examples: flags from flagd's shared snapshot (shared mode).

``GET /?user_id=u1`` answers ``{"pid": ..., "variants": {flag: variant key}, "snapshot_version": N}``,
so you can see which worker answered and which snapshot it evaluated. Settings come from the
environment so gunicorn, uWSGI and the tests can share it:

    AMPLITUDE_DEPLOYMENT_KEY  the deployment key flagd publishes for (required)
    AMPLITUDE_FLAG_SOURCE     "auto" (default), "flagd" or "poll"
    AMPLITUDE_SHM_PREFIX      flagd's --shm-prefix (default "amplitude-flagd")
    AMPLITUDE_SERVER_URL      where "auto"/"poll" would poll from (default: Amplitude)
"""

import json
import os
from urllib.parse import parse_qs

from amplitude_experiment import Experiment, LocalEvaluationConfig, User


def _config() -> LocalEvaluationConfig:
    options = {
        "flag_source": os.environ.get("AMPLITUDE_FLAG_SOURCE", "auto"),
        "shm_prefix": os.environ.get("AMPLITUDE_SHM_PREFIX", "amplitude-flagd"),
    }
    if os.environ.get("AMPLITUDE_SERVER_URL"):
        options["server_url"] = os.environ["AMPLITUDE_SERVER_URL"]
    return LocalEvaluationConfig(**options)


# Built at import: with gunicorn's preload_app, or uWSGI without lazy-apps, this runs once in the
# master and each worker inherits the client. In shared mode that is safe: the client starts no
# thread and maps the snapshot lazily in the worker that first evaluates, so it needs no post-fork
# hook (uWSGI forks in C and runs Python's os.register_at_fork hooks only with py-call-osafterfork).
experiment = Experiment.initialize_local(os.environ["AMPLITUDE_DEPLOYMENT_KEY"], _config())
experiment.start()


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    user = User(user_id=query.get("user_id", ["demo-user"])[0])
    variants = experiment.evaluate_v2(user)
    body = json.dumps({
        "pid": os.getpid(),
        "variants": {key: variant.key for key, variant in sorted(variants.items())},
        "snapshot_version": experiment.flag_source_status.get("version"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
