"""The API level this package is compatible with.

``__version__`` is the version of Amplitude's SDK whose public API and evaluation results we match;
the library string is what the reference sends, so Amplitude's servers see the same client.
"""

from typing import Optional

__version__ = "1.13.0"
LIBRARY = "experiment-python-server/" + __version__
#: The name this package is distributed under (not on PyPI: install from a checkout or a wheel).
DISTRIBUTION = "amplitude-experiment-shared"


def distribution_version() -> Optional[str]:
    """This distribution's own version (pyproject.toml's), or None when running from a source tree
    that was never installed. ``__version__`` stays the Amplitude SDK version whose API we match."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python 3.9+ always has it
        return None
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None
