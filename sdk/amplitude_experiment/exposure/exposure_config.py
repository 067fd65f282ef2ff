from typing import Any

import amplitude

from ..server_zone import ServerZone


class ExposureConfig(amplitude.Config):
    """Exposure tracking, enabled per call with ``EvaluateOptions(tracks_exposure=True)``.

    ``api_key`` is the analytics project's key; other keywords go to ``amplitude.Config``
    (``server_zone`` also accepts :class:`~amplitude_experiment.ServerZone`).

    :param cache_capacity: distinct results remembered for deduplication; 0 disables it.
    """

    def __init__(self, cache_capacity: int = 65536, **kw: Any):
        if isinstance(kw.get("server_zone"), ServerZone):
            # The analytics SDK looks zones up by their string; the enum would fail at send time.
            kw["server_zone"] = kw["server_zone"].value
        super().__init__(**kw)
        self.cache_capacity = cache_capacity
