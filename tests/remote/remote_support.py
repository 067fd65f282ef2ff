"""Constants and helpers shared by the remote client tests."""

from stand_in import Answer

VARDATA = "/sdk/v2/vardata"
KEY = "server-deployment-key"
VARIANTS = {
    "checkout-redesign": {"key": "treatment", "value": "treatment", "payload": {"color": "blue"},
                          "metadata": {"flagType": "experiment", "flagVersion": 12}},
    "old-flag": {"key": "off", "metadata": {"default": True}},
}


def ok(body=None, delay=0.0):
    """A 200 answer with variants (``VARIANTS`` unless given)."""
    return Answer(200, VARIANTS if body is None else body, headers={"Content-Type": "application/json"}, delay=delay)


def gaps(seen):
    """Seconds between consecutive arrivals, from the stand-in's own clock."""
    return [later.at - earlier.at for earlier, later in zip(seen, seen[1:])]
