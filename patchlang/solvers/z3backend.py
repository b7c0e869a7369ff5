"""The exact backend: Z3 over rational arithmetic, given the same Query as every other backend.

Why a text translation: the Query is written once as SMT-LIB 2 (:func:`query_to_smt2`) and Z3 parses it in C++.
That one translation is what we solve, what ``patchlang export --format smt2`` writes for other solvers, and
what infeasibility cores are computed on, so the three can never disagree.  Every float64 coefficient and bound
becomes the *exact* decimal expansion of that float (a float is a dyadic rational, so the expansion is finite):
nothing is rounded on the way in.  ReLU atoms are ``ite`` terms, disjunctions ``or`` of ``and``, integer
variables ``Int``, products of two unknowns ``*`` (nonlinear real arithmetic).

Minimisation: Z3's ``Optimize`` (exact simplex-based optimisation) or a bisection on the objective with a final
strict check ``objective < best`` that, when unsatisfiable, proves the best value exactly optimal.  Which one
``method = "auto"`` picks was decided by measuring (see ``bench/backends.py`` and docs/backends.md): ``Optimize``
for linear problems (with or without integers), bisection when ReLU atoms, disjunctions or products are present.
An objective that only counts (L0) is bisected over the integers, so refuting ``<= k`` proves ``>= k + 1``.  The bracket ``[lo, hi]`` and the number
of solver calls are reported in ``Solution.stats``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..query import Query
from .base import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNKNOWN, Solution, SolveOptions, module_available

OBJECTIVE = "objective"
DEFAULT_TOLERANCE = 1e-9  # relative bracket width at which bisection tries its final exactness check
MAX_CALLS = 200


# --------------------------------------------------------------------------------------------- SMT-LIB text
def real_literals(values: np.ndarray) -> np.ndarray:
    """Exact SMT-LIB ``Real`` numerals for float64 values (an object array of strings).

    ``Decimal(float)`` is the exact value of the float; formatted without exponent it is an SMT-LIB decimal,
    which denotes exactly that rational.  Only distinct values are converted (weights repeat a lot: +-1 rows).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(0, dtype=object)
    if not np.all(np.isfinite(values)):
        raise ValueError("internal: infinite coefficient in an SMT-LIB term")
    uniq, inverse = np.unique(values, return_inverse=True)
    out = np.empty(uniq.size, dtype=object)
    for k, v in enumerate(uniq.tolist()):
        text = format(Decimal(abs(v)), "f")
        if "." not in text:
            text += ".0"
        out[k] = f"(- {text})" if v < 0 else text
    return out[inverse]


def _conj(items: list[str]) -> str:
    if not items:
        return "true"
    if len(items) == 1:
        return items[0]
    return "(and " + " ".join(items) + ")"


def _var_refs(q: Query) -> np.ndarray:
    """How each query variable appears in a Real term (integers are lifted with ``to_real``)."""
    refs = np.array([f"x{i}" for i in range(q.n_vars)], dtype=object)
    if np.any(q.integer):
        ints = np.nonzero(q.integer)[0]
        refs[ints] = [f"(to_real x{i})" for i in ints]
    return refs


def _linear_terms(A: sp.csr_matrix, refs: np.ndarray) -> list[str]:
    """One SMT-LIB sum per row of ``A``."""
    A = sp.csr_matrix(A)
    lits = real_literals(A.data)
    names = refs[A.indices]
    terms = [n if d == 1.0 else (f"(- {n})" if d == -1.0 else f"(* {lit} {n})")
             for d, lit, n in zip(A.data.tolist(), lits, names)]
    out = []
    ptr = A.indptr
    for i in range(A.shape[0]):
        a, b = ptr[i], ptr[i + 1]
        if b - a == 0:
            out.append("0.0")
        elif b - a == 1:
            out.append(terms[a])
        else:
            out.append("(+ " + " ".join(terms[a:b]) + ")")
    return out


def _row_constraints(A: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray, refs: np.ndarray) -> list[str]:
    """``lo <= A x <= hi`` row by row as SMT-LIB atoms (``true`` for a free row)."""
    exprs = _linear_terms(A, refs)
    lo_fin, hi_fin = np.isfinite(lo), np.isfinite(hi)
    lo_lit = np.empty(lo.size, dtype=object)
    hi_lit = np.empty(hi.size, dtype=object)
    lo_lit[lo_fin] = real_literals(lo[lo_fin])
    hi_lit[hi_fin] = real_literals(hi[hi_fin])
    out = []
    for i, e in enumerate(exprs):
        if lo_fin[i] and hi_fin[i]:
            out.append(f"(= {e} {lo_lit[i]})" if lo[i] == hi[i] else f"(<= {lo_lit[i]} {e} {hi_lit[i]})")
        elif lo_fin[i]:
            out.append(f"(>= {e} {lo_lit[i]})")
        elif hi_fin[i]:
            out.append(f"(<= {e} {hi_lit[i]})")
        else:
            out.append("true")
    return out


def _bound_constraints(q: Query, refs: np.ndarray) -> list[str]:
    """Per variable, its finite bounds as one atom (``true`` when free)."""
    lb_fin, ub_fin = np.isfinite(q.lb), np.isfinite(q.ub)
    lb_lit = np.empty(q.n_vars, dtype=object)
    ub_lit = np.empty(q.n_vars, dtype=object)
    lb_lit[lb_fin] = real_literals(q.lb[lb_fin])
    ub_lit[ub_fin] = real_literals(q.ub[ub_fin])
    out = []
    for i in range(q.n_vars):
        if lb_fin[i] and ub_fin[i]:
            out.append(f"(<= {lb_lit[i]} {refs[i]} {ub_lit[i]})")
        elif lb_fin[i]:
            out.append(f"(>= {refs[i]} {lb_lit[i]})")
        elif ub_fin[i]:
            out.append(f"(<= {refs[i]} {ub_lit[i]})")
        else:
            out.append("true")
    return out


@dataclass
class Tracking:
    """Which assertions an infeasibility core may drop, as numbered groups (``-1``: always asserted).

    ``row_group`` has one entry per row, ``disj_group`` one per disjunction, ``bound_group`` is the group of the
    finite bounds of the variables in ``bound_vars`` (the bounds a `bound linf` statement implies).
    """

    row_group: np.ndarray
    disj_group: list[int]
    bound_vars: np.ndarray
    bound_group: int
    n_groups: int


def logic_of(q: Query) -> str:
    nonlinear = len(q.products) > 0
    ints = bool(np.any(q.integer))
    return "QF_" + ("N" if nonlinear else "L") + ("IRA" if ints else "RA")


def _comment(text: str) -> str:
    return "; " + " ".join(str(text).split())


def query_to_smt2(q: Query, tracking: Tracking | None = None, comments: bool = True) -> str:
    """Declarations and assertions for ``q`` (no ``check-sat``): the exact SMT-LIB form of the Query.

    The objective is the constant ``objective`` (defined by an equality).  With ``tracking``, each group ``g``
    is asserted as ``(=> tg ...)`` so that checking under the assumptions ``tg`` yields unsat cores.
    """
    refs = _var_refs(q)
    out: list[str] = []
    for i in range(q.n_vars):
        out.append(f"(declare-const x{i} {'Int' if q.integer[i] else 'Real'})")
    if tracking is not None:
        out.extend(f"(declare-const t{g} Bool)" for g in range(tracking.n_groups))
    out.append(f"(declare-const {OBJECTIVE} Real)")

    def emit(group: int, atoms: list[str]) -> None:
        atoms = [a for a in atoms if a != "true"]
        if not atoms:
            return
        if group < 0:
            out.extend(f"(assert {a})" for a in atoms)
        else:
            out.append(f"(assert (=> t{group} {_conj(atoms)}))")

    # variable bounds (the tracked ones, if any, as one group)
    bounds = _bound_constraints(q, refs)
    if tracking is not None and np.any(tracking.bound_vars):
        tracked = tracking.bound_vars
        if comments:
            out.append(_comment("bounds implied by " + (q.var_bound_source.label if q.var_bound_source else "bounds")))
        emit(tracking.bound_group, [b for b, t in zip(bounds, tracked) if t])
        emit(-1, [b for b, t in zip(bounds, tracked) if not t])
    else:
        emit(-1, bounds)
    # linear rows, block by block (each block is one statement's rows for one point, or a network layer)
    rows = _row_constraints(q.A, q.row_lo, q.row_hi, refs)
    for blk in q.row_blocks:
        part = rows[blk.start: blk.start + blk.size]
        if comments:
            where = f" (line {blk.span.line})" if blk.span is not None and blk.span.line else ""
            out.append(_comment(f"{blk.label}{where}"))
        if tracking is None:
            emit(-1, part)
        else:
            groups = tracking.row_group[blk.start: blk.start + blk.size]
            for g in np.unique(groups).tolist():
                emit(int(g), [r for r, gg in zip(part, groups) if gg == g])
    covered = sum(b.size for b in q.row_blocks)
    if covered < q.n_rows:  # rows outside any block (not produced by the encoder, but keep them)
        emit(-1, rows[covered:])
    # ReLU atoms
    if len(q.relus):
        if comments:
            out.append(_comment(f"{len(q.relus)} ReLU atoms"))
        out.extend(f"(assert (= {refs[y]} (ite (>= {refs[x]} 0.0) {refs[x]} 0.0)))" for y, x in q.relus.tolist())
    # products of two unknowns
    if len(q.products):
        if comments:
            out.append(_comment(f"{len(q.products)} products of unknowns (nonlinear)"))
        out.extend(f"(assert (= {refs[z]} (* {refs[x]} {refs[y]})))" for z, x, y in q.products.tolist())
    # disjunctions: at least one alternative (a conjunction of rows) holds
    for k, d in enumerate(q.disjunctions):
        atoms = _row_constraints(d.A, d.lo, d.hi, refs)
        alts = [_conj([a for a, j in zip(atoms, d.alt.tolist()) if j == alt and a != "true"])
                for alt in range(d.n_alternatives)]
        if comments:
            where = f" (line {d.span.line})" if d.span is not None and d.span.line else ""
            out.append(_comment(f"{d.label}{where}: one of {d.n_alternatives} alternatives"))
        g = tracking.disj_group[k] if tracking is not None else -1
        emit(g, ["(or " + " ".join(alts) + ")" if len(alts) > 1 else _conj(alts)])
    # objective
    nz = np.nonzero(q.c)[0]
    obj_terms = _linear_terms(sp.csr_matrix((q.c[nz], (np.zeros(nz.size, int), nz)), shape=(1, q.n_vars)), refs)[0]
    offset = real_literals(np.array([q.offset]))[0]
    out.append(_comment("objective (minimised)") if comments else "")
    out.append(f"(assert (= {OBJECTIVE} (+ {offset} {obj_terms})))")
    return "\n".join(line for line in out if line) + "\n"


# --------------------------------------------------------------------------------------------- values
def z3_value(v: Any) -> Fraction:
    """An exact rational for a Z3 numeral (algebraic numbers, from nonlinear models, to 40 decimal digits)."""
    import z3

    if z3.is_int_value(v):
        return Fraction(v.as_long())
    if z3.is_rational_value(v):
        return Fraction(v.numerator_as_long(), v.denominator_as_long())
    if z3.is_algebraic_value(v):
        approx = v.approx(40)
        return Fraction(approx.numerator_as_long(), approx.denominator_as_long())
    raise ValueError(f"internal: unexpected Z3 value {v}")


@dataclass
class _Parsed:
    ctx: Any
    assertions: Any
    xs: list[Any]
    objective: Any
    lits: list[Any] = field(default_factory=list)


def _parse(q: Query, tracking: Tracking | None = None) -> _Parsed:
    import z3

    ctx = z3.Context()
    text = query_to_smt2(q, tracking, comments=False)
    assertions = z3.parse_smt2_string(text, ctx=ctx)
    xs = [z3.Int(f"x{i}", ctx) if q.integer[i] else z3.Real(f"x{i}", ctx) for i in range(q.n_vars)]
    lits = [z3.Bool(f"t{g}", ctx) for g in range(tracking.n_groups)] if tracking is not None else []
    return _Parsed(ctx, assertions, xs, z3.Real(OBJECTIVE, ctx), lits)


def _model_x(model: Any, xs: list[Any]) -> np.ndarray:
    return np.array([float(z3_value(model.eval(v, model_completion=True))) for v in xs], dtype=np.float64)


class _Clock:
    """Remaining time of the whole solve, handed to each Z3 call as its timeout (ms)."""

    def __init__(self, limit: float | None):
        self.t0 = time.perf_counter()
        self.limit = limit

    def remaining_ms(self) -> int | None:
        if self.limit is None:
            return None
        return max(1, int(1000 * (self.limit - (time.perf_counter() - self.t0))))

    def expired(self) -> bool:
        return self.limit is not None and time.perf_counter() - self.t0 >= self.limit


# --------------------------------------------------------------------------------------------- backend
class Z3Backend:
    name = "z3"
    capabilities = frozenset({"lp", "milp", "smt", "exact", "core", "nonlinear"})

    def available(self) -> bool:
        return module_available("z3")

    def version(self) -> str:
        import z3

        return z3.get_version_string()

    def check_size(self, query: Query) -> str | None:
        return None

    # ------------------------------------------------------------------ solve
    def solve(self, query: Query, options: SolveOptions) -> Solution:
        import z3

        t0 = time.perf_counter()
        clock = _Clock(options.time_limit)
        parsed = _parse(query)
        t_parse = time.perf_counter() - t0
        method = str(options.extra.get("method", "auto"))
        if method not in ("auto", "optimize", "bisect"):
            from ..errors import PatchlangError

            raise PatchlangError(f"unknown z3 method `{method}`", help='use method = "optimize" or "bisect"')
        has_objective = bool(np.any(query.c)) and not options.feasibility_only
        if method == "auto":  # measured: Optimize wins on LPs (also with L0 integers), bisection on ReLU,
            piecewise = len(query.products) or len(query.relus) or query.disjunctions  # disjunctive, nonlinear
            method = "bisect" if piecewise else "optimize"
        if not has_objective:
            sol = self._feasible(parsed, options, clock)
        elif method == "optimize":
            sol = self._optimize(parsed, options, clock)
        else:
            sol = self._bisect(parsed, query, options, clock)
        sol.backend, sol.backend_version = self.name, z3.get_version_string()
        sol.stats["parse_seconds"] = t_parse
        sol.seconds = time.perf_counter() - t0
        return sol

    def _solver(self, p: _Parsed, options: SolveOptions, clock: _Clock):
        import z3

        s = z3.Solver(ctx=p.ctx)
        s.set("random_seed", int(options.seed))
        ms = clock.remaining_ms()
        if ms is not None:
            s.set("timeout", ms)
        s.add(p.assertions)
        return s

    @staticmethod
    def _unanswered(reason: str, clock: _Clock) -> Solution:
        st = TIMEOUT if (clock.expired() or "timeout" in reason or "canceled" in reason) else UNKNOWN
        return Solution(status=st, message=f"z3: {reason}")

    def _first_check(self, p: _Parsed, options: SolveOptions, clock: _Clock, method: str):
        """The solver after its first check, and the solution when that check already ends the search (unsat:
        infeasible; unknown: no answer), else None."""
        import z3

        s = self._solver(p, options, clock)
        r = s.check()
        if r == z3.unsat:
            return s, Solution(status=INFEASIBLE, message="unsat", stats={"method": method, "calls": 1})
        if r == z3.unknown:
            sol = self._unanswered(s.reason_unknown(), clock)
            sol.stats = {"method": method, "calls": 1}
            return s, sol
        return s, None

    def _feasible(self, p: _Parsed, options: SolveOptions, clock: _Clock) -> Solution:
        s, sol = self._first_check(p, options, clock, "check")
        if sol is not None:
            return sol
        m = s.model()
        value = z3_value(m.eval(p.objective, model_completion=True))
        return Solution(status=OPTIMAL, x=_model_x(m, p.xs), objective=float(value), bound=float(value),
                        message="sat", stats={"method": "check", "calls": 1, "objective_exact": str(value)})

    def _optimize(self, p: _Parsed, options: SolveOptions, clock: _Clock) -> Solution:
        import z3

        opt = z3.Optimize(ctx=p.ctx)
        opt.set("random_seed", int(options.seed))
        ms = clock.remaining_ms()
        if ms is not None:
            opt.set("timeout", ms)
        opt.add(p.assertions)
        handle = opt.minimize(p.objective)
        r = opt.check()
        stats: dict[str, Any] = {"method": "optimize", "calls": 1}
        if r == z3.unsat:
            return Solution(status=INFEASIBLE, message="unsat", stats=stats)
        if r == z3.unknown:
            # an incumbent may exist; Optimize keeps the last model it found
            try:
                m = opt.model()
            except z3.Z3Exception:
                m = None
            if m is None or len(m) == 0:
                sol = self._unanswered(opt.reason_unknown(), clock)
                sol.stats = stats
                return sol
            value = z3_value(m.eval(p.objective, model_completion=True))
            stats["objective_exact"] = str(value)
            return Solution(status=FEASIBLE, x=_model_x(m, p.xs), objective=float(value), bound=None,
                            message=f"z3: {opt.reason_unknown()}", stats=stats)
        m = opt.model()
        value = z3_value(m.eval(p.objective, model_completion=True))
        lower = handle.lower()
        exact = z3.is_rational_value(lower) or z3.is_int_value(lower) or z3.is_algebraic_value(lower)
        lo = z3_value(lower) if exact else None
        stats["objective_exact"] = str(value)
        stats["bracket"] = [str(lo) if lo is not None else str(lower), str(value)]
        if lo is not None and lo == value:
            return Solution(status=OPTIMAL, x=_model_x(m, p.xs), objective=float(value), bound=float(value),
                            message="optimal (exact)", stats=stats)
        return Solution(status=FEASIBLE, x=_model_x(m, p.xs), objective=float(value),
                        bound=float(lo) if lo is not None else None, message=f"z3 bound {lower}", stats=stats)

    def _bisect(self, p: _Parsed, q: Query, options: SolveOptions, clock: _Clock) -> Solution:
        """Bisection on ``objective <= mid``; ends with ``objective < best``, whose unsat proves exactness."""
        s, sol = self._first_check(p, options, clock, "bisect")
        if sol is not None:
            return sol
        lo = self._static_lower_bound(q)
        integral = self._integral_objective(q)  # L0: counts, so refuting `<= k` proves `>= k + 1`
        if integral and lo is not None:
            lo = Fraction(math.ceil(lo))
        b = _Bisection(s, p, clock, s.model(), lo, integral, float(options.extra.get("tolerance", DEFAULT_TOLERANCE)),
                       int(options.extra.get("max_calls", MAX_CALLS)))
        b.run()
        return b.solution()

    @staticmethod
    def _integral_objective(q: Query) -> bool:
        """Whether every objective value is an integer (integer variables, integer weights and offset)."""
        nz = np.nonzero(q.c)[0]
        return (nz.size > 0 and bool(np.all(q.integer[nz])) and bool(np.all(q.c[nz] == np.round(q.c[nz])))
                and float(q.offset).is_integer())

    @staticmethod
    def _static_lower_bound(q: Query) -> Fraction | None:
        """``offset + c x`` minimised over the variable bounds alone (exact), or None when unbounded."""
        c = q.c
        pos, neg = c > 0, c < 0
        if np.any(~np.isfinite(q.lb[pos])) or np.any(~np.isfinite(q.ub[neg])):
            return None
        total = Fraction(q.offset)
        for i in np.nonzero(pos)[0].tolist():
            total += Fraction(float(c[i])) * Fraction(float(q.lb[i]))
        for i in np.nonzero(neg)[0].tolist():
            total += Fraction(float(c[i])) * Fraction(float(q.ub[i]))
        return total

    # ------------------------------------------------------------------ infeasibility cores
    def core(self, query: Query, tracking: Tracking, options: SolveOptions, minimize: bool = True
             ) -> tuple[list[int] | None, bool, int]:
        """Groups of a conflict (unsat core under assumptions), shrunk by a deletion filter when ``minimize``.

        Returns ``(groups or None if no conflict was found, minimal?, solver calls)``.  ``minimal`` is True
        when every remaining group was shown necessary (dropping it makes the rest satisfiable).
        """
        import z3

        clock = _Clock(options.time_limit)
        p = _parse(query, tracking)
        s = self._solver(p, options, clock)
        calls = 1
        if s.check(*p.lits) != z3.unsat:
            return None, False, calls
        ids = {int(str(lit)[1:]) for lit in s.unsat_core()}
        if not minimize:
            return sorted(ids), False, calls
        minimal = True
        for g in sorted(ids):
            if g not in ids:
                continue
            if clock.expired():
                minimal = False
                break
            trial = sorted(ids - {g})
            ms = clock.remaining_ms()
            if ms is not None:
                s.set("timeout", ms)
            calls += 1
            r = s.check(*[p.lits[k] for k in trial])
            if r == z3.unsat:
                ids = {int(str(lit)[1:]) for lit in s.unsat_core()}
            elif r == z3.unknown:
                minimal = False
        return sorted(ids), minimal, calls


def _z3_rat(v: Fraction, ctx: Any):
    import z3

    return z3.RealVal(f"{v.numerator}/{v.denominator}", ctx)


def _nice_midpoint(lo: Fraction, hi: Fraction) -> Fraction:
    """A midpoint with a short binary expansion (keeps Z3's rationals small), strictly inside ``(lo, hi)``."""
    mid = Fraction(float(lo + hi) / 2)
    if lo < mid < hi:
        return mid
    return (lo + hi) / 2


class _Bisection:
    """The state of :meth:`Z3Backend._bisect`: the bracket ``[lo, hi]`` on the optimum, the best model, the calls.

    Probes ``objective <= mid`` (sat lowers ``hi`` to the model's value, unsat raises ``lo``), then, once the
    bracket is within the tolerance, ``objective < hi``, whose unsat proves ``hi`` exactly optimal."""

    def __init__(self, s, p: _Parsed, clock: _Clock, model, lo: Fraction | None, integral: bool, tol: float,
                 max_calls: int):
        self.s, self.p, self.clock, self.model = s, p, clock, model
        self.hi = z3_value(model.eval(p.objective, model_completion=True))
        self.lo, self.integral, self.tol, self.max_calls = lo, integral, tol, max_calls
        self.calls = 1
        self.exact = False
        self.stopped = ""
        self.strict_checks = 0  # `objective < best` may keep finding slightly better points off a vertex

    def probe(self, constraint) -> str:
        import z3

        s = self.s
        ms = self.clock.remaining_ms()
        if ms is not None:
            s.set("timeout", ms)
        s.push()
        s.add(constraint)
        self.calls += 1
        res = s.check()
        if res == z3.sat:
            self.model = s.model()
            self.hi = min(self.hi, z3_value(self.model.eval(self.p.objective, model_completion=True)))
        reason = s.reason_unknown() if res == z3.unknown else ""
        s.pop()
        return "sat" if res == z3.sat else ("unsat" if res == z3.unsat else "unknown: " + reason)

    def at_most(self, value: Fraction) -> str:
        return self.probe(self.p.objective <= _z3_rat(value, self.p.ctx))

    def run(self) -> None:
        if self.lo is None:
            self.walk_down()
        if self.lo is not None and self.hi > self.lo and self.calls < self.max_calls:
            res = self.at_most(self.lo)  # the static bound is often attained (0 change)
            if res not in ("sat", "unsat"):
                self.stopped = res
        while self.lo is not None and not self.stopped and self.calls < self.max_calls and not self.clock.expired():
            if self.hi <= self.lo:
                self.exact = True
                return
            if not (self.integral_step() if self.integral else self.real_step()):
                return

    def walk_down(self) -> None:
        """No static lower bound: steps below the best value, doubling, until one is refuted."""
        step = max(Fraction(1), abs(self.hi))
        while self.calls < self.max_calls and self.lo is None:
            target = self.hi - step
            res = self.at_most(target)
            if res == "unsat":
                self.lo = target
            elif res != "sat":
                self.stopped = res
                return
            step *= 2

    def integral_step(self) -> bool:
        """One step on an integer objective; False when the loop ends."""
        if self.hi - self.lo < 1:
            self.lo, self.exact = self.hi, True
            return False
        mid = Fraction(math.floor((self.lo + self.hi) / 2))
        res = self.at_most(mid)
        if res == "unsat":
            self.lo = mid + 1
        elif res != "sat":
            self.stopped = res
            return False
        return True

    def real_step(self) -> bool:
        """One step on a rational objective (the strict check once the bracket is narrow); False when it ends."""
        if self.hi - self.lo <= self.tol * max(1, abs(self.hi)):
            if self.strict_checks == 3:
                self.stopped = f"bracket within {self.tol:g} (not proven exact)"
                return False
            self.strict_checks += 1
            res = self.probe(self.p.objective < _z3_rat(self.hi, self.p.ctx))
            if res == "unsat":
                self.lo, self.exact = self.hi, True
                return False
            if res != "sat":
                self.stopped = res
                return False
            return True
        mid = _nice_midpoint(self.lo, self.hi)
        res = self.at_most(mid)
        if res == "unsat":
            self.lo = mid
        elif res != "sat":
            self.stopped = res
            return False
        return True

    def solution(self) -> Solution:
        lo, hi = self.lo, self.hi
        stats = {"method": "bisect", "calls": self.calls, "bracket": [str(lo), str(hi)], "objective_exact": str(hi),
                 "bracket_float": [float(lo) if lo is not None else None, float(hi)]}
        x = _model_x(self.model, self.p.xs)
        if self.exact:
            return Solution(status=OPTIMAL, x=x, objective=float(hi), bound=float(hi), message="optimal (exact)",
                            stats=stats)
        msg = self.stopped or ("time limit" if self.clock.expired() else f"stopped after {self.calls} calls")
        return Solution(status=FEASIBLE, x=x, objective=float(hi), bound=float(lo) if lo is not None else None,
                        message=f"z3 bisection: {msg}", stats=stats)
