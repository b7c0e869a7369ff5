"""What a `repair` chooses when the spec leaves it open: room for the final proof (issue 15, "fast by default").

Why: a minimal patch makes the property hold at the counterexamples by the smallest margin allowed, so the
repaired network is barely safe next to them and the complete verifier needs a very fine split to prove it
(ACAS Xu N2,2 with property 2: 446 s, 231 s of it in the last proof).  Two defaults keep the result away from the
boundary, and the report says which were taken:

- **margin**: without `margin`, the property must hold at every counterexample by half the outputs' typical
  spread (median of max - min over samples of the property's input region; 0.02 on ACAS Xu, the bench's choice);
  after each verification that ends undecided it is doubled (up to twice the spread) and the counterexamples are
  re-required at it; if no patch exists at a raised margin, the task's own margin is tried before "no patch" is
  claimed (so the defaults never turn a repairable network into "not repaired").  An explicit `margin` is used as
  written, never raised.
- **kept samples**: without any `keep`, 300 uniform samples of the property's input region keep the original
  network's decision (those the original violates, or decides by less than the margin, are left out): the patch
  then changes the network where the counterexamples are, not everywhere.  `limit samples N` chooses another
  count (0: none), also next to a `keep`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..compile.goals import GoalGroup, PointGoal, label_alternative
from ..model.ir import Network, decide

DEFAULT_SAMPLES = 300
SPREAD_SHARE = 0.5  # the default margin: this share of the outputs' median spread over the region
RAISE = 2.0  # per undecided verification
CAP_SPREADS = 2.0  # the margin is never raised above this many spreads
SPREAD_DRAWS = 200  # samples used to measure the spread


@dataclass
class RepairDefaults:
    """The margin required at counterexamples (``margin``, moving), the task's own (``floor``), and the kept
    samples; ``explicit``: the spec gave `margin`."""

    margin: float
    floor: float
    spread: float
    explicit: bool
    samples: np.ndarray  # (n, d) inputs whose original decision is kept
    labels: np.ndarray
    samples_asked: int
    samples_default: bool
    raised: int = 0
    fell_back: bool = False
    history: list[float] = field(default_factory=list)

    def raise_margin(self) -> bool:
        """After an undecided verification: a larger margin, unless explicit or at the cap; True when raised."""
        cap = max(self.floor, CAP_SPREADS * self.spread)
        if self.explicit or self.margin >= cap:
            return False
        self.margin = min(cap, self.margin * RAISE)
        self.raised += 1
        self.history.append(self.margin)
        return True

    def fall_back(self) -> bool:
        """No patch at a margin above the task's own: go back to it once; True when the margin changed."""
        if self.explicit or self.fell_back or self.margin <= self.floor:
            return False
        self.margin = self.floor
        self.fell_back = True
        self.history.append(self.margin)
        return True

    def group(self, net: Network, span: Any) -> GoalGroup | None:
        """The kept samples as a `keep` goal at the task's own margin (None when there are none)."""
        if not len(self.samples):
            return None
        n_out = net.output_size
        h = net.to_suffix_input(self.samples)
        points = [PointGoal(f"sample[{k}]", h[k], [[label_alternative(int(lab), n_out, self.floor, net.decision)]])
                  for k, lab in enumerate(self.labels)]
        return GoalGroup("keep samples of the property's input region", "keep", span, points)

    def summary(self) -> dict[str, Any]:
        """For the JSON report's details (``defaults``)."""
        return {"margin": self.margin, "margin_chosen": "explicit" if self.explicit else "default",
                "margin_start": self.history[0] if self.history else self.margin, "margin_raised": self.raised,
                "margin_fell_back": self.fell_back, "output_spread": self.spread,
                "samples_kept": int(len(self.samples)), "samples_chosen": "default" if self.samples_default
                else "limit samples"}

    def notes(self) -> list[str]:
        """The report's sentences: what was chosen and how to choose otherwise."""
        out = []
        if not self.explicit:
            start = self.history[0] if self.history else self.margin
            how = f"margin {start:.3g} at the counterexamples (no `margin` given: half the outputs' spread " \
                  f"{self.spread:.3g} over the property's region, room for the proof)"
            if self.raised:
                how += f"; raised {self.raised}x after undecided verifications"
            if self.fell_back:
                how += f"; no patch at the raised margin, so the task's own {self.floor:g} was used"
            out.append(f"chosen by default: {how}; set `margin M` to choose")
        if len(self.samples) or self.samples_asked:
            what = "by default" if self.samples_default else "by `limit samples`"
            out.append(f"chosen {what}: {len(self.samples)} sample(s) of the property's input region keep the "
                       f"original decision (of {self.samples_asked} drawn){'; `limit samples 0` to keep none' if self.samples_default else ''}")
        return out


def choose(net: Network, ptask: Any, cases: list, seed: int) -> RepairDefaults:
    """The defaults for a repair of ``net`` over ``cases`` (``property_cases``), from the patch block ``ptask``."""
    has_keep = any(g.kind == "keep" for g in ptask.goals)
    asked = ptask.limits.get("samples")
    n = int(asked) if asked is not None else (0 if has_keep else DEFAULT_SAMPLES)
    rng = np.random.default_rng(seed)
    draws = max(n, SPREAD_DRAWS)
    which = rng.integers(0, len(cases), size=draws) if cases else np.zeros(0, int)
    x = np.zeros((draws, net.input_size))
    for i, case in enumerate(cases):
        sel = which == i
        x[sel] = case.lo + rng.random((int(sel.sum()), case.lo.size)) * (case.hi - case.lo)
    y = net.forward(x) if len(x) else np.zeros((0, net.output_size))
    spread = float(np.median(y.max(axis=1) - y.min(axis=1))) if len(y) else 0.0
    floor = float(ptask.margin)
    explicit = bool(getattr(ptask, "margin_explicit", False))
    margin = floor if explicit else max(floor, SPREAD_SHARE * spread)
    keep = np.zeros(len(x), bool)
    keep[:n] = True
    for i, case in enumerate(cases):  # a sample the original violates cannot keep its decision
        sel = np.nonzero((which == i) & keep)[0]
        if len(sel):
            keep[sel[case.spec.violated(y[sel])]] = False
    labels = decide(y, net.decision)
    ordered = np.sort(y, axis=1)
    gap = (ordered[:, 1] - ordered[:, 0]) if net.decision == "argmin" else (ordered[:, -1] - ordered[:, -2])
    keep &= gap > 2 * floor  # a near tie cannot be kept at the margin without moving the network
    return RepairDefaults(margin, floor, spread, explicit, x[keep], labels[keep], n, asked is None,
                          history=[margin])
