"""Placeholder until the cookie helper lands (issue 5)."""


class AmplitudeCookie:
    pass
