"""Helpers shared by the SDK's HTTP clients."""

from urllib.parse import urlsplit

import requests


def base_url(url: str, option: str) -> str:
    """``url`` without a trailing slash, after checking it is an http(s) URL with a host.

    :raises ValueError: naming the config option, when the URL cannot be used.
    """
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("%s must be an http:// or https:// URL such as https://api.lab.amplitude.com, got %r" % (option, url))
    return url.rstrip("/")


def excerpt(response: requests.Response, limit: int = 200) -> str:
    """The start of a response body, for error messages: decoded as UTF-8, never the whole body."""
    body = response.content or b""
    text = body[:limit].decode("utf-8", "replace")
    return text if len(body) <= limit else text + "…"
