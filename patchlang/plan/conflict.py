"""Driver: conflict shrinking, a small set of the user's own statements that cannot all hold (the planning half of
"why no patch exists"; :mod:`patchlang.tasks.explain` words it).

The Query of an infeasible task is split into *droppable groups*, each one statement for one point ("keep good"
on test[12]), one `bound` statement, or the bounds a `bound linf` statement puts on every changed parameter (and
everything derived from them).  Rows that only define things (the network's layers, the norms' auxiliary
variables, ReLU atoms) are always kept: dropping them would not relax any wish of the user's.

The chosen backend does the work first when it offers LP relaxations and infeasible subsets (HiGHS;
:func:`_relaxation_core`): when the LP relaxation is infeasible (a proof for the MILP too),
its irreducible infeasible subset seeds a deletion filter in halving chunks that runs on LP relaxations, and
only the few groups left are filtered with exact MILP checks; restrictions carry only the network copies of the
points they keep (:func:`restrict`), so a check about two statements is a small problem.  Z3's unsat cores
under assumptions handle what HiGHS cannot (products of unknowns) and are the fall-back (first, with
`using z3`).  Each statement named is needed for the conflict when the filter finishes in time; otherwise the
report says the conflict may not be minimal.  The whole search has a budget (:func:`explain_budget`: a share
of the task's time limit): the verdict "no patch" is already proven, naming why must not cost more.
Every set reported was itself shown infeasible: an explanation must never be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..compile.fixed_phase import definitions, fixed_phase_query
from ..errors import PatchlangError, Span
from ..query import Query
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, SolveOptions
from ..solvers.base import Backend
from ..solvers.milp import lower_to_milp
from ..solvers.registry import get_backend
from ..solvers.z3backend import Tracking, Z3Backend
from .budget import Budget

GOAL_GROUPS = ("change", "require", "keep", "property", "bound")
BOUND_KINDS = ("delta", "norm", "neuron")
DEFAULT_BUDGET = 10.0  # seconds for an explanation when the task has no time limit
EXPLAIN_SHARE = 0.25  # of the task's time limit, when it has one
# HiGHS's IIS ignores the time limit and grows fast with the model (bias patching, keep 1000: 77k rows, 20 s);
# above this the deletion filter on LP relaxations alone is faster (1.5 s there)
IIS_MAX_ROWS = 20_000


@dataclass
class Item:
    """One droppable group: a statement (for one point, when it is per point) or a bound."""

    statement: str
    point: str
    group: str  # change | require | keep | property | bound
    span: Span | None


def tracked_items(q: Query) -> tuple[list[Item], Tracking]:
    """The droppable groups of ``q`` and the matching :class:`Tracking` (see the module docstring)."""
    items: list[Item] = []
    row_group = np.full(q.n_rows, -1, dtype=np.int64)
    bound_vars = np.zeros(q.n_vars, dtype=bool)
    bound_group = -1
    src = q.var_bound_source
    if src is not None:
        for b in q.var_blocks:
            if b.kind in BOUND_KINDS:
                sl = b.slice
                bound_vars[sl] = np.isfinite(q.lb[sl]) | np.isfinite(q.ub[sl])
        bound_group = len(items)
        items.append(Item(src.label, "", "bound", src.span))
    for blk in q.row_blocks:
        if blk.group in GOAL_GROUPS:
            row_group[blk.slice] = len(items)
            items.append(Item(blk.statement or blk.label, blk.point, blk.group, blk.span))
        elif blk.group == "norm" and bound_group >= 0 and _touches(q, blk, "changed"):
            row_group[blk.slice] = bound_group  # an l0 indicator row: its big-M is the linf bound
    disj_group = []
    for d in q.disjunctions:
        if d.group in GOAL_GROUPS:
            disj_group.append(len(items))
            items.append(Item(d.statement or d.label, d.point, d.group, d.span))
        else:
            disj_group.append(-1)
    return items, Tracking(row_group, disj_group, bound_vars, bound_group, len(items))


def _touches(q: Query, blk, norm: str) -> bool:
    """Whether the rows of ``blk`` use the variables of the query's ``norm`` block (from the encoder's structure)."""
    block = q.structure.norm_block(norm) if q.structure is not None else None
    if block is None:
        return False
    cols = q.A[blk.slice].indices
    return bool(np.any((cols >= block.start) & (cols < block.start + block.size)))


def relaxation_backend() -> Backend | None:
    """The backend for relaxation checks when the task lets patchlang choose: HiGHS, if installed."""
    try:
        return get_backend("highs")
    except PatchlangError:
        return None


def restrict(q: Query, tracking: Tracking, keep: set[int]) -> Query:
    """``q`` with only the groups in ``keep`` (and every untracked constraint), as a feasibility problem, without
    the network copies of points no kept statement looks at (:func:`_unused_network`)."""
    out = drop_groups(q, tracking, keep)
    rows, relus = _unused_network(out)
    if rows.size or relus.size:
        out.row_lo[rows], out.row_hi[rows] = -np.inf, np.inf
        out.relus = np.delete(out.relus, relus, axis=0)
    return out


def drop_groups(q: Query, tracking: Tracking, keep: set[int]) -> Query:
    """``q`` with the rows, disjunctions and bounds of the groups not in ``keep`` relaxed, objective zero."""
    drop_rows = (tracking.row_group >= 0) & ~np.isin(tracking.row_group, list(keep))
    row_lo, row_hi = q.row_lo.copy(), q.row_hi.copy()
    row_lo[drop_rows], row_hi[drop_rows] = -np.inf, np.inf
    lb, ub = q.lb.copy(), q.ub.copy()
    if tracking.bound_group >= 0 and tracking.bound_group not in keep:
        lb[tracking.bound_vars], ub[tracking.bound_vars] = -np.inf, np.inf
    disj = [d for d, g in zip(q.disjunctions, tracking.disj_group) if g < 0 or g in keep]
    return q.derive(lb=lb, ub=ub, row_lo=row_lo, row_hi=row_hi, disjunctions=disj, c=np.zeros(q.n_vars),
                   offset=0.0)


def _unused_network(q: Query) -> tuple[np.ndarray, np.ndarray]:
    """Network rows and ReLU atoms that only define neurons no remaining constraint uses (the copies of the
    network for the points of dropped statements): ``(row indices, ReLU atom indices)``.

    Why: a restriction to two statements should be a problem about their points only; with the unused copies
    left in, every check of a thousand-point `keep` costs as much as the whole MILP (their binaries included).
    Dropping them is exact: each defines its neuron from earlier variables, and a neuron nothing else uses can
    take that value, which lies within its bounds because they are sound for every change allowed by the
    remaining bounds (and are dropped with the `bound` statement)."""
    net = definitions(q)
    active = np.isfinite(q.row_lo) | np.isfinite(q.row_hi)
    defining = net.rows[active[net.rows]]
    # needed: every variable of a constraint that is not a definition, and everything that is not a neuron
    other = active.copy()
    other[net.rows] = False
    seed = ~net.neuron
    seed[q.A.tocsr()[other].indices] = True
    for d in q.disjunctions:
        seed[d.A.indices[d.A.indices < q.n_vars]] = True
    needed = net.needed(q, seed, defining)
    y = q.relus[:, 0] if len(q.relus) else np.zeros(0, np.int64)
    return defining[~needed[net.last[defining]]], np.nonzero(~needed[y])[0]


# --------------------------------------------------------------------------------------------- finding a core
class Oracle:
    """Does the query restricted to a set of groups (:func:`restrict`) have no solution?  ``True`` (proven),
    ``False`` (shown satisfiable, or not refuted by the relaxation: the group is kept), ``None`` (no answer in
    time).  Cheapest proof first, every call bounded by the shared deadline.

    Why several checks: the LP relaxation (binaries continuous) is a fast, *sound* proof of infeasibility of a
    MILP restriction, but its "feasible" proves nothing; the MILP itself answers exactly; a restriction whose
    ReLUs lose their bounds (the `bound` statement dropped) cannot be lowered to a MILP at all, and then an LP
    with the ReLU phases fixed at ``reference`` (a restriction: feasible means a real solution) or Z3 answers."""

    def __init__(self, q: Query, tracking: Tracking, options: SolveOptions, budget: Budget,
                 reference: np.ndarray | None = None, backend: Backend | None = None):
        self.q, self.tracking, self.budget, self.reference = q, tracking, budget, reference
        self.options = replace(options, start=None, feasibility_only=True, mip_gap=None)
        backend = backend if backend is not None else relaxation_backend()
        # the checks below use LP relaxations and infeasible subsets of the MILP lowering: a backend declaring them
        self.highs = backend if backend is not None and "relaxation" in backend.capabilities else None
        self.z3 = Z3Backend() if Z3Backend().available() and not len(q.products) else None
        self.calls = 0
        self.answered_by: set[str] = set()

    def left(self) -> float:
        left = self.budget.time_left()
        return np.inf if left is None else left

    def _opts(self) -> SolveOptions | None:
        return self.budget.options(self.options) if self.left() > 0 else None

    def relaxation(self, keep: set[int]) -> bool | None:
        """True when the LP relaxation of the restriction is infeasible (a proof for the MILP too)."""
        if self.left() <= 0:
            return None
        m = self._lowered(keep)
        return None if m is None else self._lp_infeasible(m)

    def _lowered(self, keep: set[int]):
        if self.highs is None:
            return None
        try:
            m = lower_to_milp(restrict(self.q, self.tracking, keep))
        except PatchlangError:  # ReLUs without bounds (the bound dropped), products: not a MILP
            return None
        return m

    def _lp_infeasible(self, m) -> bool | None:
        opts = self._opts()
        if opts is None:
            return None
        self.calls += 1
        relaxed = replace(m, integer=np.zeros_like(m.integer))
        st = self.highs.solve_linear(relaxed, opts, is_mip=False).status
        if st == INFEASIBLE:
            self.answered_by.add("LP relaxation")
            return True
        return False if st in (OPTIMAL, FEASIBLE) else None

    def exact(self, keep: set[int], relaxation_first: bool = False) -> bool | None:
        """The restriction's own verdict (HiGHS on its MILP or LP, else fixed phases / Z3)."""
        if self.left() <= 0:
            return None
        m = self._lowered(keep)
        if m is not None:
            is_mip = bool(np.any(m.integer))
            if relaxation_first or not is_mip:
                verdict = self._lp_infeasible(m)
                if verdict or not is_mip:
                    return verdict
            opts = self._opts()
            if opts is None:
                return None
            self.calls += 1
            st = self.highs.solve_linear(m, opts, is_mip=True).status
            if st == INFEASIBLE:
                self.answered_by.add("HiGHS MILP")
                return True
            if st in (OPTIMAL, FEASIBLE):
                return False
            return None
        sub = restrict(self.q, self.tracking, keep)
        if self.highs is not None and self.reference is not None and not len(sub.products):
            opts = self._opts()
            if opts is None:
                return None
            self.calls += 1
            st = self.highs.solve(fixed_phase_query(sub, self.reference), opts).status
            if st in (OPTIMAL, FEASIBLE):
                return False  # a real solution of the restriction
        if self.z3 is not None:
            opts = self._opts()
            if opts is None:
                return None
            self.calls += 1
            st = self.z3.solve(sub, opts).status
            if st == INFEASIBLE:
                self.answered_by.add("Z3")
                return True
            return False if st in (OPTIMAL, FEASIBLE) else None
        return None


def _iis_groups(oracle: Oracle) -> set[int] | None:
    """The groups of HiGHS's infeasible subset of the LP relaxation of the whole query (None when it has none)."""
    m = oracle._lowered(set(range(oracle.tracking.n_groups)))
    opts = oracle._opts()
    if m is None or opts is None or m.A.shape[0] > IIS_MAX_ROWS:
        return None
    oracle.calls += 1
    iis = oracle.highs.iis(replace(m, integer=np.zeros_like(m.integer)), opts)
    if iis is None:
        return None
    rows, cols = iis
    q, tracking = oracle.q, oracle.tracking
    ids = {int(g) for g in tracking.row_group[rows[rows < q.n_rows]] if g >= 0}
    for (lo, hi), g in zip(m.disj_rows or [], tracking.disj_group):
        if g >= 0 and np.any((rows >= lo) & (rows < hi)):
            ids.add(int(g))
    cols = cols[cols < q.n_vars]
    if tracking.bound_group >= 0 and np.any(tracking.bound_vars[cols]):
        ids.add(tracking.bound_group)
    return ids


def _relaxation_core(q: Query, tracking: Tracking, items: list[Item], options: SolveOptions, budget: Budget,
                     reference: np.ndarray | None = None, backend: Backend | None = None
                     ) -> tuple[list[int], bool, int] | None:
    """A conflict found with a backend offering LP relaxations and infeasible subsets (HiGHS) (see :class:`Oracle`), or None when HiGHS cannot help or finds none.

    When the LP relaxation is already infeasible (often: tight big-Ms, most phases fixed by bounds), HiGHS's
    infeasible subset of it seeds the search and the deletion filter runs on LPs; only the small conflict left is
    then filtered with exact checks (the MILP), so few hard problems are solved.  Otherwise the filter runs on the
    MILP from every group.  The set returned was itself shown infeasible."""
    oracle = Oracle(q, tracking, options, budget, reference, backend)
    if oracle.highs is None or len(q.products):
        return None
    everything = set(range(tracking.n_groups))
    # the many `keep` groups rarely take part in a conflict: first in line, so that halves of them go at once
    ids = sorted(everything, key=lambda i: _SHRINK_ORDER.get(items[i].group, 9))
    if oracle.relaxation(everything):
        seed = _iis_groups(oracle)
        if seed is not None and seed != everything and oracle.relaxation(seed):
            ids = [i for i in ids if i in seed]
        ids, _ = shrink(ids, oracle.relaxation)  # infeasible relaxations only: sound for the MILP
    elif oracle.exact(everything) is not True:
        return None  # feasible (nothing to explain) or not decided in time
    kept, minimal = shrink(ids, oracle.exact)
    return kept, minimal, oracle.calls


_SHRINK_ORDER = {"keep": 0, "property": 1, "require": 2, "change": 3, "bound": 4}


def shrink(ids: list[int], infeasible: Callable[[set[int]], bool | None]) -> tuple[list[int], bool]:
    """Deletion filter in halving chunks (QuickXplain-like: a conflict of k among n groups costs about
    2 k log2(n/k) checks, not n): drop each chunk whose removal keeps the set infeasible, down to single groups.

    ``infeasible(set)`` answers True / False / None (no answer in time).  A chunk without an answer is kept and
    the result is then not claimed irreducible; every set returned was shown infeasible (or is ``ids``).
    Returns ``(groups, minimal?)``."""
    keep = list(ids)
    minimal = True
    chunk = max(1, len(keep) // 2)
    while True:
        i = 0
        while i < len(keep):
            trial = keep[:i] + keep[i + chunk:]
            verdict = infeasible(set(trial)) if trial else False
            if verdict is None:
                minimal = False
            if verdict:
                keep = trial
            else:
                i += chunk
        if chunk == 1:
            return keep, minimal
        chunk = max(1, chunk // 2)


def _z3_core(q: Query, tracking: Tracking, items: list[Item], options: SolveOptions, budget: Budget,
             reference: np.ndarray | None = None, backend: Backend | None = None
             ) -> tuple[list[int], bool, int] | None:
    backend = Z3Backend()
    if not backend.available():
        return None
    left = budget.time_left()
    opts = replace(options, time_limit=max(1.0, left if left is not None else DEFAULT_BUDGET))
    ids, minimal, calls = backend.core(q, tracking, opts)
    if ids is None:
        return None
    return ids, minimal, calls


def explain_budget(options: SolveOptions) -> float:
    """Seconds for naming a conflict: a share of the task's time limit, or a small default.

    Why bounded: the verdict "no patch" is already proven when explaining starts; the explanation is a courtesy
    and must not cost more than the verdict's own budget (it took up to a minute on bias patching)."""
    return EXPLAIN_SHARE * options.time_limit if options.time_limit is not None else DEFAULT_BUDGET


def find_core(q: Query, options: SolveOptions, budget: Budget | float | None = None, prefer: str = "",
              reference: np.ndarray | None = None, backend: Backend | None = None
              ) -> tuple[list[Item], list[int], bool, str, int] | None:
    """``(items, conflicting item ids, minimal?, method, solver calls)`` or None if no conflict was found.

    HiGHS first (LP relaxation, IIS, MILP checks; see :func:`_highs_core`) unless ``prefer`` is ``"z3"`` (the user
    asked for exact arithmetic); Z3's unsat cores handle the rest (products of unknowns) and are the fall-back.
    ``reference``: an assignment of the query's variables (the unpatched network) whose ReLU phases give a cheap
    satisfiability check when the `bound` statement is dropped."""
    items, tracking = tracked_items(q)
    if not items:
        return None
    if not isinstance(budget, Budget):
        budget = Budget.seconds(budget if budget is not None else explain_budget(options))
    highs = (_relaxation_core, "HiGHS (LP relaxation / IIS, MILP checks) + deletion filter")
    z3 = (_z3_core, "Z3 unsat core + deletion filter")
    finders = [z3, highs] if prefer == "z3" else [highs, z3]
    for finder, method in finders:
        if budget.expired:
            break
        try:
            found = finder(q, tracking, items, options, budget, reference, backend)
        except PatchlangError:
            found = None
        if found is not None:
            ids, minimal, calls = found
            return items, ids, minimal, method, calls
    return None


