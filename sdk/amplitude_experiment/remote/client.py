"""Placeholder until remote evaluation lands (issue 4)."""

from typing import Optional

from .config import RemoteEvaluationConfig


class RemoteEvaluationClient:
    def __init__(self, api_key: str, config: Optional[RemoteEvaluationConfig] = None):
        if not api_key:
            raise ValueError("Experiment API key is empty")
        self.api_key = api_key
        self.config = config or RemoteEvaluationConfig()
