"""Upstream answers that outlive flagd's limits (issue 10, items 3 and 5), against the stand-in.

A body that trickles past the request timeout, a body over the size cap, an empty flag list after a
config with flags, and an error page that echoes the deployment key.
"""

import io
import json
import logging

import pytest

from flagd_kit import marker_flags, run_cli
from stand_in import Answer

from flagd.log import setup_logging
from flagd.sources import EMPTY_CONFIRMATIONS, ApiSource, SourceError

FLAGS = "/sdk/v2/flags"
KEY = "server-Ab3dEf6hIj9kLm2nOp5q"


def source_for(stand_in, timeout_s=2.0, **extra):
    return ApiSource(stand_in.url + "/sdk/v2/flags?v=0", KEY, timeout_s, stand_in.url, **extra)


@pytest.mark.parametrize("answer", [
    # 400 body bytes at one per 20 ms: each read arrives well within the timeout, the whole takes 8 s.
    Answer(200, b"[" + b" " * 398 + b"]", trickle=0.02),
    # About 40 header bytes at one per 50 ms: 2 s for the headers alone.
    Answer(200, b"[]", trickle=0.05, trickle_headers=True),
], ids=["body", "headers"])
def test_a_trickling_answer_fails_at_the_whole_request_timeout(stand_in, answer):
    stand_in.answer("GET", FLAGS, answer)
    source = source_for(stand_in, timeout_s=0.5)
    try:
        with pytest.raises(SourceError, match="timed out"):
            source.fetch()
    finally:
        source.close()


def test_the_next_fetch_after_a_timeout_uses_a_fresh_connection(stand_in):
    stand_in.answer("GET", FLAGS, Answer(200, b"[" + b" " * 200 + b"]", trickle=0.02), Answer(200, marker_flags("a")))
    source = source_for(stand_in, timeout_s=0.5)
    try:
        with pytest.raises(SourceError, match="timed out"):
            source.fetch()
        assert json.loads(source.fetch()) == marker_flags("a")
    finally:
        source.close()


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "read-to-close"])
def test_a_body_over_the_cap_is_a_failed_fetch(stand_in, declare_length):
    big = json.dumps(marker_flags("a", extra=200)).encode()
    stand_in.answer("GET", FLAGS, Answer(200, big, declare_length=declare_length), Answer(200, marker_flags("b")))
    source = source_for(stand_in, max_bytes=4096)
    try:
        with pytest.raises(SourceError, match="larger than the 4096 bytes allowed"):
            source.fetch()
        assert json.loads(source.fetch()) == marker_flags("b")  # a small answer goes through again
    finally:
        source.close()


def test_an_empty_list_after_flags_is_handed_out_only_when_confirmed(stand_in):
    flags = Answer(200, marker_flags("a"))
    empty = Answer(200, b"[]")
    stand_in.answer("GET", FLAGS, flags, empty, flags, empty, empty, empty)
    source = source_for(stand_in)
    try:
        assert json.loads(source.fetch()) == marker_flags("a")
        with pytest.raises(SourceError, match="empty flag list"):
            source.fetch()
        assert json.loads(source.fetch()) == marker_flags("a")  # one stray [] changed nothing
        for _ in range(EMPTY_CONFIRMATIONS - 1):
            with pytest.raises(SourceError, match="empty flag list"):
                source.fetch()
        assert source.fetch() == b"[]" and source.confirmed_empty
        assert source.fetch() == b"[]"  # already empty: no more confirmation needed
    finally:
        source.close()


def test_flagd_publishes_a_confirmed_empty_list_warns_and_status_shows_it(stand_in, flagd, shm_prefix,
                                                                           deployment_key):
    stand_in.answer("GET", FLAGS, Answer(200, marker_flags("a")), Answer(200, b"[]"))
    daemon = flagd("--server-url", stand_in.url, "--poll-interval-ms", "100", "--backoff-min-ms", "50",
                   "--backoff-max-ms", "100").start()
    daemon.wait_version(1)
    log = daemon.wait_log("event=empty_config_confirmed")
    assert "event=fetch_failed" in log and "empty flag list" in log  # the first [] was held back
    daemon.wait_version(2)
    status = run_cli("status", "--json", "--shm-prefix", shm_prefix, key=deployment_key)
    report = json.loads(status.stdout)
    assert report["flag_count"] == 0 and report["empty_config"] is True
    daemon.terminate()


def test_an_error_page_echoing_the_key_leaves_no_eight_characters_of_it(stand_in):
    # The page echoes the request headers; a 200-character cut keeps all of the key but its last two.
    head = "<html>" + "x" * 100 + " Authorization: Api-Key "
    page = (head + "y" * (200 - len(head) - len(KEY) + 2) + KEY + "</html>").encode()
    stand_in.answer("GET", FLAGS, Answer(502, page))
    source = source_for(stand_in)
    try:
        with pytest.raises(SourceError) as error:
            source.fetch()
    finally:
        source.close()
    message = str(error.value)
    assert "HTTP 502" in message
    assert not any(KEY[i:i + 8] in message for i in range(len(KEY) - 7)), message


def test_the_log_filter_redacts_any_eight_characters_of_the_key():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", secret=KEY, stream=stream)
        logging.getLogger("flagd.test").error("event=fetch_failed error=%s", "echo: Api-Key " + KEY[:-2])
        logging.getLogger("flagd.test").error("event=fetch_failed error=%s", "middle: " + KEY[5:15] + " end")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert text.count("<redacted>") == 2, text
    assert not any(KEY[i:i + 8] in text for i in range(len(KEY) - 7)), text
