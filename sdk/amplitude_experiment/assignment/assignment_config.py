import amplitude


class AssignmentConfig(amplitude.Config):
    """Deprecated assignment tracking: one event per distinct evaluation result per day.

    ``api_key`` is the analytics project's key, not the deployment key; every other keyword goes to
    ``amplitude.Config`` (``flush_queue_size``, ``flush_interval_millis``, ``server_zone``, ``server_url``, ...).
    The first positional argument is ``cache_capacity``, as in the reference.
    """

    def __init__(self, cache_capacity: int = 65536, send_evaluated_props: bool = False, **kw):
        super().__init__(**kw)
        self.cache_capacity = cache_capacity
        self.send_evaluated_props = send_evaluated_props
