"""An analytics client stand-in for tracking tests: keeps the events it is given, sends nothing."""


class Sink:
    """What ``sink_factory`` returns: ``track`` records the event, ``flush`` has nothing in flight."""

    def __init__(self):
        self.events = []

    def track(self, event):
        self.events.append(event)

    def flush(self):
        return []
