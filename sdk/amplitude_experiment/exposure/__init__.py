"""Exposure tracking, under the reference's names."""

from ..tracking.dedup import DAY_MILLIS
from ..tracking.exposure import Exposure, ExposureFilter, ExposureService, to_exposure_events
from .exposure_config import ExposureConfig

__all__ = ["DAY_MILLIS", "Exposure", "ExposureConfig", "ExposureFilter", "ExposureService", "to_exposure_events"]
