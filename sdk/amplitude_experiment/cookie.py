"""Reading and writing the identity cookie of Amplitude's browser SDKs (docs/compatibility.md, 'Cookies').

Two formats exist. The old JavaScript SDK stores ``deviceId.base64(userId).optOut.sessionId...``
in ``amp_<first 6 key chars>``; Browser SDK 2 stores base64(URL-encoded JSON) in
``AMP_<first 10 key chars>``. Cookies arrive from browsers, so :meth:`AmplitudeCookie.parse`
never raises: it returns what it could read and logs a warning on the ``Amplitude`` logger.
"""

import base64
import binascii
import json
import logging
import urllib.parse
from typing import Any

from ._logging import SDK_LOGGER_NAME
from .user import User

_OLD_FORMAT_SUFFIX = ".........."  # the nine empty fields after the device id


class AmplitudeCookie:
    """Static helpers to share one device id between the browser and the server.

    Usage::

        >>> name = AmplitudeCookie.cookie_name("<ANALYTICS_API_KEY>")
        >>> user = AmplitudeCookie.parse(request.cookies[name])
    """

    @staticmethod
    def cookie_name(api_key: str, new_format: bool = False) -> str:
        """The cookie name Amplitude's browser SDK uses for the project of ``api_key``.

        :param api_key: the analytics API key (not the deployment key).
        :param new_format: True for Browser SDK 2 (``AMP_`` + 10 characters), else ``amp_`` + 6.
        :raises ValueError: when the key is empty or too short for the format, as in the reference.
        """
        length = 10 if new_format else 6
        if not api_key or len(api_key) < length:
            raise ValueError("Invalid Amplitude API Key")
        return ("AMP_" if new_format else "amp_") + api_key[:length]

    @staticmethod
    def parse(amplitude_cookie: str, new_format: bool = False) -> User:
        """The ``User`` (``device_id``, and ``user_id`` when the cookie has one) in a cookie value.

        Malformed input (no dots, bad base64, bad JSON, an empty value) gives a ``User`` with the
        fields that could be read, possibly none, and a warning; it never raises.

        :param amplitude_cookie: the cookie's value.
        :param new_format: True for a Browser SDK 2 cookie.
        """
        if not isinstance(amplitude_cookie, str) or not amplitude_cookie:
            _warn("an empty or non-text value %r", amplitude_cookie)
            return User()
        if new_format:
            return _parse_new(amplitude_cookie)
        return _parse_old(amplitude_cookie)

    @staticmethod
    def generate(device_id: str, new_format: bool = False) -> str:
        """A cookie value that makes the browser SDK adopt ``device_id``.

        :param device_id: the device id to set; in the old format it must not contain a dot.
        :param new_format: True for a Browser SDK 2 cookie.
        """
        if not new_format:
            return device_id + _OLD_FORMAT_SUFFIX
        # json.dumps's default separators and ASCII escaping, then quote() keeping "/": the
        # reference's exact bytes, so both SDKs write the same cookie.
        encoded = urllib.parse.quote(json.dumps({"deviceId": device_id}))
        return base64.b64encode(encoded.encode("utf-8")).decode("ascii")


def _parse_old(cookie: str) -> User:
    device_id, dot, rest = cookie.partition(".")
    if not dot:
        # The reference raises IndexError; a value without fields can still only be a device id.
        _warn("no '.' in an old-format cookie; reading it all as the device id")
        return User(device_id=device_id)
    encoded_user_id = rest.split(".", 1)[0]
    user_id = None
    if encoded_user_id:
        try:
            # Not validated, like the reference: characters outside the alphabet are skipped.
            user_id = base64.b64decode(encoded_user_id).decode("utf-8")
        except (binascii.Error, ValueError) as error:
            _warn("an undecodable user id in an old-format cookie (%s); reading the device id only", error)
    return User(user_id=user_id, device_id=device_id)


def _parse_new(cookie: str) -> User:
    try:
        text = _base64_text(cookie.strip())
    except (binascii.Error, ValueError) as error:
        _warn("a new-format cookie that is not base64 of UTF-8 text (%s)", error)
        return User()
    try:
        session = json.loads(urllib.parse.unquote_plus(text))
    except ValueError as error:
        _warn("a new-format cookie without a JSON object (%s)", error)
        return User()
    if not isinstance(session, dict):
        _warn("a new-format cookie holding JSON %s, not an object", type(session).__name__)
        return User()
    if "deviceId" not in session:
        _warn("a new-format cookie without a deviceId")
    return User(user_id=session.get("userId"), device_id=session.get("deviceId"))


def _base64_text(cookie: str) -> str:
    """The text a Browser SDK 2 cookie value encodes, read as Amplitude's browser SDK reads it.

    Some frameworks (Rails 7, for one) write cookies back URL-encoded, so the base64 padding
    arrives as ``%3D`` (and ``+``, ``/`` as ``%2B``, ``%2F``). The browser SDK then URL-decodes the
    value before base64 when the value as it stands is not base64; so do we. A value that is
    neither is decoded leniently, as the reference does (characters outside the alphabet skipped).

    :raises binascii.Error, ValueError: when the bytes are not base64 of UTF-8 text.
    """
    candidates = [cookie]
    if "%" in cookie:
        candidates.append(urllib.parse.unquote(cookie))
    for candidate in candidates:
        try:
            return base64.b64decode(_padded(candidate), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
    return base64.b64decode(_padded(cookie)).decode("utf-8")


def _padded(text: str) -> str:
    # Browsers write padded base64, but proxies and frameworks sometimes trim the "=" signs.
    return text + "=" * (-len(text) % 4)


def _warn(problem: str, *args: Any) -> None:
    logging.getLogger(SDK_LOGGER_NAME).warning("[Experiment] Amplitude cookie: " + problem, *args)
