"""Independent checking: re-evaluate every goal on the patched network in float64 and with onnxruntime
(float32) on the file that is actually written.

Why two: the solver works in floating point with tolerances, and the user runs the float32 file.  A patch
passes only if numpy's float64 evaluation satisfies every constraint (within a tiny tolerance) *and* the
float32 onnxruntime outputs satisfy every strict inequality outright (the requested margin is what absorbs
float32 rounding).
"""

from __future__ import annotations

import numpy as np

from ..compile.goals import GoalGroup, slacks
from .results import GoalCheck

TOL64 = 1e-6


def check_group(group: GoalGroup, y64: np.ndarray, y32: np.ndarray | None, margin: float, line: int,
                strict: bool = True) -> GoalCheck:
    """Count the points whose constraints hold; ``margin`` is what strict inequalities were given (``strict``:
    the statement has any, so the report shows the margin)."""
    n = len(group.points)
    s64 = slacks(group, y64)
    scale = 1.0 + (float(np.max(np.abs(y64))) if y64.size else 0.0)
    ok64 = s64 >= -TOL64 * scale
    sat32 = None
    min32 = None
    if y32 is not None:
        s32 = slacks(group, y32.astype(np.float64))
        # float32 must satisfy the strict inequality itself: the margin is the budget for rounding.
        allowance = margin if margin > 0 else 1e-5 * scale
        ok32 = s32 > -allowance if margin > 0 else s32 >= -allowance
        sat32 = int(np.count_nonzero(ok32))
        min32 = float(np.min(s32)) if n else np.inf
    return GoalCheck(group.label, line, n, int(np.count_nonzero(ok64)), sat32,
                     float(np.min(s64)) if n else np.inf, min32, margin, strict=strict, tolerance64=TOL64 * scale,
                     allowance32=None if y32 is None else allowance, group=group.group)
