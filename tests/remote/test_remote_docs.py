"""The remote evaluation snippets of Amplitude's Python SDK docs run as written.

The snippets below are copied verbatim from the docs ("Remote evaluation": Quick Start, Fetch,
Fetch async). Two things make them runnable, and neither edits their text:

* the server URL: the test calls ``Experiment.initialize_remote('<DEPLOYMENT_KEY>', config)``
  first, so the snippet's own ``initialize_remote('<DEPLOYMENT_KEY>')`` gets that client back
  (later calls ignore their config, as in the reference);
* the docs leave the ``if``/``else`` branches with only a comment, which Python cannot compile,
  so :func:`runnable` adds ``pass`` under each such comment.
"""

import logging
import re

import pytest

from amplitude_experiment import Experiment, RemoteEvaluationClient, RemoteEvaluationConfig
from remote_support import VARDATA, ok

QUICK_START = """\
from amplitude_experiment import Experiment, RemoteEvaluationConfig, RemoteEvaluationClient, User

# (1) Initialize the experiment client
experiment = Experiment.initialize_remote('<DEPLOYMENT_KEY>')

# (2) Fetch variants for a user
user = User(
    device_id="abcdefg",
    user_id="user@company.com",
    user_properties={
        'premium': True
    }
)
variants = experiment.fetch_v2(user)

# (3) Access a flag's variant
variant = variants['YOUR-FLAG-KEY']
if variant:
    if variant.value == 'on':
        # Flag is on
    else:
        # Flag is off
"""

FETCH = """\
user = User(
    device_id="abcdefg",
    user_id="user@company.com",
    user_properties={
        'premium': True
    }
)
variants = experiment.fetch_v2(user)
"""

ACCESS = """\
variant = variants['YOUR-FLAG-KEY']
if variant:
    if variant.value == 'on':
        # Flag is on
    else:
        # Flag is off
"""

FETCH_ASYNC = """\
def fetch_callback(user, variants):
  variant = variants['YOUR-FLAG-KEY']
  if variant:
    if variant.value == 'on':
      # Flag is on
    else:
      # Flag is off

experiment.fetch_async_v2(user, fetch_callback)
"""


def runnable(snippet):
    """``snippet`` with ``pass`` under every comment that is a block's only body."""
    lines = snippet.splitlines()
    out = []
    for index, line in enumerate(lines):
        out.append(line)
        comment = re.match(r"^(\s*)#", line)
        if comment and index > 0 and lines[index - 1].rstrip().endswith(":"):
            out.append(comment.group(1) + "pass")
    return "\n".join(out) + "\n"


@pytest.fixture
def docs_client(stand_in):
    """The client the snippets' ``initialize_remote('<DEPLOYMENT_KEY>')`` returns: pointed at the stand-in."""
    return Experiment.initialize_remote("<DEPLOYMENT_KEY>", RemoteEvaluationConfig(server_url=stand_in.url))


@pytest.mark.parametrize("value", ["on", "off"])
def test_quick_start_fetch_and_access_run_as_documented(stand_in, docs_client, caplog, value):
    stand_in.answer("POST", VARDATA, ok({"YOUR-FLAG-KEY": {"key": value, "value": value}}))
    namespace = {}

    with caplog.at_level(logging.WARNING, logger="Amplitude"):
        exec(compile(runnable(QUICK_START), "quick_start", "exec"), namespace)
        exec(compile(runnable(FETCH), "fetch", "exec"), namespace)
        exec(compile(runnable(ACCESS), "access", "exec"), namespace)

    assert namespace["experiment"] is docs_client
    assert namespace["variant"].value == value
    assert [seen.headers["Authorization"] for seen in stand_in.seen(VARDATA)] == ["Api-Key <DEPLOYMENT_KEY>"] * 2
    assert [seen.json()["user_properties"] for seen in stand_in.seen(VARDATA)] == [{"premium": True}] * 2
    assert not caplog.records


def test_fetch_async_runs_as_documented(stand_in, docs_client, caplog, monkeypatch):
    stand_in.answer("POST", VARDATA, ok({"YOUR-FLAG-KEY": {"key": "on", "value": "on"}}))
    futures = []
    original = RemoteEvaluationClient.fetch_async_v2

    def keep_future(self, *args, **kwargs):  # the snippet drops the future; the test waits on it
        futures.append(original(self, *args, **kwargs))
        return futures[-1]

    monkeypatch.setattr(RemoteEvaluationClient, "fetch_async_v2", keep_future)
    namespace = {}

    with caplog.at_level(logging.WARNING, logger="Amplitude"):
        exec(compile(runnable(QUICK_START), "quick_start", "exec"), namespace)
        exec(compile(runnable(FETCH_ASYNC), "fetch_async", "exec"), namespace)
        [future] = futures
        variants = future.result(timeout=10)

    assert variants["YOUR-FLAG-KEY"].value == "on"
    assert len(stand_in.seen(VARDATA)) == 2
    assert not caplog.records  # the callback ran with (user, variants) and raised nothing
