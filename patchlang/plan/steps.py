"""The record a planning step leaves (plain data): in a module of its own so that reading a result (the report, a
cache hit) does not import the planning machinery, scipy and the encoders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """What one step did: its name and its figures (numbers, counts, short keys; never prose)."""

    name: str
    summary: dict[str, Any] = field(default_factory=dict)
