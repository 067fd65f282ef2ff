"""The Celery example's app plus one test-only task that makes every pool process evaluate once.

``rendezvous(folder, count)`` checks in (a file named after its pid) and waits until ``count``
processes have, so ``count`` of them sent at once occupy ``count`` different pool processes. Each
then evaluates through the example's own ``evaluate`` task.
"""

import os
import time

from tasks import app, evaluate  # examples/celery/tasks.py

__all__ = ["app"]


@app.task(name="rendezvous")
def rendezvous(folder: str, count: int, timeout: float) -> dict:
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.01)  # polls the real condition (files from the other processes), bounded by deadline
    answer = evaluate(os.environ.get("RENDEZVOUS_USER", "u1"))
    answer["met"] = len(os.listdir(folder))
    return answer
