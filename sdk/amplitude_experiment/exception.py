"""Exceptions with the names and attributes of the reference SDK."""

from typing import Any, List


class FetchException(Exception):
    """A remote fetch got a response with a status other than 200."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


class CohortTooLargeException(Exception):
    """A cohort is larger than the configured maximum cohort size."""


class HTTPErrorResponseException(Exception):
    """An unexpected HTTP status from a cohort download."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


class CohortsDownloadException(Exception):
    """One or more cohorts failed to download; ``errors`` lists every one of them."""

    def __init__(self, errors: List[Any]):
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = []
        for item in self.errors:
            if isinstance(item, tuple) and len(item) == 2:
                lines.append("Cohort %s: %s" % item)
            else:
                lines.append(str(item))
        return "One or more cohorts failed to update:\n" + "\n".join(lines)
