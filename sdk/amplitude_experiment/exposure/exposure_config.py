import amplitude


class ExposureConfig(amplitude.Config):
    """Exposure tracking, enabled per call with ``EvaluateOptions(tracks_exposure=True)``.

    ``api_key`` is the analytics project's key; other keywords go to ``amplitude.Config``.
    """

    def __init__(self, cache_capacity: int = 65536, **kw):
        super().__init__(**kw)
        self.cache_capacity = cache_capacity
