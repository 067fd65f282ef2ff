"""OpenFeature provider for Amplitude Experiment flags (needs the ``openfeature`` extra).

Usage::

    >>> from openfeature import api
    >>> from amplitude_experiment import Experiment
    >>> from amplitude_experiment.openfeature import AmplitudeProvider
    >>> api.set_provider_and_wait(AmplitudeProvider(Experiment.initialize_local("<DEPLOYMENT_KEY>")))

See docs/openfeature.md for the context mapping, typed resolution, reasons and lifecycle.
"""

try:
    import openfeature  # noqa: F401  (the OpenFeature SDK, not this package)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("amplitude_experiment.openfeature needs the OpenFeature SDK: "
                      "pip install 'amplitude-experiment-shared[openfeature]'") from error

from .provider import PROVIDER_NAME, AmplitudeProvider

__all__ = ["AmplitudeProvider", "PROVIDER_NAME"]
