"""The deployment key never reaches a remote error, whole or cut (issue 10, item 3).

Error pages of proxies and load balancers echo the request headers; the message keeps a body
excerpt, which is redacted before it is cut to length.
"""

import logging

import pytest

from amplitude_experiment import User
from amplitude_experiment.exception import FetchException
from amplitude_experiment._http import excerpt
from amplitude_experiment._logging import redact
from remote_support import KEY, VARDATA
from stand_in import Answer


def key_runs(text, secret=KEY, run=8):
    """Every run of ``run`` consecutive characters of ``secret`` found in ``text``."""
    return [secret[i:i + run] for i in range(len(secret) - run + 1) if secret[i:i + run] in text]


def echo_page(cut_at=200, missing=2):
    """An error page whose ``cut_at``-character excerpt holds the key minus its last ``missing`` characters."""
    head = "<html><pre>POST /sdk/v2/vardata HTTP/1.1\nAuthorization: Api-Key "
    return (head + "y" * (cut_at - len(head) - len(KEY) + missing) + KEY + "\n</pre></html>").encode()


@pytest.mark.parametrize("status", [400, 502])
def test_a_fetch_exception_holds_no_run_of_the_key(stand_in, make_client, caplog, status):
    stand_in.answer("POST", VARDATA, Answer(status, echo_page()))
    client = make_client(fetch_retries=0)
    with caplog.at_level(logging.DEBUG):
        result = client.fetch_v2(User(user_id="u1"))
    assert result in (None, {})
    assert "Fetch error response: status=%d" % status in caplog.text
    assert key_runs(caplog.text) == [], caplog.text


def test_the_error_raised_after_retries_holds_no_run_of_the_key(stand_in, make_client):
    stand_in.answer("POST", VARDATA, Answer(503, echo_page()))
    with pytest.raises(FetchException) as raised:
        make_client(fetch_retries=1, fetch_retry_backoff_min_millis=1).fetch_v2(User(user_id="u1"))
    assert "503" in str(raised.value)
    assert key_runs(str(raised.value)) == [], str(raised.value)


def test_redact_replaces_any_run_of_eight_and_keeps_the_rest():
    assert redact("a " + KEY + " b", KEY) == "a <redacted> b"
    assert redact("cut " + KEY[:-2], KEY) == "cut <redacted>"
    assert redact("mid " + KEY[3:11] + "!", KEY) == "mid <redacted>!"
    assert redact("short " + KEY[3:10] + "!", KEY) == "short " + KEY[3:10] + "!"  # 7 characters stay
    assert redact("no key here", KEY) == "no key here"
    assert redact("abc", "") == "abc"


def test_excerpt_redacts_before_it_cuts():
    text = excerpt(echo_page(), KEY)
    assert key_runs(text) == [] and "<redacted>" in text
    assert excerpt(b"", KEY) == "(empty body)"
    assert excerpt(b"x" * 1000).endswith("…") and len(excerpt(b"x" * 1000)) == 201
