"""Detects Amplitude's own ``amplitude-experiment`` installed over (or under) this distribution.

Both distributions install the import name ``amplitude_experiment`` into the same directory, and pip
lets the last one installed overwrite the other's files without a word. What is left is a mix:
Amplitude's client with none of shared mode, or our files that ``pip uninstall amplitude-experiment``
will delete. This module only reads package metadata (standard library only, and it imports nothing
from the package), so flagd can load it even when the package itself no longer imports.
"""

import base64
import hashlib
import importlib.util
import os
from typing import Optional

__all__ = ["AMPLITUDE_DISTRIBUTION", "OUR_DISTRIBUTION", "conflict_message"]

AMPLITUDE_DISTRIBUTION = "amplitude-experiment"
OUR_DISTRIBUTION = "amplitude-experiment-shared"
_MARKER = "amplitude_experiment/__init__.py"


def conflict_message() -> Optional[str]:
    """None when Amplitude's distribution is not installed where ``amplitude_experiment`` is imported
    from; else what happened and how to fix it, in one paragraph. Starts with "REPLACED: " when the
    package's files in place are Amplitude's (ours cannot work), "SHARED: " when ours are in place."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution
    except ImportError:  # pragma: no cover - Python 3.9+ always has it
        return None
    spec = importlib.util.find_spec("amplitude_experiment")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = os.path.realpath(list(spec.submodule_search_locations)[0])
    try:
        theirs = distribution(AMPLITUDE_DISTRIBUTION)
    except PackageNotFoundError:
        return None
    their_dir = os.path.realpath(os.path.dirname(str(theirs.locate_file(_MARKER))))
    if their_dir != package_dir:
        return None  # installed elsewhere on the path (another site-packages): ours shadows it
    replaced = _installed_by(theirs, os.path.join(package_dir, "__init__.py"))
    fix = ("Install only one of them per environment: `pip uninstall -y %s %s` and then install %s again "
           "(from your checkout or wheel; it is not on PyPI)." % (AMPLITUDE_DISTRIBUTION, OUR_DISTRIBUTION,
                                                                OUR_DISTRIBUTION))
    if replaced:
        return ("REPLACED: Amplitude's %s %s was installed after %s into %s: both provide the import name "
                "amplitude_experiment, and its files replaced ours, so shared mode and flagd cannot work. %s"
                % (AMPLITUDE_DISTRIBUTION, theirs.version, OUR_DISTRIBUTION, package_dir, fix))
    return ("SHARED: Amplitude's %s %s is installed in %s beside %s: both provide the import name "
            "amplitude_experiment and overwrite each other's files; uninstalling or upgrading it will break "
            "this SDK. %s" % (AMPLITUDE_DISTRIBUTION, theirs.version, package_dir, OUR_DISTRIBUTION, fix))


def _installed_by(dist: object, path: str) -> bool:
    """Whether the file at ``path`` has the content ``dist``'s RECORD lists for the marker file."""
    for entry in getattr(dist, "files", None) or []:
        if str(entry).replace(os.sep, "/") != _MARKER or entry.hash is None:
            continue
        try:
            with open(path, "rb") as handle:
                digest = hashlib.new(entry.hash.mode, handle.read()).digest()
        except (OSError, ValueError):
            return False
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii") == entry.hash.value
    return False
