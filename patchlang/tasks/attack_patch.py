"""AIGENT (placeholder until the method lands)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AigentOutcome:
    x: np.ndarray | None
    note: str = ""


def aigent_attack(rn, x0, lo, hi, label, targets, margin, decision, away, solve, options, deadline) -> AigentOutcome:
    return AigentOutcome(None, "not implemented")
