from enum import Enum


class ServerZone(Enum):
    """Amplitude data center. Configs compare against the member, not its string value."""

    US = "US"
    EU = "EU"
