"""The report's sentences for the planning steps applied: prose built here from each step's plain-data record.

Why here: the planning steps (patchlang.plan) only record what they did and their figures; what the user reads is
the task layer's business, so wording changes never touch an algorithm.
"""

from __future__ import annotations

import re
from typing import Callable

from ..plan.steps import StepRecord


def _fixed_phase_bound(s: dict) -> list[str]:
    if s.get("outcome") == "timeout":
        return ["no `bound linf` was given and none could be derived within the time limit (the fixed-phase LPs "
                "did not finish)"]
    out = []
    derived = s.get("derived") or {}
    if derived:
        said = " and ".join(f"{n} <= {b:.6g}" for n, b in derived.items())
        trial = s.get("found_by") == "trial_bound"
        source = ("a patch found by MILPs under growing trial bounds (no fixed-phase LP had one)" if trial
                  else "a fixed-phase LP patch")
        out.append(f"bound {said} derived from {source} with objective {s['objective']:.6g} "
                   f"({s['rounds']} {'solve' if trial else 'LP round'}(s)); sound: every optimal patch lies within it")
    if s.get("warm_start"):
        source = "that patch" if s.get("found_by") == "trial_bound" else "the fixed-phase LP patch"
        out.append(f"MILP warm-started from {source} (objective {s['objective']:.6g})")
    return out


def _tightening(s: dict) -> list[str]:
    return [f"LP bound tightening of {s['relus']} ReLUs behind other ReLUs: {s['fixed']} phase(s) fixed, the other "
            "big-Ms smaller"]


def _rows(s: dict) -> list[str]:
    what = {"l1": "all of a row's change on its largest input", "linf": "a row's change spread as sign(x)"}[s["norm"]]
    return [f"every goal point gives the edited layer the same input, so the {s['weights']} weights act only through "
            f"the {s['rows']} pre-activations: solved exactly over one unknown per row ({what} is the cheapest "
            f"{s['norm']} change), then lifted back onto the weights"]


def _bracket(s: dict) -> list[str]:
    n, others, lo = s["weights"], s["others"], s.get("lower")
    lower = (f"lower bound {lo:.6g}: exact optimum without the {others} point(s) whose input differs (one unknown "
             f"per row of the {n} weights)" if lo is not None else "")
    outcome = s.get("outcome")
    if outcome == "relaxation_infeasible":
        return [f"no patch even without the {others} point(s) whose input differs (exact, one unknown per row of the "
                f"{n} weights)"]
    if outcome == "relaxation_keeps_all":
        return [f"the exact optimum without the {others} point(s) whose input differs keeps them too: optimal (one "
                f"unknown per row of the {n} weights)"]
    if outcome == "fallback":
        return [f"no patch with the {others} other point(s) untouched ({s['restriction_status']}): solved over every "
                "weight" + (f"; {lower}" if lower else "")]
    if "widened_to" in s:
        said = (f"restricted to one unknown per row along sign(x) on the {s['support']} input columns where the "
                f"{others} other point(s) are at most {s['widened_to']:.3g} (tried from the columns where they are "
                "zero up): every answer is a genuine patch")
    else:
        said = (f"restricted to the {s['support']} input columns where the {others} other point(s) are zero (they "
                "stay untouched), one unknown per row: every answer is a genuine patch")
    return [said] + ([lower] if lower else [])


def _bisection(s: dict) -> list[str]:
    text = (f"minimal L∞ by bisection over {s['calls']} feasibility MILPs ({s['parameters']} parameters, "
            "|delta| <= t as bounds)")
    if "upper" in s:
        text += f"; optimum in [{s['lower']:.9g}, {s['upper']:.9g}]"
    return [text]


def _tidy(s: dict) -> list[str]:
    if not s.get("applied"):
        return []
    name = "L∞" if s["primary"] == "linf" else "L0"
    phases = s.get("phases_fixed")
    if s.get("surrogate"):
        return [f"among the {name}-minimal patches with one unknown per row, the least total row change; each row "
                "lifted to the least-L1 weights with its effect and L∞"
                + (", with the ReLU phases of the minimal patch found" if phases else "")]
    return [f"among the {name}-minimal patches, the one with the least L1 change"
            + (" with the ReLU phases of the minimal patch found" if phases else "")]


def _lazy(s: dict) -> list[str]:
    parts = [f"{g['needed']} of {g['points']} points of `{g['label']}`" for g in s["groups"]]
    return [f"keep points added lazily: {', '.join(parts)} were needed ({s['rounds']} rounds); exact"]


def _encode(s: dict) -> list[str]:
    if "huge_nonzeros" not in s:
        return []
    return [f"warning: a very large MILP (up to {s['huge_nonzeros']} nonzeros and {s['huge_binaries']} binaries "
            "before bounds fix ReLU phases) may not finish; fewer points, fewer editable parameters or a small "
            "`bound linf` help"]


WORDS: dict[str, Callable[[dict], list[str]]] = {
    "fixed_phase_bound": _fixed_phase_bound, "lp_bound_tightening": _tightening, "one_unknown_per_row": _rows,
    "keep_bracket": _bracket, "linf_bisection": _bisection, "least_l1_tidy": _tidy, "lazy_keep": _lazy,
    "encode": _encode,
}


def step_sentences(record: StepRecord) -> list[str]:
    """What the step did, in the report's words (nothing for a step that changed nothing worth saying)."""
    words = WORDS.get(record.name)
    return words(record.summary) if words is not None else []


AFTER_SOLVING = ("least_l1_tidy",)  # applied early, but what they say happens after the solve: said last


def step_notes(records: list[StepRecord]) -> list[str]:
    """The sentences of every record, in order (follow-ups last), each once (lazy rounds repeat the same steps)."""
    out: list[str] = []
    for r in sorted(records, key=lambda r: r.name in AFTER_SOLVING):
        out.extend(s for s in step_sentences(r) if s not in out)
    return out


def _away(s: dict) -> list[str]:
    return [f"`away from label` on one point: one LP per candidate label, best lower bound first; solved "
            f"{s['solved']} of {s['candidates']}, the others provably cannot do better"]


WORDS["away_candidates"] = _away


# ------------------------------------------------------------------------------------------ the plain report
# The notes above name the machinery (LPs, MILPs, big-Ms, unsat cores); they are the record (JSON, `--verbose`).
# The default text report says what they mean for the user: plain_note turns one note into plain words, or None
# when it only describes how the solver got there.

_INTERNAL = ("MILP warm-started", "LP bound tightening", "lower bound ", "restricted to ", "the exact optimum without",
             "no patch with the ", "no patch even without", "every goal point gives the edited layer")


def _plain_bound(m: re.Match) -> str:
    return (f"the search was limited to {m.group(1)}: a bound taken from a first patch found quickly; every "
            "minimal patch lies within it")


_REWRITES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"^bound (.+?) derived from .*$"), _plain_bound),
    (re.compile(r"^keep points added lazily: (.*) were needed \((\d+) rounds\); exact$"),
     lambda m: f"{m.group(1)} were enough to pin the patch down; every point is kept (checked)"),
    (re.compile(r"^among the (L∞|L0)-minimal patches.*$"),
     lambda m: f"among the patches with the smallest {m.group(1)} change, the one with the least total (L1) change"),
    (re.compile(r"^minimal L∞ by bisection over .*?(; optimum in \[.*\])?$"),
     lambda m: "minimal L∞ found by bisection" + (m.group(1) or "")),
    (re.compile(r"^conflict found by .*?\(\d+ solver calls\); (.*)$"), lambda m: m.group(1)),
    (re.compile(r"^(no patch|holds): certified independently: .*$"),
     lambda m: f"{m.group(1)}: re-proven independently (--verbose says how)"),
    (re.compile(r"^warning: a very large MILP .*?may not finish; (.*)$"),
     lambda m: f"warning: a very large problem that may not finish; {m.group(1)}"),
    (re.compile(r"^`away from label` on one point: .*$"),
     lambda m: "`away from label` on one point: the best other label was found, the rest provably cannot do better"),
    (re.compile(r"^no `bound linf` was given and none could be derived within the time limit.*$"),
     lambda m: "no `bound linf` was given and none could be derived within the time limit"),
]


def plain_note(note: str) -> str | None:
    """A note in the user's words for the default report; None when it only says how the solver worked."""
    if note.startswith("last patch: "):  # repair: the notes of its last patch
        inner = plain_note(note[len("last patch: "):])
        return None if inner is None else "last patch: " + inner
    if note.startswith(_INTERNAL):
        return None
    for pattern, rewrite in _REWRITES:
        m = pattern.match(note)
        if m:
            return rewrite(m)
    return note
