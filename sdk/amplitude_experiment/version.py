"""The API level this package is compatible with.

``__version__`` is the version of Amplitude's SDK whose public API and evaluation results we match;
the library string is what the reference sends, so Amplitude's servers see the same client.
"""

__version__ = "1.13.0"
LIBRARY = "experiment-python-server/" + __version__
