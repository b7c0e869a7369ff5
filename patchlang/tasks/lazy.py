"""Exact lazy solving ("cutting planes") of LP patch problems with many `keep` points.

Why: `keep clean` on 1000 points adds thousands of dense rows (one per point and competing label), yet at the
optimum only a few points are tight.  We solve with a working subset of the keep points, evaluate the patch on
all of them in float64, add the points it breaks, and repeat until it breaks none.  Each round solves a
relaxation of the full problem (a subset of its rows), and a relaxation's optimum that satisfies every row is an
optimum of the full problem, so the answer is exactly the one of the plain encoding.  Points are only ever added,
so the loop ends, at worst with every point in the working set (the plain problem).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..compile.goals import GoalGroup
from ..model.ir import Network
from ..solvers.base import Solution
from .checking import _slacks

LAZY_MIN_POINTS = 64  # smaller keep sets are encoded whole: a second round would cost more than it saves
INITIAL_POINTS = 32  # the most fragile points start in the set (smallest slack per unit of input size)
MAX_ADD = 64  # per round, at most this many of the most violated points are added (plus twice the set size)


class LazyKeep:
    """Working sets of the large `keep` groups of one patch problem, and the rounds that grow them."""

    def __init__(self, net: Network, groups: list[GoalGroup], start: int, eligible: list[int]):
        self.net = net
        self.start = start
        self.inputs = {i: net.forward_suffix(np.stack([p.h for p in groups[i].points]), 0, start) for i in eligible}
        self.working: dict[int, np.ndarray] = {}
        self.rounds = 0
        self.tidied: list[tuple[Solution, Solution, object]] = []
        for i in eligible:
            y = net.forward_suffix(self.inputs[i], start)
            # a change of size t moves an output by at most about t * ||input of the edited layer||_1
            fragility = _slacks(groups[i], y) / (1.0 + np.abs(self.inputs[i]).sum(axis=1))
            order = np.argsort(fragility, kind="stable")
            mask = np.zeros(len(groups[i].points), dtype=bool)
            mask[order[:INITIAL_POINTS]] = True
            self.working[i] = mask

    @staticmethod
    def eligible(groups: list[GoalGroup]) -> list[int]:
        """Keep groups large enough to be worth it whose points are plain conjunctions (no disjunction)."""
        return [i for i, g in enumerate(groups)
                if g.group == "keep" and len(g.points) >= LAZY_MIN_POINTS and not g.is_disjunctive]

    def subset(self, groups: list[GoalGroup]) -> list[GoalGroup]:
        """The groups with every lazy group cut down to its working set."""
        return [replace(g, points=[p for p, w in zip(g.points, self.working[i]) if w]) if i in self.working else g
                for i, g in enumerate(groups)]

    def add_violated(self, groups: list[GoalGroup], patched: Network) -> int:
        """Add the points outside the working sets that ``patched`` breaks; returns how many were added."""
        self.rounds += 1
        added = 0
        for i, mask in self.working.items():
            y = patched.forward_suffix(self.inputs[i], self.start)
            slack = _slacks(groups[i], y)
            tol = 1e-9 * (1.0 + float(np.max(np.abs(y))))
            bad = np.nonzero(~mask & (slack < -tol))[0]
            if bad.size:
                cap = MAX_ADD + 2 * int(np.count_nonzero(mask))
                bad = bad[np.argsort(slack[bad], kind="stable")[:cap]]
                mask[bad] = True
                added += int(bad.size)
        return added

    def remember_tidy(self, sol: Solution, tidy: tuple[Solution, object]) -> None:
        """The tidy (least-L1) patch already found for ``sol`` while growing the working sets."""
        self.tidied.append((sol, *tidy))

    def tidy_of(self, sol: Solution) -> tuple[Solution, object] | None:
        for s, t, enc in self.tidied:
            if s is sol:
                return t, enc
        return None

    def describe(self, groups: list[GoalGroup]) -> str:
        parts = [f"{int(np.count_nonzero(m))} of {len(groups[i].points)} points of `{groups[i].label}`"
                 for i, m in self.working.items()]
        return f"keep points added lazily: {', '.join(parts)} were needed ({self.rounds} rounds); exact"
