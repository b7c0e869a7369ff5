"""The checked program: every name resolved, every file loaded, every task classified.

The checker (:mod:`patchlang.lang.check`) produces it; :mod:`patchlang.tasks` runs it.  Nothing here solves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model.edits import EditSpec, NormSpec
from ..errors import Span
from ..model.ir import Network
from ..inputs.points import PointSet
from . import ast as A


@dataclass
class ModelEntry:
    name: str
    net: Network
    path: str
    span: Span


@dataclass
class GoalSpec:
    """One keep/change/require statement with its points resolved (labels are computed when run)."""

    kind: str  # keep | keep_within | to | one_of | runner_up | away | require
    points: PointSet
    span: Span
    text: str  # the user's words, e.g. "change wm[3] to 7"
    labels: tuple[int, ...] = ()
    tolerance: float | None = None
    cnf: A.OutputCNF | None = None
    # kinds `pattern` (take ``pattern``) and `keep_pattern` (keep the own on/off states of ``neurons``): the
    # clauses are over the pre-activations of affine layer ``layer``, not the outputs (NNrepair's oracle)
    layer: int | None = None
    pattern: Any = None  # patchlang.model.patterns.Pattern
    neurons: tuple[int, ...] = ()

    @property
    def group(self) -> str:
        return "keep" if self.kind.startswith("keep") else ("require" if self.kind == "require" else "change")


@dataclass
class BackendChoice:
    name: str  # auto | highs | gurobi | z3 | marabou
    options: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None


@dataclass
class PatchTask:
    name: str
    model: ModelEntry
    edits: list[EditSpec]
    goals: list[GoalSpec]
    norms: NormSpec
    margin: float
    save: str | None
    backend: BackendChoice
    span: Span
    problem_class: str  # LP | MILP | SMT
    class_reason: str
    round_bits: int | None = None
    limits: dict[str, float] = field(default_factory=dict)
    kind: str = "patch"
    margin_explicit: bool = False  # False: the margin scales with the outputs when run (see tasks.patch)
    localized: list[Any] = field(default_factory=list)  # model.localize.Localization of each `edit top ...`


@dataclass
class InputRegion:
    """A union of boxes (each ``lo``/``hi`` over the model's flat input)."""

    boxes: list[tuple[np.ndarray, np.ndarray]]
    centers: PointSet | None = None  # for epsilon-balls: the center of each box, in order


@dataclass
class PropertySpec:
    """Input region and the output constraints that must hold there.

    ``cases`` pairs each input box with an *unsafe* output DNF (VNN-LIB style) or, for property blocks, the CNF
    that must hold (``ensures``); ``center_labels`` are filled when the property says "label stays".
    """

    name: str
    span: Span
    boxes: list[tuple[np.ndarray, np.ndarray]]
    ensures: list[A.OutputCNF] = field(default_factory=list)
    unsafe_dnf: list[list[Any]] | None = None  # VNN-LIB: per box, list of conjunctions of LinearAtom
    centers: PointSet | None = None
    source: str = "block"  # block | vnnlib
    domain: tuple[np.ndarray, np.ndarray] | None = None  # `domain [lo, hi]`: ``boxes`` are already cut to it
    domain_span: Span | None = None


FALSIFIERS = ("auto", "shgo", "differential_evolution", "basinhopping", "gradient", "targeted",
              "random")
FALSIFY_OPTIONS = ("queries", "focus", "seed")


@dataclass
class FalsifyChoice:
    """`falsify [only] with METHOD (OPTIONS)`: which falsifier runs first (or alone, with ``only``)."""

    method: str  # one of FALSIFIERS (patchlang.tasks.falsifiers)
    options: dict[str, Any] = field(default_factory=dict)
    only: bool = False
    span: Span | None = None


@dataclass
class VerifyTask:
    name: str
    model: ModelEntry
    prop: PropertySpec
    timeout: float | None
    backend: BackendChoice
    save: str | None
    span: Span
    kind: str = "verify"
    falsify: FalsifyChoice | None = None


@dataclass
class RepairTask:
    name: str
    model: ModelEntry
    prop: PropertySpec
    patch: PatchTask
    span: Span
    kind: str = "repair"


@dataclass
class FinetuneTask:
    """`repair MODEL for PROPERTY by finetune { ... }` (run by :mod:`patchlang.tasks.finetune`)."""

    name: str
    model: ModelEntry
    prop: PropertySpec
    span: Span
    data: PointSet | None = None  # task loss on these points (their labels, else the model's decisions)
    epochs: int = 300  # per iteration, at most
    rate: float = 1e-3  # Adam's step size
    penalty: float = 1.0  # initial weight of each counterexample's violation
    samples: int = 1000  # samples of the property's input region for agreement when there is no data
    margin: float = 0.01  # satisfaction required at every counterexample (output units)
    save: str | None = None
    limits: dict[str, float] = field(default_factory=dict)
    kind: str = "repair"
    method: str = "finetune"
    problem_class: str = "training"
    class_reason: str = "penalised fine-tuning of every weight, each result verified completely (MILP)"


COMBINATIONS = ("naive", "confidence", "voting", "merged")
ORACLES = ("labels", "patterns")


@dataclass
class Expert:
    """The repair for one class: a patch task of its own (failing inputs of the class get it, passing keep theirs)."""

    label: int
    patch: PatchTask
    n_failing: int


@dataclass
class ExpertsTask:
    """`repair MODEL [as NAME] by experts { ... }` (run by :mod:`patchlang.tasks.experts`)."""

    name: str
    model: ModelEntry
    span: Span
    experts: list[Expert]
    failing: PointSet
    passing: PointSet
    combinations: list[str]
    oracle: str  # labels | patterns
    layer: int  # the affine layer the experts edit (index among affine layers)
    f1_points: PointSet | None = None
    save: str | None = None
    problem_class: str = "LP"
    class_reason: str = ""
    kind: str = "repair"
    method: str = "experts"
    patterns: dict[int, Any] = field(default_factory=dict)  # class -> Pattern (oracle patterns)

ATTACK_METHODS = ("auto", "exact", "patch")
ATTACK_NORMS = ("l0", "l1", "linf")


@dataclass
class AttackTask:
    """`attack NAME on MODEL { ... }` (run by :mod:`patchlang.tasks.attack`): per input, a small change inside
    ``[lo, hi]`` (the domain cut by ``bound linf``) after which the decision is one of the target labels."""

    name: str
    model: ModelEntry
    points: PointSet
    target: str  # away | to | one_of
    target_labels: tuple[int, ...]
    domain: tuple[np.ndarray, np.ndarray]  # flat (n_in,) each; every adversarial input lies in it
    minimize: str  # l0 | l1 | linf
    method: str  # auto | exact | patch
    span: Span
    bound_linf: float | None = None
    bounds: dict[str, float] = field(default_factory=dict)  # `bound l0|l1 <= c`: no attack larger than this
    margin: float = 1e-4  # the new label must beat the original one by this much (output units)
    save: str | None = None
    backend: BackendChoice = field(default_factory=lambda: BackendChoice("auto"))
    limits: dict[str, float] = field(default_factory=dict)  # time (s per input)
    kind: str = "attack"
    problem_class: str = "MILP"
    class_reason: str = ""


@dataclass
class Assertion:
    node: Any  # AssertExists | AssertDistance | AssertAccuracy (AST)
    points: PointSet | None
    text: str
    span: Span


@dataclass
class Program:
    path: str
    source: str
    models: dict[str, ModelEntry]
    points: dict[str, PointSet]
    properties: dict[str, PropertySpec]
    tasks: list[Any]  # PatchTask | VerifyTask | RepairTask, in source order
    assertions: list[Assertion]
    input_files: dict[str, str]  # path -> sha256
    warnings: list[Any] = field(default_factory=list)

    def task(self, name: str) -> Any:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


# `assert METRIC(attack) CMP number`: the metrics an attack task reports (tasks.attack_metrics computes them)
ATTACK_METRICS = {
    "success_rate": "share of the inputs with a confirmed adversarial input (0..1)",
    "proven_rate": "share of the inputs whose minimal change is proven (exact method)",
    "median_l0": "median number of changed inputs (pixels) over the successes",
    "mean_l0": "mean number of changed inputs over the successes",
    "median_l0_percent": "median share of changed inputs, in percent",
    "median_l1": "median L1 size of the change over the successes",
    "median_l2": "median L2 size of the change over the successes",
    "median_linf": "median L-infinity size of the change over the successes",
    "median_seconds": "median time per input",
    "evenness": "Pielou evenness of the new labels (1: spread evenly over the labels, 0: all the same)",
}
