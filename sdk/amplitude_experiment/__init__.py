"""Amplitude Experiment's Python server SDK API, with shared-memory flags from a per-host flagd.

Usage::

    >>> from amplitude_experiment import Experiment, User
    >>> experiment = Experiment.initialize_local("<DEPLOYMENT_KEY>")
    >>> experiment.start()
    >>> variants = experiment.evaluate_v2(User(user_id="u1"))
"""

from .assignment import AssignmentConfig
from .cohort.cohort_sync_config import CohortSyncConfig
from .cookie import AmplitudeCookie
from .factory import Experiment
from .local.client import LocalEvaluationClient
from .local.config import LocalEvaluationConfig
from .local._shared_source import FlagdUnavailableError
from .remote.client import RemoteEvaluationClient
from .remote.config import RemoteEvaluationConfig
from .server_zone import ServerZone
from .user import User
from .variant import Variant
from .version import __version__
