"""AIGENT: an adversarial input through a weight patch ("attacks are patches with the unknowns moved").

1. **Patch the middle edge layer** (affine layer ``L // 2``; the highest one below it whose input is not all zero
   at ``x0`` when it sees only zeros).  The existing patch pipeline (:func:`patchlang.tasks.patch.run_patch` on a
   `patch` task built here: `edit layer M weights; change x0 away from label | to t; minimize l1`) finds a small
   weight change under which ``x0`` reaches a target; its answer is checked like any patch.  The patched
   network's label at ``x0`` and its activation pattern from the middle layer up are kept.
2. **Fix the hidden values it produces.**  With the patched phases fixed, the upper half of the *original*
   network is linear in the middle layer's input ``h``; an LP finds the ``h >= 0`` closest to ``h(x0)`` (l1)
   under which it gives that label.  Every step is a query of the region encoder
   (:func:`patchlang.compile.attack.encode_attack_query`) on the sub-network concerned.
3. **Repeat down to the first edge layer.**  Each layer's input must reproduce the values above it: equalities
   where a ReLU is on, "stays off" (an inequality) where it is off, nearest to ``x0``'s values (an LP per layer).
4. **Solve for the input.**  At the first layer the unknowns are the inputs: the least-l1 change (an LP), then the
   fewest changed inputs (a MILP started from it, :data:`L0_TIME` seconds), then changes the goal does not need
   are undone.  Where some layer's values cannot be reproduced exactly, the phases found so far are kept and one
   query over the whole network asks only that the targets are reached.

The sign marking of the paper (each edge's change fixed to increase or decrease) is what fixing the phases does
here: inside one activation pattern every step is linear, so the steps after the patch are LPs (and the last one
a short MILP).  The input found is a candidate; the caller confirms it on the original network (float64 and
onnxruntime)."""

from __future__ import annotations

import time
from itertools import islice
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ..compile.attack import attack_start, box_layer_bounds, encode_attack_query, equality_spec, target_spec
from ..compile.attack_marks import marked_patches
from ..compile.bounds import LayerBounds, ReluNet
from ..solution import FEASIBLE, OPTIMAL, SolveOptions


@dataclass
class AigentOutcome:
    x: np.ndarray | None
    note: str = ""
    patch_l1: float | None = None  # size of the middle-layer weight patch
    marking: str = ""  # how the middle-layer patch was found: "sign-marked LP (...)" or "patch MILP"


def middle_layer(rn: ReluNet, x0: np.ndarray) -> int:
    """The middle edge layer (affine layer ``L // 2``), or the highest one below it whose input is not all zero at
    ``x0`` (a weight patch of a layer that sees only zeros changes nothing)."""
    acts = [np.asarray(x0, float)]
    for W, b in zip(rn.Ws[:-1], rn.bs[:-1]):
        acts.append(np.maximum(W @ acts[-1] + b, 0.0))
    mid = len(rn.Ws) // 2
    while mid > 0 and not np.any(acts[mid]):
        mid -= 1
    return mid


def middle_patch_pattern(net: Any, x0: np.ndarray, label: int, targets: list[int], away: bool, margin: float,
                         time_limit: float) -> tuple[list[np.ndarray] | None, float | None, int, str]:
    """Step 1: the activation pattern (per hidden layer, bool) of the patched network at ``x0``, the patch's l1
    size and the label it gives ``x0``, by a `patch` query of the existing pipeline; (None, None, -1, why) when
    no patch is found."""
    from ..errors import Span
    from ..inputs.points import inline_points
    from ..lang.program import BackendChoice, GoalSpec, ModelEntry, PatchTask
    from ..model.edits import EditSpec, NormSpec
    from .patch import RunOptions, run_patch

    from ..compile.bounds import relu_network

    mid = middle_layer(relu_network(net), x0)
    layer = net.affine(mid)
    span = Span("<attack>", 0, 0)
    ps = inline_points([list(map(float, x0))], [label], name="x0")
    goal = (GoalSpec("away", ps, span, "change x0 away from label") if away
            else GoalSpec("one_of" if len(targets) > 1 else "to", ps, span, f"change x0 to {targets}",
                          labels=tuple(targets)))
    task = PatchTask("aigent_middle", ModelEntry(net.name, net, "", span),
                     [EditSpec(mid, "weights", np.ones(layer.W.shape, dtype=bool), span, f"{layer.name}.weight")],
                     [goal], NormSpec(objective=[(1.0, "l1")]), max(margin, 1e-3), None, BackendChoice("auto"),
                     span, "MILP", "AIGENT middle layer", margin_explicit=True)
    r = run_patch(task, RunOptions(time_limit=max(0.1, time_limit), write_files=False))
    if r.patched is None or not r.succeeded:
        return None, None, -1, f"no middle-layer patch ({r.status})"

    prn = relu_network(r.patched)
    h = x0
    pattern = []
    for W, b in zip(prn.Ws[:-1], prn.bs[:-1]):
        z = W @ h + b
        pattern.append(z > 0)
        h = np.maximum(z, 0.0)
    new_label = int(r.patched.labels(x0[None])[0])
    return pattern, r.distances.get("l1"), new_label, ""


def aigent_attack(net: Any, rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, label: int,
                  targets: list[int], margin: float, away: bool, norm: str,
                  solve: Callable[[Any, SolveOptions], Any], options: SolveOptions, deadline: float
                  ) -> AigentOutcome:
    """See the module docstring; ``x`` is a candidate (unconfirmed) or None with the reason in ``note``."""
    mid = middle_layer(rn, x0)
    out = AigentOutcome(None, "no sign-marked LP patch", marking="none")
    # the middle layer first (AIGENT's choice); on a deeper network the hidden values a middle-layer patch
    # produces are often out of the lower half's reach, so then the first edge layer, whose values the input
    # reproduces directly
    for layer in ([mid, 0] if mid > 0 else [mid]):
        marked = marked_patches(net.decision, rn, x0, layer, label, targets, away, max(margin, 1e-3), solve,
                              replace(options, start=None),
                              lambda: min(deadline - time.perf_counter(), MARKED_TIME))
        for mp in islice(marked, MARKED_TRIES):  # the likeliest to be reproducible from below first
            out = _from_pattern(net, rn, x0, lo, hi, label, targets, margin, away, norm, solve, options,
                                deadline, mp.pattern, mp.l1, mp.new_label, layer)
            out.marking = f"sign-marked LP ({mp.marking.summary()}; {mp.phases})"
            if out.x is not None or time.perf_counter() >= deadline:
                return out
    if rn.n_hidden - mid > FALLBACK_MILP_ABOVE:
        return out
    # no usable marked patch: the whole patch query (a MILP over the phases above the edit)
    pattern, patch_l1, new_label, why = middle_patch_pattern(net, x0, label, targets, away, margin,
                                                             deadline - time.perf_counter())
    if pattern is None:
        return AigentOutcome(None, f"{out.note}; {why}", marking=out.marking)
    out = _from_pattern(net, rn, x0, lo, hi, label, targets, margin, away, norm, solve, options, deadline,
                        pattern, patch_l1, new_label, mid)
    out.marking = "patch MILP (no usable sign-marked LP patch)"
    return out


def _from_pattern(net: Any, rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, label: int,
                  targets: list[int], margin: float, away: bool, norm: str,
                  solve: Callable[[Any, SolveOptions], Any], options: SolveOptions, deadline: float,
                  pattern: list[np.ndarray], patch_l1: float | None, new_label: int, mid: int) -> AigentOutcome:
    """Steps 2-4 from the patched network's activation pattern at ``x0`` and its label there."""
    box = box_layer_bounds(rn, lo, hi)
    acts = [x0]
    for W, b in zip(rn.Ws[:-1], rn.bs[:-1]):
        acts.append(np.maximum(W @ acts[-1] + b, 0.0))
    # step 2: the middle layer's input h'' closest to h(x0) under which the upper half, with the patched phases,
    # reaches the patched label (an LP: every phase above is fixed)
    upper = ReluNet(rn.Ws[mid:], rn.bs[mid:])
    if mid:
        h_hi = np.maximum(box.upper[mid - 1][0], 0.0)
        h_lo, h_norm = np.zeros_like(h_hi), "l1"
    else:  # the first layer was patched: its input is the input itself
        h_lo, h_hi, h_norm = lo, hi, norm
    spec = target_spec(label, [new_label], rn.output_size, net.decision, away=away)
    fixed = _fixed_phases(upper, pattern[mid:], acts[mid], h_lo, h_hi)
    if fixed is None:
        return AigentOutcome(None, "the patched phases are out of the input box's reach", patch_l1)
    h = _solve_input(upper, acts[mid], h_lo, h_hi, spec, h_norm, fixed, max(margin, 1e-3), solve, options,
                     deadline, REGION_TIME)
    if h is None:
        return AigentOutcome(None, "no hidden values of the middle layer reach the patched label", patch_l1)
    # repeat down to the first edge layer: each layer's input reproduces the values above it (equalities where a
    # ReLU is on, "stays off" where it is off)
    phases: dict[int, np.ndarray] = {k: pattern[k] for k in range(mid, rn.n_hidden)}
    spec_all = target_spec(label, targets, rn.output_size, net.decision, away=away)
    for layer in range(mid - 1, -1, -1):
        phases[layer] = h > 0
        one = ReluNet([rn.Ws[layer], np.eye(rn.Ws[layer].shape[0])], [rn.bs[layer], np.zeros(rn.Ws[layer].shape[0])])
        on = h > 0
        if layer == 0:
            below_lo, below_hi, n = lo, hi, norm
        else:
            below_hi = np.maximum(box.upper[layer - 1][0], 0.0)
            below_lo, n = np.zeros_like(below_hi), "l1"
        phase = LayerBounds([np.where(on, np.maximum(box.lower[layer], 0.0), box.lower[layer])],
                            [np.where(on, box.upper[layer], np.minimum(box.upper[layer], 0.0))])
        reproduced = None
        if not np.any(phase.lower[0] > phase.upper[0]):
            eq = equality_spec(np.where(on, h, 0.0), np.nonzero(on)[0])
            reproduced = _solve_input(one, acts[layer], below_lo, below_hi, eq, n, phase, 0.0, solve, options,
                                      deadline, REGION_TIME if layer else L0_TIME + REGION_TIME)
        if reproduced is None:
            # the values cannot be reproduced exactly: keep their phases (and the patched ones above), ask only
            # that the targets are reached, over the whole network from the input
            x = _solve_input(rn, x0, lo, hi, spec_all, norm, _phase_region(box, phases), margin, solve, options,
                             deadline, REGION_TIME)
            if x is None:
                return AigentOutcome(None, f"no input reproduces layer {layer}'s values or their phases",
                                     patch_l1)
            return AigentOutcome(_undo_unneeded(rn, x, x0, spec_all, margin), "phases reproduced", patch_l1)
        h = reproduced
    return AigentOutcome(_undo_unneeded(rn, h, x0, spec_all, margin), "", patch_l1)


def _phase_region(box: LayerBounds, phases: dict[int, np.ndarray]) -> LayerBounds:
    """The box bounds with the phases of ``phases`` fixed (layers not named keep their ReLU atoms); a phase the
    box rules out is left to the box (the query is then merely infeasible)."""
    lowers, uppers = [], []
    for k, (l, u) in enumerate(zip(box.lower, box.upper)):
        if k in phases:
            on = phases[k]
            l2 = np.where(on, np.maximum(l, 0.0), l)
            u2 = np.where(on, u, np.minimum(u, 0.0))
            bad = l2 > u2
            l, u = np.where(bad, l, l2), np.where(bad, u, u2)
        lowers.append(l)
        uppers.append(u)
    return LayerBounds(lowers, uppers)


def _fixed_phases(rn: ReluNet, pattern: list[np.ndarray], h0: np.ndarray, lo: np.ndarray, hi: np.ndarray
                  ) -> LayerBounds | None:
    """Box bounds of ``rn`` over ``[lo, hi]`` with every hidden phase fixed to ``pattern`` (None if the box
    rules a phase out)."""
    box = box_layer_bounds(rn, lo, hi)
    lowers, uppers = [], []
    for k, on in enumerate(pattern):
        l, u = box.lower[k][0], box.upper[k][0]
        l2 = np.where(on, np.maximum(l, 0.0), l)
        u2 = np.where(on, u, np.minimum(u, 0.0))
        if np.any(l2 > u2):
            return None
        lowers.append(l2[None])
        uppers.append(u2[None])
    return LayerBounds(lowers, uppers)


MARKED_TIME = 2.0  # seconds at most for each sign-marked LP of the middle-layer patch
MARKED_TRIES = 6  # marked patches whose hidden values are tried down to the input
# after the marked patches, the whole patch MILP (AIGENT without marking), when at most this many hidden layers
# lie above the edit (deeper, it does not finish in seconds: 784-50x6-10 timed out on every image)
FALLBACK_MILP_ABOVE = 1
REGION_TIME = 1.0  # seconds for the region's first query (an LP when every phase is fixed)
L0_TIME = 0.3  # seconds for the fewest-changed-inputs MILP over the linear region (it starts from the L1 answer)


def _solve_input(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: Any, norm: str,
                 bounds: LayerBounds, margin: float, solve: Callable[[Any, SolveOptions], Any],
                 options: SolveOptions, deadline: float, limit: float) -> np.ndarray | None:
    """The input of ``rn`` in ``[lo, hi]`` closest to ``x0`` whose outputs meet ``spec`` (with ``bounds`` fixing
    the phases), or None.  For l0 the least-l1 answer (an LP) comes first and the fewest-changed-inputs MILP
    starts from it for :data:`L0_TIME` seconds."""
    def run(n: str, start: np.ndarray | None, seconds: float) -> np.ndarray | None:
        enc = encode_attack_query(rn, x0, lo, hi, spec, None, n, bounds, margin)
        opts = replace(options, time_limit=max(0.05, min(seconds, deadline - time.perf_counter())))
        if start is not None:
            opts = replace(opts, start=attack_start(rn, enc, bounds, start, x0, n))
        sol = solve(enc.query, opts)
        if sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
            return None
        x = np.clip(sol.x[enc.inputs], lo, hi)
        same = np.abs(x - x0) <= 1e-7 * (1.0 + np.abs(x0))
        x[same] = x0[same]
        return x

    first = run("l1" if norm == "l0" else norm, None, limit)
    if first is None or norm != "l0":
        return first
    sparse = run("l0", first, L0_TIME)
    if sparse is not None and np.count_nonzero(sparse != x0) < np.count_nonzero(first != x0):
        return sparse
    return first


def _undo_unneeded(rn: ReluNet, x: np.ndarray, x0: np.ndarray, spec: Any, margin: float) -> np.ndarray:
    """Reset changed inputs to ``x0``, smallest change first, while the target region is still reached."""
    changed = np.nonzero(x != x0)[0]
    for i in changed[np.argsort(np.abs(x - x0)[changed])]:
        trial = x.copy()
        trial[i] = x0[i]
        if spec.violated(rn.forward(trial[None]), tol=-margin)[0]:
            x = trial
    return x
