from .exposure_config import ExposureConfig

__all__ = ["ExposureConfig"]
