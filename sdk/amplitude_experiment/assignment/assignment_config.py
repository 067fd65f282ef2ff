from typing import Any

import amplitude

from ..server_zone import ServerZone


class AssignmentConfig(amplitude.Config):
    """Deprecated assignment tracking: one event per distinct evaluation result per day.

    ``api_key`` is the analytics project's key, not the deployment key; every other keyword goes to
    ``amplitude.Config`` (``flush_queue_size``, ``flush_interval_millis``, ``flush_max_retries``,
    ``server_zone``, ``server_url``, ...). The first positional argument is ``cache_capacity``, as in
    the reference. ``server_zone`` also accepts :class:`~amplitude_experiment.ServerZone`.

    :param cache_capacity: distinct results remembered for deduplication; 0 disables it.
    :param send_evaluated_props: also send the user's properties and device fields.
    """

    def __init__(self, cache_capacity: int = 65536, send_evaluated_props: bool = False, **kw: Any):
        if isinstance(kw.get("server_zone"), ServerZone):
            # The analytics SDK looks zones up by their string; the enum would fail at send time.
            kw["server_zone"] = kw["server_zone"].value
        super().__init__(**kw)
        self.cache_capacity = cache_capacity
        self.send_evaluated_props = send_evaluated_props
