"""AmplitudeCookie: both cookie formats, round trips, malformed input, and the docs' snippet under WSGI."""

import base64
import json
import logging
import textwrap
import urllib.parse
import uuid
from http.cookies import SimpleCookie
from wsgiref.util import setup_testing_defaults

import pytest

from amplitude_experiment import AmplitudeCookie, User


# -- cookie_name -----------------------------------------------------------------------------


def test_cookie_names():
    assert AmplitudeCookie.cookie_name("1234567") == "amp_123456"
    assert AmplitudeCookie.cookie_name("1234567890abc", new_format=True) == "AMP_1234567890"
    assert AmplitudeCookie.cookie_name("amplitude-api-key") == "amp_amplit"


@pytest.mark.parametrize("api_key, new_format", [("", False), (None, False), ("12345", False), ("", True), ("123456789", True)])
def test_cookie_name_rejects_short_keys_like_the_reference(api_key, new_format):
    with pytest.raises(ValueError, match="Invalid Amplitude API Key"):
        AmplitudeCookie.cookie_name(api_key, new_format)


# -- old format (JavaScript SDK) -------------------------------------------------------------------


def test_old_format_parse():
    user = AmplitudeCookie.parse("deviceId.dGVzdEBhbXBsaXR1ZGUuY29t..1f1gkeib1...")
    assert (user.device_id, user.user_id) == ("deviceId", "test@amplitude.com")
    assert AmplitudeCookie.parse("deviceId.Y8O3Pg==..").user_id == "c÷>"
    user = AmplitudeCookie.parse("deviceId..")
    assert (user.device_id, user.user_id) == ("deviceId", None)


def test_old_format_generate_and_round_trip():
    assert AmplitudeCookie.generate("someDeviceId") == "someDeviceId.........."
    for device_id in ("someDeviceId", str(uuid.uuid4()), "日本"):
        user = AmplitudeCookie.parse(AmplitudeCookie.generate(device_id))
        assert (user.device_id, user.user_id) == (device_id, None)


# -- new format (Browser SDK 2) --------------------------------------------------------------------


def test_new_format_parse():
    user = AmplitudeCookie.parse("JTdCJTIyZGV2aWNlSWQlMjIlM0ElMjJzb21lRGV2aWNlSWQlMjIlN0Q=", new_format=True)
    assert (user.device_id, user.user_id) == ("someDeviceId", None)
    both = _new_cookie({"deviceId": "d", "userId": "u@example.com", "sessionId": 1, "optOut": False})
    user = AmplitudeCookie.parse(both, new_format=True)
    assert (user.device_id, user.user_id) == ("d", "u@example.com")
    user = AmplitudeCookie.parse(_new_cookie({"deviceId": "d", "userId": None}), new_format=True)
    assert (user.device_id, user.user_id) == ("d", None)


def test_new_format_generate_is_the_references_bytes():
    assert AmplitudeCookie.generate("someDeviceId", new_format=True) == "JTdCJTIyZGV2aWNlSWQlMjIlM0ElMjAlMjJzb21lRGV2aWNlSWQlMjIlN0Q="


@pytest.mark.parametrize("device_id", ["someDeviceId", "a b+c/d", "日本", 'quote"and\\slash', str(uuid.uuid4())])
def test_new_format_round_trip(device_id):
    user = AmplitudeCookie.parse(AmplitudeCookie.generate(device_id, new_format=True), new_format=True)
    assert (user.device_id, user.user_id) == (device_id, None)


def test_new_format_tolerates_trimmed_padding():
    cookie = AmplitudeCookie.generate("someDeviceId", new_format=True).rstrip("=")
    assert AmplitudeCookie.parse(cookie, new_format=True).device_id == "someDeviceId"


@pytest.mark.parametrize(
    "device_id, user_id",
    [("someDeviceId", None), ("d", "u@example.com"), ("日本", "ü"), (str(uuid.uuid4()), "1234")],
)
def test_new_format_with_url_encoded_padding(caplog, device_id, user_id):
    """Frameworks (Rails 7 among them) write the cookie back URL-encoded: "=" arrives as "%3D".

    Amplitude's browser SDK reads such a value by URL-decoding it before base64, when the value as
    it stands is not base64; the server must find the same device id.
    """
    session = {"deviceId": device_id} if user_id is None else {"deviceId": device_id, "userId": user_id}
    cookie = _new_cookie(session)
    for filler in ("x", "xx", "xxx"):  # a value that needs padding, or the test proves nothing
        if cookie.endswith("="):
            break
        cookie = _new_cookie({**session, "lastEventId": filler})
    assert cookie.endswith("=")
    reencoded = urllib.parse.quote(cookie, safe="")
    assert "%3D" in reencoded
    with caplog.at_level(logging.DEBUG, logger="Amplitude"):
        user = AmplitudeCookie.parse(reencoded, new_format=True)
    assert (user.device_id, user.user_id) == (device_id, user_id)
    assert caplog.records == []


def test_new_format_with_url_encoded_base64_characters():
    """"+" and "/" of the base64 alphabet URL-encoded too (%2B, %2F), lower-case escapes included."""
    cookie = base64.b64encode(json.dumps({"deviceId": "d>?~", "userId": "ÿÿÿ>"}).encode()).decode()
    assert "+" in cookie or "/" in cookie
    reencoded = urllib.parse.quote(cookie, safe="").replace("%3D", "%3d")
    user = AmplitudeCookie.parse(reencoded, new_format=True)
    assert (user.device_id, user.user_id) == ("d>?~", "ÿÿÿ>")


# -- malformed input: a User with what could be read, a warning, never an exception -----------------


@pytest.mark.parametrize(
    "cookie, new_format, device_id, user_id",
    [
        ("", False, None, None),  # empty
        ("", True, None, None),
        (None, False, None, None),  # not text at all
        ("abc", False, "abc", None),  # no dots: the reference raises IndexError
        ("d.dGVzd.", False, "d", None),  # bad base64 user id
        ("d./w==.", False, "d", None),  # user id that is not UTF-8
        ("!!!", True, None, None),  # nothing base64 in it
        ("/w==", True, None, None),  # base64 of bytes that are not UTF-8: the reference raises
        ("bm90anNvbg==", True, None, None),  # "notjson"
        ("WzFd", True, None, None),  # a JSON array
        ("e30=", True, None, None),  # {} without deviceId
        (base64.b64encode(b'{"userId":"u"}').decode(), True, None, "u"),  # the user id is still read
    ],
)
def test_malformed_cookies_warn_and_return_what_was_read(caplog, cookie, new_format, device_id, user_id):
    with caplog.at_level(logging.WARNING, logger="Amplitude"):
        user = AmplitudeCookie.parse(cookie, new_format)
    assert isinstance(user, User)
    assert (user.device_id, user.user_id) == (device_id, user_id)
    assert [record.name for record in caplog.records] == ["Amplitude"]
    assert caplog.records[0].levelno == logging.WARNING


def test_well_formed_cookies_log_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="Amplitude"):
        AmplitudeCookie.parse("deviceId.dGVzdEBhbXBsaXR1ZGUuY29t..")
        AmplitudeCookie.parse(AmplitudeCookie.generate("x", True), True)
    assert caplog.records == []


# -- the snippet from Amplitude's docs, run as written (nil -> None) in a small WSGI app ---------

DOCS_SNIPPET = textwrap.dedent(
    """
    import uuid
    from amplitude_experiment import AmplitudeCookie

    # grab amp device id if present
    amp_cookie_name = AmplitudeCookie.cookie_name('amplitude-api-key')
    device_id = None
    if request.cookies.get(amp_cookie_name):
      device_id = AmplitudeCookie.parse(request.cookies.get(amp_cookie_name)).device_id

    if device_id is None:
      # deviceId doesn't exist, set the Amplitude Cookie
      device_id = str(uuid.uuid4())
      amp_cookie_value = AmplitudeCookie.generate(device_id)
      resp.set_cookie(amp_cookie_name, {
        "value": amp_cookie_value,
        "domain": ".your-domain.com",  # this should be the same domain used by the Amplitude JS SDK
        "httponly": False,
        "secure": False
      })
    """
)


class Request:
    """Just enough of a framework request: the cookies of a WSGI environ."""

    def __init__(self, environ):
        parsed = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        self.cookies = {name: morsel.value for name, morsel in parsed.items()}


class Response:
    """Just enough of a framework response: ``set_cookie(name, options)`` as the snippet calls it."""

    def __init__(self):
        self.headers = [("Content-Type", "text/plain")]

    def set_cookie(self, name, options):
        cookie = SimpleCookie()
        cookie[name] = options["value"]
        cookie[name]["domain"] = options["domain"]
        cookie[name]["path"] = "/"
        if options.get("secure"):
            cookie[name]["secure"] = True
        if options.get("httponly"):
            cookie[name]["httponly"] = True
        self.headers.append(("Set-Cookie", cookie[name].OutputString()))


def app(environ, start_response):
    request, resp = Request(environ), Response()
    scope = {"request": request, "resp": resp}
    exec(DOCS_SNIPPET, scope)
    start_response("200 OK", resp.headers)
    return [scope["device_id"].encode()]


def call(cookie_header=None):
    environ = {}
    setup_testing_defaults(environ)
    if cookie_header is not None:
        environ["HTTP_COOKIE"] = cookie_header
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = status, headers

    body = b"".join(app(environ, start_response)).decode()
    set_cookies = [value for name, value in answer["headers"] if name == "Set-Cookie"]
    return answer["status"], body, set_cookies


def test_docs_snippet_sets_a_cookie_for_a_new_visitor():
    status, device_id, set_cookies = call()
    assert status == "200 OK"
    assert str(uuid.UUID(device_id)) == device_id
    assert len(set_cookies) == 1
    sent = SimpleCookie(set_cookies[0])["amp_amplit"]
    assert sent["domain"] == ".your-domain.com"
    assert AmplitudeCookie.parse(sent.value).device_id == device_id
    # the browser sends it back: the same device id, and no new cookie
    status, again, set_cookies = call("amp_amplit=" + sent.value)
    assert (again, set_cookies) == (device_id, [])


def test_docs_snippet_reads_the_browser_sdks_cookie():
    _, device_id, set_cookies = call("other=1; amp_amplit=deviceFromBrowser.dGVzdEBhbXBsaXR1ZGUuY29t..1f1gkeib1...")
    assert (device_id, set_cookies) == ("deviceFromBrowser", [])


def test_docs_snippet_survives_a_garbled_cookie(caplog):
    with caplog.at_level(logging.WARNING, logger="Amplitude"):
        _, device_id, set_cookies = call("amp_amplit=garbled")
    assert device_id == "garbled"  # no dots: all of it is taken as the device id
    assert set_cookies == []
    assert "no '.'" in caplog.text


def _new_cookie(session):
    return base64.b64encode(urllib.parse.quote(json.dumps(session)).encode()).decode()
