"""The abstract syntax tree of a `.patch` file: frozen dataclasses, each with the span it came from.

The AST is pure syntax: names are unresolved and paths are as written.  :mod:`patchlang.lang.check` turns
it into a resolved :class:`~patchlang.lang.program.Program`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..errors import Span


@dataclass(frozen=True)
class Node:
    span: Span


# ---------------------------------------------------------------------------- literals


@dataclass(frozen=True)
class SliceSpec:
    start: int | None
    stop: int | None
    step: int | None


IndexItem = Union[int, SliceSpec]


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelDecl(Node):
    name: str
    path: str
    format: str | None  # onnx | nnet | None (from the extension)
    decision: str  # argmax | argmin


# ---------------------------------------------------------------------------- point sets


@dataclass(frozen=True)
class PointsFile(Node):
    path: str
    options: tuple[tuple[str, str | float, Span], ...]


@dataclass(frozen=True)
class PointsRef(Node):
    name: str


@dataclass(frozen=True)
class PointsInline(Node):
    rows: tuple[tuple[float, ...], ...]
    labels: tuple[int, ...] | None


@dataclass(frozen=True)
class PointsIndexed(Node):
    base: "PointsExpr"
    items: tuple[IndexItem, ...]


@dataclass(frozen=True)
class LabelCmp(Node):
    op: str
    value: int


@dataclass(frozen=True)
class LabelIn(Node):
    values: tuple[int, ...]


@dataclass(frozen=True)
class Correct(Node):
    model: str
    negated: bool  # True for misclassified(model)


Condition = Union[LabelCmp, LabelIn, Correct]


@dataclass(frozen=True)
class PointsWhere(Node):
    base: "PointsExpr"
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class PointsUnion(Node):
    parts: tuple["PointsExpr", ...]


PointsExpr = Union[PointsFile, PointsRef, PointsInline, PointsIndexed, PointsWhere, PointsUnion]


@dataclass(frozen=True)
class PointsDecl(Node):
    name: str
    expr: PointsExpr


# ---------------------------------------------------------------------------- output constraints


@dataclass(frozen=True)
class LinExpr:
    """``sum(coef * y[index]) + const``."""

    terms: tuple[tuple[int, float], ...]
    const: float


@dataclass(frozen=True)
class AtomCompare(Node):
    lhs: LinExpr
    op: str  # <= >= < > == !=
    rhs: LinExpr


@dataclass(frozen=True)
class AtomExtreme(Node):
    """``y[i] is [not] min|max``."""

    index: int
    negated: bool
    which: str  # min | max


@dataclass(frozen=True)
class AtomLabelIs(Node):
    label: int
    negated: bool


@dataclass(frozen=True)
class AtomLabelStays(Node):
    pass


OutputAtom = Union[AtomCompare, AtomExtreme, AtomLabelIs, AtomLabelStays]


@dataclass(frozen=True)
class OutputCNF(Node):
    clauses: tuple[tuple[OutputAtom, ...], ...]


# ---------------------------------------------------------------------------- patch items


@dataclass(frozen=True)
class EditLayer(Node):
    layer: int | str
    params: frozenset[str]  # {"weights", "biases"}
    rows: tuple[IndexItem, ...] | None


@dataclass(frozen=True)
class EditAllBiases(Node):
    pass


@dataclass(frozen=True)
class EditSuspicious(Node):
    """`edit top N[%] suspicious weights of layer L [for FAILING [against PASSING]]`: fault localization picks the
    edges (see :mod:`patchlang.model.localize`); without `for`, the block's change and keep points are used."""

    count: float
    percent: bool
    layer: int | str
    failing: "PointsExpr | None" = None
    passing: "PointsExpr | None" = None


@dataclass(frozen=True)
class Keep(Node):
    points: PointsExpr
    within: float | None  # None: keep the label; a number: keep every output within this distance


@dataclass(frozen=True)
class Change(Node):
    points: PointsExpr
    kind: str  # to | to_own (the points' own labels) | one_of | runner_up | away
    labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class Require(Node):
    points: PointsExpr
    cnf: OutputCNF


@dataclass(frozen=True)
class Minimize(Node):
    terms: tuple[tuple[float, str], ...]  # (weight, norm)


@dataclass(frozen=True)
class Bound(Node):
    norm: str
    value: float


@dataclass(frozen=True)
class Margin(Node):
    value: float


@dataclass(frozen=True)
class Save(Node):
    path: str


@dataclass(frozen=True)
class Using(Node):
    backend: str
    options: tuple[tuple[str, str | float, Span], ...]


@dataclass(frozen=True)
class Round(Node):
    bits: int


@dataclass(frozen=True)
class Limit(Node):
    name: str
    value: float


@dataclass(frozen=True)
class Tag(Node):
    """``tag "ci", "slow"``: labels that ``patchlang run --select / --exclude`` match (no effect on solving)."""

    tags: tuple[str, ...]


PatchItem = Union[EditLayer, EditAllBiases, EditSuspicious, Keep, Change, Require, Minimize, Bound, Margin, Save, Using, Round, Limit,
                  Tag]


@dataclass(frozen=True)
class PatchBlock(Node):
    name: str
    model: str
    items: tuple[PatchItem, ...]
    model_span: Span


# ---------------------------------------------------------------------------- properties, verify, repair


@dataclass(frozen=True)
class InputBox(Node):
    lo: tuple[float, ...] | float
    hi: tuple[float, ...] | float


@dataclass(frozen=True)
class InputBall(Node):
    norm: str
    eps: float
    points: PointsExpr


@dataclass(frozen=True)
class InputDomain(Node):
    """`domain [lo, hi]`: the inputs that exist (e.g. pixels in [0, 1]); every region of the property is cut to it."""

    lo: tuple[float, ...] | float
    hi: tuple[float, ...] | float


@dataclass(frozen=True)
class PropertyBlock(Node):
    name: str
    inputs: tuple[InputBox | InputBall, ...]
    ensures: tuple[OutputCNF, ...]
    domains: tuple[InputDomain, ...] = ()


@dataclass(frozen=True)
class PropertyVnnlib(Node):
    name: str
    path: str


@dataclass(frozen=True)
class Falsify(Node):
    """`falsify [only] with METHOD [(OPTIONS)]` in a verify statement."""

    method: str
    options: tuple[tuple[str, str | float, Span], ...]
    only: bool


@dataclass(frozen=True)
class Verify(Node):
    model: str
    prop: str
    timeout: float | None
    using: Using | None
    save: str | None
    tags: tuple[str, ...] = ()
    falsify: Falsify | None = None


@dataclass(frozen=True)
class RepairBlock(Node):
    model: str
    prop: str
    result_name: str | None
    items: tuple[PatchItem, ...]


@dataclass(frozen=True)
class FinetuneBlock(Node):
    """`repair MODEL for PROPERTY [as NAME] by finetune { ... }`: items are Margin/Save/Limit nodes and
    ``FinetuneOption`` settings."""

    model: str
    prop: str
    result_name: str | None
    items: tuple[Any, ...]


@dataclass(frozen=True)
class FinetuneOption(Node):
    name: str  # data | epochs | rate | penalty | samples
    value: Any  # PointsExpr for data, else a number


@dataclass(frozen=True)
class ExpertsBlock(Node):
    """`repair MODEL [as NAME] by experts { ... }`: one patch per class, combined (items: ExpertOption and the
    edit/minimize/bound/margin/save/using/limit/tag statements of a patch block)."""

    model: str
    result_name: str | None
    items: tuple[Any, ...]


@dataclass(frozen=True)
class ExpertOption(Node):
    name: str  # failing | passing | oracle | combine | filter | classes
    value: Any  # PointsExpr (failing, passing, filter), str (oracle), tuple[str, ...] (combine), tuple[int, ...]

# ---------------------------------------------------------------------------- adversarial inputs


@dataclass(frozen=True)
class AttackInputs(Node):
    points: PointsExpr


@dataclass(frozen=True)
class AttackTarget(Node):
    """`target away from label | to N | to one of {...}`."""

    kind: str  # away | to | one_of
    labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class AttackMethod(Node):
    method: str  # as written; check accepts patch | exact | auto


@dataclass(frozen=True)
class AttackBlock(Node):
    """`attack NAME on MODEL { ... }`: items are AttackInputs/AttackTarget/AttackMethod/InputDomain/Minimize/
    Bound/Margin/Save/Using/Limit/Tag nodes."""

    name: str
    model: str
    items: tuple[Any, ...]
    model_span: Span


# ---------------------------------------------------------------------------- assertions


@dataclass(frozen=True)
class AssertExists(Node):
    task: str
    negated: bool


@dataclass(frozen=True)
class AssertDistance(Node):
    task: str
    norm: str
    op: str
    value: float


@dataclass(frozen=True)
class AssertAccuracy(Node):
    subject: str  # a patch/repair result or a model
    points: PointsExpr
    op: str
    value: float


@dataclass(frozen=True)
class AssertMetric(Node):
    """`METRIC(attack) CMP number`, e.g. ``success_rate(adv) >= 0.8`` (the metric names: tasks.attack_metrics)."""

    metric: str
    task: str
    op: str
    value: float


Statement = Union[ModelDecl, PointsDecl, PatchBlock, PropertyBlock, PropertyVnnlib, Verify, RepairBlock,
                  FinetuneBlock, ExpertsBlock, AssertExists, AssertDistance, AssertAccuracy, AttackBlock, AssertMetric]


@dataclass(frozen=True)
class SpecFile:
    path: str
    source: str
    statements: tuple[Statement, ...]
