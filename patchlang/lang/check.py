"""AST -> Program: resolve names, load files, check shapes and decide every task's problem class.

All problems are collected (not just the first) and raised together as one :class:`SpecError`, each with a
PL code, the span, and a ``help`` line that says what to do.  Nothing here solves an optimisation problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..model.edits import EditSpec, NormSpec
from ..errors import Diagnostic, PatchlangError, Span, SpecError
from ..model.ir import Affine, Linear, Network
from ..model.ops import activation, is_linear, layer_stages
from ..inputs import points as P
from . import ast as A
from .program import (Assertion, BackendChoice, GoalSpec, ModelEntry, PatchTask, Program, PropertySpec,
                      RepairTask, VerifyTask)
from .program import FALSIFIERS, FALSIFY_OPTIONS, FalsifyChoice, FinetuneTask
from .experts import ExpertsChecker

DEFAULT_MARGIN = 1e-3
BACKENDS = ("auto", "highs", "gurobi", "z3", "marabou", "milp")
NORMS = ("linf", "l1", "l0")


class _Failed(Exception):
    """Raised inside one statement after its diagnostic was recorded, to skip the rest of it."""


def _suggest(name: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    if known:
        return "declared names: " + ", ".join(sorted(known))
    return None


def _render_points(expr: A.PointsExpr) -> str:
    if isinstance(expr, A.PointsRef):
        return expr.name
    if isinstance(expr, A.PointsFile):
        return f'"{expr.path}"'
    if isinstance(expr, A.PointsInline):
        return "[inline]"
    if isinstance(expr, A.PointsIndexed):
        items = ", ".join(str(i) if isinstance(i, int) else
                          f"{'' if i.start is None else i.start}:{'' if i.stop is None else i.stop}"
                          + ("" if i.step is None else f":{i.step}") for i in expr.items)
        return f"{_render_points(expr.base)}[{items}]"
    if isinstance(expr, A.PointsWhere):
        return f"{_render_points(expr.base)} where ..."
    if isinstance(expr, A.PointsUnion):
        return " + ".join(_render_points(p) for p in expr.parts)
    return "?"


def _select_indices(size: int, items: tuple[A.IndexItem, ...]) -> np.ndarray:
    """Positions ``0..size-1`` picked by indices and slices (negative counts from the end)."""
    everything = np.arange(size)
    picked = []
    for item in items:
        if isinstance(item, int):
            if not -size <= item < size:
                raise PatchlangError(f"index {item} is out of range for {size} rows")
            picked.append(np.array([everything[item]]))
        else:
            if item.step == 0:
                raise PatchlangError("slice step cannot be 0", help="use a positive step, e.g. rows [0:10:2]")
            picked.append(everything[slice(item.start, item.stop, item.step)])
    out = np.unique(np.concatenate(picked)) if picked else everything
    if out.size == 0:
        raise PatchlangError(f"the selection picks no row of the {size}",
                             help="check the slice bounds: indices count from 0 and the stop is excluded")
    return out


class Checker(ExpertsChecker):
    def __init__(self, spec: A.SpecFile, base_dir: Path | None = None, load_models: bool = True):
        self.spec = spec
        self.base = base_dir if base_dir is not None else Path(spec.path).resolve().parent
        self.diags: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.models: dict[str, ModelEntry] = {}
        self.points: dict[str, P.PointSet] = {}
        self.properties: dict[str, PropertySpec] = {}
        self.tasks: list[Any] = []
        self.assertions: list[Assertion] = []
        self.inputs: dict[str, str] = {}
        self.names: dict[str, tuple[str, Span]] = {}
        self.load_models = load_models
        self.defining: str | None = None  # the point set whose expression is being checked
        self.silent_failures = 0  # statements abandoned without a diagnostic (must stay 0; see run)
        self.outputs: list[tuple[str, Span, str]] = []  # (resolved path, where, what): checked at the end of run

    # ------------------------------------------------------------------ helpers
    def error(self, code: str, message: str, span: Span | None, help: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, help))

    def fail(self, code: str, message: str, span: Span | None, help: str | None = None) -> None:
        self.error(code, message, span, help)
        raise _Failed

    def path(self, p: str, span: Span, what: str) -> Path:
        from ..guard import InputRefused, sha256_input

        if "\x00" in p:
            self.fail("PL217", f"{what} path contains a NUL byte", span, "remove the \\0 from the path")
        full = Path(os.path.abspath(self.base / p))
        try:
            full = full.resolve()
        except (OSError, RuntimeError):  # a symlink loop: reported below, by the input guard
            pass
        if not os.path.lexists(full):
            if len(os.fsencode(str(full))) >= 4096 or any(len(os.fsencode(c)) > 255 for c in full.parts):
                self.fail("PL217", f"{what} path is too long", span, "give a shorter path")
            self.fail("PL210", f"{what} not found: {p}", span,
                      f"looked for {full}; paths are relative to the .patch file's folder")
        try:
            self.inputs[str(full)] = sha256_input(full, what)  # a directory, FIFO, device...: refused, not read
        except InputRefused as exc:
            self.fail("PL217", exc.message, span, exc.help)
        return full

    def output(self, p: str, span: Span, what: str, suffixes: tuple[str, ...]) -> str:
        """A `save` path, resolved; checked against the inputs and the other outputs once all are known."""
        if "\x00" in p or not p.strip():
            self.fail("PL242", f"{what} path {p!r} is not a valid file name", span, "give a file name")
        full = os.path.abspath(self.base / p)
        try:
            full = str(Path(full).resolve())
        except (OSError, RuntimeError):
            pass
        if not full.endswith(suffixes):
            self.fail("PL242", f"the path of {what} must end in {' or '.join(suffixes)}", span,
                      f"e.g. save \"out/result{suffixes[0]}\"")
        self.outputs.append((full, span, what))
        return full

    def check_outputs(self) -> None:
        """No output onto an input (the spec, a model, a point, label or property file) nor two onto one path."""
        from ..guard import OutputRefused, guard_for

        guard = guard_for(self.spec.path, list(self.inputs), [m.path for m in self.models.values()])
        for full, span, what in self.outputs:
            try:
                guard.claim(full, what)
            except OutputRefused as exc:
                self.error("PL242", exc.message, span, "save to a new file name: never onto a file the spec "
                                                       "reads, and one file per task")

    def declare(self, name: str, kind: str, span: Span) -> bool:
        if name in self.names:
            other_kind, other = self.names[name]
            self.error("PL201", f"`{name}` is already declared (as a {other_kind} at line {other.line})", span,
                       "choose a different name")
            return False
        self.names[name] = (kind, span)
        return True

    def guarded(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _Failed:
            return None

    def declared_later(self, name: str, span: Span) -> int | None:
        """The line of a declaration of ``name`` after ``span`` (a forward reference), or None."""
        for st in self.spec.statements:
            if getattr(st, "name", None) == name and st.span.line > span.line:
                return st.span.line
        return None

    # ------------------------------------------------------------------ entry
    def run(self) -> Program:
        for st in self.spec.statements:
            before = len(self.diags)
            try:
                self.statement(st)
            except _Failed:
                # A statement abandoned without a diagnostic would silently drop it (and what uses it): never ok.
                if len(self.diags) == before and not self.diags:
                    self.silent_failures += 1
            except RecursionError:
                self.error("PL102", "this statement nests too deeply", getattr(st, "span", None),
                           "write it with fewer nested parentheses (at most 100 levels)")
        if self.silent_failures and not self.diags:
            self.error("PL199", "a statement could not be checked (internal; please report)", None)
        self.check_outputs()
        if self.diags:
            err = SpecError(items=self.diags)
            err.inputs = dict(self.inputs)  # what was read so far: a report written after the error protects it
            raise err
        return Program(self.spec.path, self.spec.source, self.models, self.points, self.properties, self.tasks,
                       self.assertions, self.inputs, self.warnings)

    def statement(self, st: Any) -> None:
        if isinstance(st, A.ModelDecl):
            self.model_decl(st)
        elif isinstance(st, A.PointsDecl):
            if self.declare(st.name, "point set", st.span):
                self.defining = st.name
                try:
                    ps = self.points_expr(st.expr)
                finally:
                    self.defining = None
                # A set read straight from a file is known by its declared name; a derived set keeps the
                # name and numbering of its source, so that `wrong[0]` is never reported as `wrong[2]`.
                root = isinstance(st.expr, (A.PointsFile, A.PointsInline)) and ps.origins is None
                self.points[st.name] = dataclasses.replace(ps, name=st.name) if root else ps
        elif isinstance(st, A.PatchBlock):
            if self.declare(st.name, "patch", st.span):
                self.tasks.append(self.patch_block(st.name, st.model, st.model_span, st.items, st.span))
        elif isinstance(st, (A.PropertyBlock, A.PropertyVnnlib)):
            if self.declare(st.name, "property", st.span):
                self.properties[st.name] = self.property_decl(st)
        elif isinstance(st, A.Verify):
            self.tasks.append(self.verify_stmt(st))
        elif isinstance(st, A.RepairBlock):
            self.tasks.append(self.repair_block(st))
        elif isinstance(st, A.FinetuneBlock):
            self.tasks.append(self.finetune_block(st))
        elif isinstance(st, A.ExpertsBlock):
            self.tasks.append(self.experts_block(st))
        elif isinstance(st, (A.AssertExists, A.AssertDistance, A.AssertAccuracy)):
            self.assertion(st)
        elif isinstance(st, A.AttackBlock):
            from .check_attack import attack_block

            if self.declare(st.name, "attack", st.span):
                task = attack_block(self, st)
                if task is not None:
                    self.tasks.append(task)
        elif isinstance(st, A.AssertMetric):
            from .check_attack import metric_assertion

            metric_assertion(self, st)
            text = self.spec.source.splitlines()[st.span.line - 1].strip() if st.span.line else "assert"
            self.assertions.append(Assertion(st, None, text, st.span))
        else:  # pragma: no cover - the parser produces nothing else
            self.fail("PL199", f"unsupported statement {type(st).__name__}", getattr(st, "span", None))

    # ------------------------------------------------------------------ models
    def model_decl(self, st: A.ModelDecl) -> None:
        if not self.declare(st.name, "model", st.span):
            return
        full = self.path(st.path, st.span, "model file")
        from ..errors import ModelError
        from ..model.loader import load_model

        try:
            net = load_model(str(full), fmt=st.format, name=st.name)
        except ModelError as exc:
            self.fail("PL211", f"cannot load model `{st.name}`: {exc.message}", st.span, exc.help)
        except PatchlangError as exc:
            self.fail("PL211", f"cannot load model `{st.name}`: {exc.message}", st.span, exc.help)
        net.decision = st.decision
        self.models[st.name] = ModelEntry(st.name, net, str(full), st.span)

    def model_ref(self, name: str, span: Span) -> ModelEntry:
        if name not in self.models:
            kind = self.names.get(name, (None,))[0]
            if kind == "model":
                raise _Failed  # its declaration failed and was reported there
            if kind:
                self.fail("PL203", f"`{name}` is a {kind}, not a model", span)
            self.fail("PL202", f"unknown model `{name}`", span, _suggest(name, list(self.models)))
        return self.models[name]

    # ------------------------------------------------------------------ point sets
    def points_expr(self, e: A.PointsExpr) -> P.PointSet:
        try:
            return self._points_expr(e)
        except PatchlangError as exc:
            self.fail("PL212", exc.message, e.span, exc.help)

    def _points_expr(self, e: A.PointsExpr) -> P.PointSet:
        if isinstance(e, A.PointsRef):
            if e.name not in self.points:
                kind = self.names.get(e.name, (None,))[0]
                if e.name == self.defining:
                    hint = _suggest(e.name, [p for p in self.points if p != e.name])
                    self.fail("PL218", f"point set `{e.name}` is defined from itself", e.span,
                              (f"{hint} " if hint else "") + "(a point set can only use sets declared above it)")
                if kind == "point set":
                    raise _Failed  # its declaration failed and was reported there
                later = self.declared_later(e.name, e.span)
                if later is not None:
                    self.fail("PL218", f"`{e.name}` is used before its declaration at line {later}", e.span,
                              "declare a point set before the statements that use it (no forward or cyclic "
                              "references)")
                if kind:
                    self.fail("PL203", f"`{e.name}` is a {kind}, not a point set", e.span)
                self.fail("PL202", f"unknown point set `{e.name}`", e.span, _suggest(e.name, list(self.points)))
            return self.points[e.name]
        if isinstance(e, A.PointsFile):
            full = self.path(e.path, e.span, "point file")
            opts: dict[str, Any] = {}
            for key, value, span in e.options:
                if key not in ("labels", "x", "y", "scale"):
                    self.fail("PL213", f"unknown option `{key}` for a point file", span,
                              "options: labels = \"file\", x = \"array\", y = \"array\", scale = number")
                if key == "labels":
                    opts["labels_path"] = str(self.path(str(value), span, "label file"))
                elif key == "scale":
                    if not isinstance(value, float):
                        self.fail("PL213", "scale takes a number", span)
                    opts["scale"] = value
                else:
                    if not isinstance(value, str):
                        self.fail("PL213", f"`{key}` takes the name of an array in quotes", span)
                    opts[f"{key}_key"] = value
            return P.load_points(str(full), **opts)
        if isinstance(e, A.PointsInline):
            rows = [list(r) for r in e.rows]
            if len({len(r) for r in rows}) > 1:
                self.fail("PL214", "inline points must all have the same length", e.span)
            if e.labels is not None and len(e.labels) != len(rows):
                self.fail("PL214", f"{len(rows)} inline points but {len(e.labels)} labels", e.span)
            return P.inline_points(rows, list(e.labels) if e.labels is not None else None)
        if isinstance(e, A.PointsIndexed):
            base = self._points_expr(e.base)
            items: list[int | slice] = [i if isinstance(i, int) else slice(i.start, i.stop, i.step) for i in e.items]
            return P.select(base, items)
        if isinstance(e, A.PointsWhere):
            ps = self._points_expr(e.base)
            for cond in e.conditions:
                ps = self.condition(ps, cond)
            return ps
        if isinstance(e, A.PointsUnion):
            parts = [self._points_expr(p) for p in e.parts]
            out = parts[0]
            for p in parts[1:]:
                out = out.union(p)
            return out
        self.fail("PL199", "unsupported point expression", e.span)
        raise AssertionError

    def condition(self, ps: P.PointSet, cond: A.Condition) -> P.PointSet:
        if isinstance(cond, A.LabelCmp):
            return P.filter_label(ps, cond.op, cond.value)
        if isinstance(cond, A.LabelIn):
            return P.filter_label(ps, "in", set(cond.values))
        if isinstance(cond, A.Correct):
            entry = self.model_ref(cond.model, cond.span)
            if ps.y is None:
                self.fail("PL215", "correct()/misclassified() need labelled points", cond.span,
                          'add labels, e.g. `with labels = "labels.txt"`')
            self.check_shape(ps, entry.net, cond.span)
            pred = entry.net.labels(ps.x)
            mask = pred == ps.y
            return P.filter_mask(ps, ~mask if cond.negated else mask)
        self.fail("PL199", "unsupported condition", cond.span)
        raise AssertionError

    def check_shape(self, ps: P.PointSet, net: Network, span: Span) -> None:
        size = int(np.prod(ps.x.shape[1:])) if ps.x.ndim > 1 else 1
        if len(ps) and size != net.input_size:
            self.fail("PL216", f"points have {size} values each but model `{net.name}` takes "
                               f"{net.input_size} (shape {tuple(net.input_shape)})", span,
                      "select the right point set, or reshape/scale the data when saving it")

    # ------------------------------------------------------------------ patches
    def patch_block(self, name: str, model_name: str, model_span: Span, items: tuple, span: Span,
                    kind: str = "patch") -> PatchTask:
        entry = self.model_ref(model_name, model_span)
        b = _Block(name, kind, entry.net)
        errors_before = len(self.diags)
        for item in items:
            self.guarded(lambda item=item: self.block_item(b, item))
        for item in b.suspicious:  # localization reads the block's change and keep points: after all of them
            self.guarded(lambda item=item: b.edits.append(self.edit_suspicious(b, item)))
        self.block_complete(b, span, block_had_errors=len(self.diags) > errors_before)
        problem_class, reason = self.classify(b.net, b.edits, b.goals, b.norms, b.backend, span)
        return PatchTask(name, entry, b.edits, b.goals, b.norms, b.margin, b.save, b.backend, span, problem_class,
                         reason, b.round_bits, b.limits, kind, margin_explicit="margin" in b.seen,
                         localized=b.localized)

    def new_block(self, name: str, kind: str, net: Network) -> "_Block":
        return _Block(name, kind, net)

    def block_item(self, b: "_Block", item: Any) -> None:
        """One statement of a patch or repair block, recorded in ``b``."""
        if isinstance(item, A.EditLayer):
            b.edits.extend(self.edit_layer(b.net, item))
        elif isinstance(item, A.EditSuspicious):
            b.suspicious.append(item)
        elif isinstance(item, A.EditAllBiases):
            net = b.net
            for k, layer in enumerate(net.affine(i) for i in range(len(net.affine_indices()))):
                self.refuse_shared(net, layer, "biases", item.span)
                b.edits.append(EditSpec(k, "biases", np.ones(net.params(k, "biases").shape, dtype=bool), item.span,
                                        f"{layer.name}.bias"))
        elif isinstance(item, (A.Keep, A.Change, A.Require)):
            g = self.goal(b.net, item)
            # a goal over no points constrains nothing (warning PL250): left out, so no solver sees an empty block
            (b.goals if len(g.points) else b.empty_goals).append(g)
        elif isinstance(item, (A.Minimize, A.Bound)):
            self.block_norm(b, item)
        elif isinstance(item, A.Limit):
            self.block_limit(b, item)
        elif isinstance(item, A.Tag):
            return  # labels for `run --select/--exclude` only (lang/select.py reads them from the AST)
        else:
            self.block_setting(b, item)

    def once(self, b: "_Block", key: str, item_span: Span) -> None:
        if key in b.seen:
            self.fail("PL240", f"`{key}` is given twice in this block (first at line {b.seen[key].line})",
                      item_span, "keep one")
        b.seen[key] = item_span

    def block_norm(self, b: "_Block", item: A.Minimize | A.Bound) -> None:
        if isinstance(item, A.Minimize):
            self.once(b, "minimize", item.span)
            if any(w <= 0 for w, _ in item.terms):
                self.fail("PL241", "norm weights must be positive", item.span)
            b.norms.objective = [(w, n) for w, n in item.terms]
            return
        self.once(b, f"bound {item.norm}", item.span)
        if item.value < 0:
            self.fail("PL241", "a bound must be non-negative", item.span)
        b.norms.bounds[item.norm] = item.value
        b.norms.bound_spans[item.norm] = item.span

    def block_limit(self, b: "_Block", item: A.Limit) -> None:
        if item.name not in _LIMIT_RULES:
            self.fail("PL243", f"unknown limit `{item.name}`", item.span,
                      "limits: iterations, time (seconds), counterexamples (per iteration), verify "
                      "(seconds per verification), samples (of the property's region kept, repair)")
        ok, want = _LIMIT_RULES[item.name]
        if not ok(item.value):
            self.fail("PL241", f"`limit {item.name}` must be {want}, not {item.value!r}", item.span)
        b.limits[item.name] = item.value

    def block_setting(self, b: "_Block", item: Any) -> None:
        """`margin`, `save`, `using`, `round`: each at most once per block."""
        if isinstance(item, A.Margin):
            self.once(b, "margin", item.span)
            if item.value < 0:
                self.fail("PL241", "the margin must be non-negative", item.span)
            b.margin = item.value
        elif isinstance(item, A.Save):
            self.once(b, "save", item.span)
            b.save = self.output(item.path, item.span, f"the patched model of `{b.name}` (line {item.span.line})",
                                 (".onnx", ".nnet"))
        elif isinstance(item, A.Using):
            self.once(b, "using", item.span)
            b.backend = self.using(item)
        elif isinstance(item, A.Round):
            self.once(b, "round", item.span)
            if not 1 <= item.bits <= 52:
                self.fail("PL241", "round significand takes 1 to 52 bits", item.span)
            b.round_bits = item.bits
        else:  # pragma: no cover - the parser produces nothing else
            self.fail("PL199", f"unsupported block statement {type(item).__name__}", getattr(item, "span", None))

    def block_complete(self, b: "_Block", span: Span, block_had_errors: bool) -> None:
        """What a block as a whole needs: something to edit, something to hold, bounds that l0 requires."""
        if not b.edits and not block_had_errors:
            self.error("PL231", f"{b.kind} `{b.name}` says nothing may move", span,
                       "add an edit statement, e.g. `edit layer -1 weights`")
        if b.kind == "patch" and not b.goals and not block_had_errors:
            if b.empty_goals:
                self.error("PL251", f"every keep, change and require of patch `{b.name}` selects no points", span,
                           "nothing would be asked of the network: check the point expressions (see the PL250 "
                           "warnings)")
            else:
                self.error("PL232", f"patch `{b.name}` has no keep, change or require statement", span,
                           "say what must hold, e.g. `change wm[0] to 7`")
        norms = b.norms
        if not norms.objective:
            norms.objective = [(1.0, "linf")]
        linf_bounded = np.isfinite(norms.bounds.get("linf", np.inf))
        if any(n == "l0" for _, n in norms.objective) and not linf_bounded:
            self.error("PL233", "minimizing l0 needs a bound on each parameter's change", span,
                       "add `bound linf <= c` (e.g. 1.0); it is also the big-M of the indicators")
        if "l0" in norms.bounds and not linf_bounded:
            self.error("PL233", "`bound l0` needs a bound on each parameter's change", norms.bound_spans["l0"],
                       "add `bound linf <= c`")

    def edit_layer(self, net: Network, item: A.EditLayer) -> list[EditSpec]:
        k = net.find_affine(item.layer)
        if k is None:
            names = net.layer_names()
            listing = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
            self.fail("PL220", f"model `{net.name}` has no editable layer {item.layer!r}", item.span,
                      f"editable affine layers (index: name): {listing}" +
                      (f"; layers before the opaque prefix end ({net.prefix.description}) cannot move"
                       if net.prefix else ""))
        layer = net.affine(k)
        n_rows = int(net.params(k, "biases").shape[0])  # outputs of a dense layer, output channels of a convolution
        rows = np.arange(n_rows)
        if item.rows is not None:
            try:
                rows = _select_indices(n_rows, item.rows)
            except PatchlangError as exc:
                self.fail("PL221", f"rows of layer {layer.name}: {exc.message}", item.span)
        out = []
        for kind in sorted(item.params, reverse=True):  # weights before biases
            self.refuse_shared(net, layer, kind, item.span)
            mask = np.zeros(net.params(k, kind).shape, dtype=bool)
            mask[rows] = True
            label = f"{layer.name}.{'weight' if kind == 'weights' else 'bias'}"
            out.append(EditSpec(k, kind, mask, item.span, label))
        return out

    def refuse_shared(self, net: Network, layer: Affine | Linear, kind: str, span: Span) -> None:
        """An edited tensor that another node of the file also reads would move there too, which the encoding
        (one unknown per layer) does not represent: refused rather than answered wrongly."""
        ref = layer.weight_ref if kind == "weights" else layer.bias_ref
        proto = getattr(net, "proto", None)
        if ref is None or proto is None:
            return
        readers = [node.name or f"{node.op_type}_{i}" for i, node in enumerate(proto.graph.node)
                   for name in node.input if name == ref.initializer]
        if len(readers) > 1:
            self.fail("PL234", f"the {kind} of layer {layer.name} are the tensor `{ref.initializer}`, which "
                               f"{len(readers)} nodes read ({', '.join(readers[:4])}): editing it would change them "
                               "all, and the encoding treats them as independent", span,
                      "edit a layer whose parameters are not shared, or give each layer its own copy of the "
                      "tensor in the ONNX file")

    def goal(self, net: Network, item: A.Keep | A.Change | A.Require) -> GoalSpec:
        ps = self.points_expr(item.points)
        self.check_shape(ps, net, item.points.span)
        text_points = _render_points(item.points)
        if len(ps) == 0:
            self.warnings.append(Diagnostic("PL250", f"`{text_points}` selects no points: this statement "
                                                     "constrains nothing and is left out", item.span,
                                            severity="warning"))
        n_out = net.output_size
        if isinstance(item, A.Keep):
            if item.within is None:
                return GoalSpec("keep", ps, item.span, f"keep {text_points}")
            self.check_tail(net, f"`keep {text_points} outputs within`", item.span)
            if item.within < 0:  # would make the task silently infeasible ("no patch")
                self.fail("PL241", "`outputs within` takes a non-negative tolerance", item.span,
                          "e.g. `keep good outputs within 0.1`")
            return GoalSpec("keep_within", ps, item.span, f"keep {text_points} outputs within {item.within:g}",
                            tolerance=item.within)
        if isinstance(item, A.Require):
            self.check_cnf(item.cnf, n_out, ps, net)
            return GoalSpec("require", ps, item.span, f"require {text_points}", cnf=item.cnf)
        for lab in item.labels:
            if not 0 <= lab < n_out:
                self.fail("PL222", f"label {lab} is out of range: model `{net.name}` has {n_out} outputs", item.span,
                          f"labels are 0..{n_out - 1}")
        if item.kind == "to_own" and ps.y is None:
            self.fail("PL215", "`to label` needs labelled points", item.points.span,
                      'give the points labels, e.g. `with labels = "labels.txt"` or arrays x and y in an npz')
        if item.kind == "to_own" and len(ps) and not np.all((ps.y >= 0) & (ps.y < n_out)):
            self.fail("PL222", f"some labels are outside 0..{n_out - 1}", item.points.span)
        words = {"to": f"to {item.labels[0] if item.labels else ''}", "to_own": "to label",
                 "one_of": f"to one of {set(item.labels)}",
                 "runner_up": "to runner-up", "away": "away from label"}[item.kind]
        if item.kind in ("runner_up", "away") and n_out < 2:
            self.fail("PL222", f"{words} needs at least two outputs: model `{net.name}` has one, so no other "
                      "label exists", item.span, "a one-output model can be moved by `require`, e.g. `require p: "
                      "y[0] <= -1`")
        return GoalSpec(item.kind, ps, item.span, f"change {text_points} {words}", labels=item.labels)

    def check_tail(self, net: Network, what: str, span: Span | None) -> None:
        """PL302: a statement over output *values* on a model whose final Softmax/LogSoftmax the importer stripped
        (the IR's outputs are the logits; only comparisons between outputs mean the same before and after it)."""
        tail = net.tail
        if tail is None:
            return
        self.fail("PL302", f"{what} constrains output values, but model `{net.name}` ends in {tail['op']} node "
                           f"'{tail['node']}', which patchlang strips (its outputs here are the logits before it)",
                  span, "use label statements (`label is`, `label stays`, `change ... to`, `keep` without `outputs "
                        "within`, `y[i] >= y[j]`), which the monotone tail leaves unchanged; or export the model "
                        "without the final softmax and state the bounds on its logits")

    def check_cnf(self, cnf: A.OutputCNF, n_out: int, ps: P.PointSet | None, net: Network | None = None) -> None:
        for clause in cnf.clauses:
            for atom in clause:
                refs: list[int] = []
                if isinstance(atom, A.AtomCompare):
                    if net is not None and not _compares_outputs(atom):
                        self.check_tail(net, "this constraint", atom.span)
                    refs = [i for i, _ in atom.lhs.terms] + [i for i, _ in atom.rhs.terms]
                    if atom.op == "!=":
                        self.fail("PL223", "`!=` is not supported in output constraints", atom.span,
                                  "write it as `a < b or a > b`")
                elif isinstance(atom, A.AtomExtreme):
                    refs = [atom.index]
                elif isinstance(atom, A.AtomLabelIs):
                    if not 0 <= atom.label < n_out:
                        self.fail("PL222", f"label {atom.label} is out of range (0..{n_out - 1})", atom.span)
                for r in refs:
                    if not 0 <= r < n_out:
                        self.fail("PL222", f"y[{r}] does not exist: the model has {n_out} outputs", atom.span,
                                  f"outputs are y[0]..y[{n_out - 1}]")

    def using(self, item: A.Using) -> BackendChoice:
        if item.backend not in BACKENDS:
            self.fail("PL244", f"unknown backend `{item.backend}`", item.span,
                      "backends: " + ", ".join(BACKENDS))
        opts: dict[str, Any] = {}
        for key, value, span in item.options:
            if key in opts:
                self.fail("PL240", f"option `{key}` is given twice", span, "keep one")
            rule = _OPTION_RULES.get(key)
            if rule is not None:
                ok, want = rule
                if not ok(value):
                    self.fail("PL245", f"option `{key}` must be {want}, not {value!r}", span,
                              f"e.g. `using {item.backend} ({key} = {_OPTION_EXAMPLES[key]})`")
            opts[key] = value
        return BackendChoice(item.backend, opts, item.span)

    def classify(self, net: Network, edits: list[EditSpec], goals: list[GoalSpec], norms: NormSpec,
                 backend: BackendChoice, span: Span) -> tuple[str, str]:
        """The problem class and why, decided before anything is solved."""
        if not edits:
            return "LP", "nothing to edit"
        idx = net.affine_indices()
        positions = sorted({idx[e.layer] for e in edits})
        first = positions[0]
        weight_layers = sorted({idx[e.layer] for e in edits if e.kind == "weights"})
        bilinear = [p for p in weight_layers if p != first]
        if bilinear:
            names = ", ".join(net.layers[p].name for p in bilinear)
            if backend.name != "z3":
                e = next(e for e in edits if e.kind == "weights" and idx[e.layer] in bilinear)
                self.fail("PL230", f"editing the weights of {names} multiplies them by values that another edit "
                                   f"upstream also changes (bilinear): not an LP or MILP", e.span,
                          "edit weights of one layer only, plus biases downstream of it; "
                          "or say `using z3` to search the nonlinear problem exactly (may not end)")
            return "SMT", f"weights of {names} are multiplied by other unknowns (nonlinear)"
        downstream = [layer for layer in net.layers[first + 1:] if not is_linear(layer)]
        smooth = [layer for layer in downstream if activation(layer) is not None]
        if smooth:  # no exact form to encode (PL301): the same message the encoder would give, here with a place
            e = next(e for e in edits if idx[e.layer] == first)
            try:
                layer_stages(smooth[0], 1)
            except PatchlangError as exc:
                self.fail(exc.code, exc.message, e.span, exc.help)
        reasons = []
        if downstream:
            reasons.append(f"{len(downstream)} activation layer(s) after the first edited layer "
                           f"({net.layers[first].name}); ReLUs whose phase the bounds fix cost nothing")
        away_points = sum(len(g.points) for g in goals if g.kind == "away")
        disjunctive = [g for g in goals if g.kind == "one_of" or (g.kind == "require" and g.cnf is not None
                                                                    and any(len(c) > 1 for c in g.cnf.clauses))]
        if away_points > 1 or (away_points == 1 and (disjunctive or downstream)):
            reasons.append("`away from label` is a disjunction over the other labels")
        if disjunctive:
            reasons.append("a disjunctive goal (`one of`, `or`, `is not min/max`)")
        if any(n == "l0" for _, n in norms.objective) or "l0" in norms.bounds:
            reasons.append("l0 counts changed parameters with binary indicators")
        if backend.name == "z3":
            return "SMT", "`using z3`: exact rational arithmetic" + (f" ({'; '.join(reasons)})" if reasons else "")
        if reasons:
            return "MILP", "; ".join(reasons)
        last = idx[-1]
        what = "the last affine layer" if first == last else "affine layers with nothing piecewise after them"
        extra = " (one LP per candidate label for `away from label`)" if away_points == 1 else ""
        return "LP", f"only {what} moves and the goals are linear{extra}"

    # ------------------------------------------------------------------ properties, verify, repair
    def property_decl(self, st: A.PropertyBlock | A.PropertyVnnlib) -> PropertySpec:
        if isinstance(st, A.PropertyVnnlib):
            full = self.path(st.path, st.span, "VNN-LIB file")
            from ..inputs.vnnlib import parse_vnnlib

            try:
                prop = parse_vnnlib(str(full))
            except PatchlangError as exc:
                self.fail("PL260", f"cannot read VNN-LIB property: {exc.message}", st.span, exc.help)
            boxes = [(np.asarray(lo, float), np.asarray(hi, float)) for lo, hi, _ in prop.cases]
            return PropertySpec(st.name, st.span, boxes, unsafe_dnf=[dnf for _, _, dnf in prop.cases],
                                source="vnnlib")
        boxes = []
        centers = None
        domain = self.input_domain(st)
        for inp in st.inputs:
            if isinstance(inp, A.InputBox):
                lo = np.asarray(inp.lo, float)  # a single number (0-d) stands for every input; a vector is exact
                hi = np.asarray(inp.hi, float)
                if lo.ndim and hi.ndim and lo.size != hi.size:
                    self.fail("PL261", f"box bounds differ in length (lo has {lo.size}, hi has {hi.size})",
                              inp.span, "give lo and hi one value per input each (or one number for all)")
                if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                    self.fail("PL261", "box bounds must be finite numbers", inp.span,
                              "give finite bounds for every input")
                if np.any(np.broadcast_to(lo, np.broadcast_shapes(lo.shape, hi.shape)) > hi):
                    self.fail("PL261", "box has lo > hi", inp.span)
                boxes.append((lo, hi))
            else:
                if inp.norm != "linf":
                    self.fail("PL262", f"only linf balls are supported as input regions, not {inp.norm}", inp.span,
                              "write `input within linf EPS of POINTS`")
                if not (np.isfinite(inp.eps) and inp.eps >= 0):
                    self.fail("PL262", f"the radius of an input ball must be a finite number >= 0, not {inp.eps!r}",
                              inp.span, "e.g. `input within linf 0.05 of POINTS`")
                ps = self.points_expr(inp.points)
                if len(ps) == 0:
                    self.warnings.append(Diagnostic("PL250", f"`{_render_points(inp.points)}` selects no points: "
                                                             "this input statement adds no region", inp.span,
                                                    severity="warning"))
                flat = ps.flat()
                for row in flat:
                    boxes.append((row - inp.eps, row + inp.eps))
                centers = ps if centers is None else centers.union(ps)
        if not boxes:
            empty = [_render_points(i.points) for i in st.inputs if isinstance(i, A.InputBall)]
            self.fail("PL263", f"property `{st.name}` has no input region"
                               + (f" ({', '.join(f'`{e}`' for e in empty)} selects no points)" if empty else ""),
                      st.span,
                      "add `input box lo [...] hi [...]` or `input within linf EPS of POINTS`")
        if not st.ensures:
            self.fail("PL264", f"property `{st.name}` has no `ensure` statement", st.span)
        if domain is not None:
            boxes = self.cut_to_domain(st, boxes, domain, centers)
        stays = [a for cnf in st.ensures for clause in cnf.clauses for a in clause if isinstance(a, A.AtomLabelStays)]
        if stays and (centers is None or any(isinstance(i, A.InputBox) for i in st.inputs)):
            self.fail("PL266", "`label stays` needs a centre point for every input region", stays[0].span,
                      "use `input within linf EPS of POINTS` regions only, or write `label is N`")
        return PropertySpec(st.name, st.span, boxes, ensures=list(st.ensures), centers=centers, domain=domain,
                            domain_span=st.domains[0].span if st.domains else None)

    def input_domain(self, st: A.PropertyBlock) -> tuple[np.ndarray, np.ndarray] | None:
        """`domain [lo, hi]`: one number for every input or one per input, finite, lo <= hi; at most one."""
        if not st.domains:
            return None
        if len(st.domains) > 1:
            self.fail("PL268", f"property `{st.name}` has more than one `domain`", st.domains[1].span,
                      "give one `domain [lo, hi]`: every input region of the property is cut to it")
        d = st.domains[0]
        lo, hi = np.asarray(d.lo, float), np.asarray(d.hi, float)
        if lo.ndim and hi.ndim and lo.size != hi.size:
            self.fail("PL268", f"domain bounds differ in length (lo has {lo.size}, hi has {hi.size})", d.span,
                      "give lo and hi one value per input each, or one number for all: `domain [0, 1]`")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            self.fail("PL268", "domain bounds must be finite numbers", d.span, "e.g. `domain [0, 1]`")
        if np.any(np.broadcast_to(lo, np.broadcast_shapes(lo.shape, hi.shape)) > hi):
            self.fail("PL268", "domain has lo > hi", d.span, "write the lower bound first: `domain [lo, hi]`")
        return lo, hi

    def cut_to_domain(self, st: A.PropertyBlock, boxes: list[tuple[np.ndarray, np.ndarray]],
                      domain: tuple[np.ndarray, np.ndarray], centers) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every region intersected with the domain: no input outside it is ever searched or reported."""
        dlo, dhi = domain
        span = st.domains[0].span
        n_domain = max(dlo.size if dlo.ndim else 0, dhi.size if dhi.ndim else 0)
        out = []
        for i, (lo, hi) in enumerate(boxes):
            n_box = max(lo.size if lo.ndim else 0, hi.size if hi.ndim else 0)
            if n_domain and n_box and n_domain != n_box:
                self.fail("PL268", f"the domain gives {n_domain} bound(s) per side, an input region of property "
                                   f"`{st.name}` has {n_box}", span, "give the domain one bound per input")
            new_lo, new_hi = np.maximum(lo, dlo), np.minimum(hi, dhi)
            if np.any(new_lo > new_hi):
                where = centers.describe(i) if centers is not None and len(centers) == len(boxes) else f"box {i}"
                self.fail("PL268", f"input region {i} of property `{st.name}` ({where}) lies outside its domain",
                          span, "check the data against the domain, or widen the domain")
            out.append((new_lo, new_hi))
        return out

    def property_ref(self, name: str, span: Span) -> PropertySpec:
        if name not in self.properties:
            if self.names.get(name, (None,))[0] == "property":
                raise _Failed  # its declaration failed and was reported there
            self.fail("PL202", f"unknown property `{name}`", span, _suggest(name, list(self.properties)))
        return self.properties[name]

    def check_property_fits(self, prop: PropertySpec, net: Network, span: Span) -> None:
        if prop.domain is not None:
            for size in {a.size for a in prop.domain if a.ndim}:
                if size != net.input_size:
                    self.fail("PL265", f"property `{prop.name}` does not fit model `{net.name}`: its `domain` gives "
                                       f"{size} bound(s) per side, the model takes {net.input_size} inputs",
                              prop.domain_span or span, "give one bound per input, or one number for all")
        for lo, hi in prop.boxes:
            sizes = {a.size for a in (lo, hi) if a.ndim}  # a single number (0-d) fits any input size
            for size in sizes:
                if size != net.input_size:
                    where = "its VNN-LIB file declares" if prop.source == "vnnlib" else "it gives"
                    self.fail("PL265", f"property `{prop.name}` does not fit model `{net.name}`: {where} {size} "
                                       f"input bound(s), the model takes {net.input_size} inputs", span,
                              "describe every input of the model (one bound per input)")
        for cnf in prop.ensures:
            self.check_cnf(cnf, net.output_size, prop.centers, net)
        stays = any(isinstance(a, A.AtomLabelStays) for cnf in prop.ensures for c in cnf.clauses for a in c)
        if stays and prop.centers is not None and prop.centers.y is not None:
            bad = (prop.centers.y < 0) | (prop.centers.y >= net.output_size)
            if bad.any():
                i = int(np.argmax(bad))
                self.fail("PL222", f"`label stays` around {prop.centers.describe(i)}, whose label "
                                   f"{int(prop.centers.y[i])} is not an output of model `{net.name}` "
                                   f"(0..{net.output_size - 1})", span, "fix the labels of the centre points")
        if prop.unsafe_dnf is not None:
            for dnf in prop.unsafe_dnf:
                for conj in dnf:
                    for atom in conj:
                        if any(i >= net.output_size for i in atom.coeffs):
                            self.fail("PL265", f"property `{prop.name}` refers to outputs the model "
                                               f"`{net.name}` does not have", span)
                        c = sorted(atom.coeffs.values())
                        if not (len(c) == 2 and c[0] == -c[1] and atom.rhs == 0):
                            self.check_tail(net, f"property `{prop.name}` (VNN-LIB)", span)

    def verify_stmt(self, st: A.Verify) -> VerifyTask:
        entry = self.model_ref(st.model, st.span)
        prop = self.property_ref(st.prop, st.span)
        self.check_property_fits(prop, entry.net, st.span)
        if st.timeout is not None and not (_is_number(st.timeout) and st.timeout > 0):
            self.fail("PL241", f"a verify timeout must be a positive number of seconds, not {st.timeout!r}", st.span,
                      "e.g. `verify net satisfies p timeout 60`")
        backend = self.using(st.using) if st.using else BackendChoice("auto")
        name = f"verify {st.model} satisfies {st.prop}"
        save = (self.output(st.save, st.span, f"the counterexample of `{name}` (line {st.span.line})", (".npy",))
                if st.save else None)
        falsify = self.falsify_choice(st.falsify) if st.falsify else None
        return VerifyTask(name, entry, prop, st.timeout, backend, save, st.span, falsify=falsify)

    def falsify_choice(self, item: A.Falsify) -> FalsifyChoice:
        if item.method not in FALSIFIERS:
            self.fail("PL275", f"unknown falsifier `{item.method}`", item.span, "falsifiers: " + ", ".join(FALSIFIERS))
        opts: dict[str, Any] = {}
        for key, value, span in item.options:
            if key not in FALSIFY_OPTIONS or isinstance(value, str) or value < 0:
                self.fail("PL275", f"unknown or invalid falsifier option `{key} = {value}`", span,
                          "options: queries = N (network evaluations), focus = 0 | 1, seed = N")
            opts[key] = value
        return FalsifyChoice(item.method, opts, item.only, item.span)

    def repair_head(self, st: A.RepairBlock | A.FinetuneBlock) -> tuple[ModelEntry, PropertySpec, str]:
        """The model, the property and the result's name of a repair block (either kind)."""
        entry = self.model_ref(st.model, st.span)
        prop = self.property_ref(st.prop, st.span)
        self.check_property_fits(prop, entry.net, st.span)
        name = st.result_name or f"repair_{st.model}_{st.prop}"
        if st.result_name:
            self.declare(st.result_name, "repair", st.span)
        return entry, prop, name

    def repair_block(self, st: A.RepairBlock) -> RepairTask:
        entry, prop, name = self.repair_head(st)
        patch = self.patch_block(name, st.model, st.span, st.items, st.span, kind="repair")
        if patch is not None and patch.problem_class == "LP" and _repair_is_disjunctive(prop, entry.net.output_size):
            patch.problem_class = "MILP"
            patch.class_reason = ("the property must hold at each counterexample, and its negation needs one of "
                                  "several outputs to move (one binary per alternative)")
        return RepairTask(name, entry, prop, patch, st.span)

    def finetune_block(self, st: A.FinetuneBlock) -> FinetuneTask:
        entry, prop, name = self.repair_head(st)
        task = FinetuneTask(name, entry, prop, st.span)
        seen: set[str] = set()
        for item in st.items:
            if isinstance(item, A.Tag):  # for `run --select`; nothing to check
                continue
            key = item.name if isinstance(item, (A.FinetuneOption, A.Limit)) else type(item).__name__.lower()
            if key in seen:
                self.fail("PL240", f"`{key}` given twice in one block", item.span)
            seen.add(key)
            if isinstance(item, A.FinetuneOption) and item.name == "data":
                task.data = self.points_expr(item.value)
            elif isinstance(item, A.FinetuneOption):
                integer = item.name in ("epochs", "samples")
                if item.value <= 0 or (integer and int(item.value) != item.value):
                    self.fail("PL241", f"`{item.name}` must be a positive {'integer' if integer else 'number'}",
                              item.span)
                setattr(task, item.name, type(getattr(task, item.name))(item.value))
            elif isinstance(item, A.Margin):
                if item.value < 0:
                    self.fail("PL241", "the margin must be non-negative", item.span)
                task.margin = float(item.value)
            elif isinstance(item, A.Save):
                task.save = str((self.base / item.path).resolve())
                if task.save in {e.path for e in self.models.values()}:
                    self.fail("PL242", "refusing to overwrite an input model", item.span,
                              "save the repaired network under a new name")
                if not task.save.endswith((".onnx", ".nnet")):
                    self.fail("PL242", "save path must end in .onnx (or .nnet)", item.span)
            elif isinstance(item, A.Limit):
                if item.name not in ("iterations", "time", "counterexamples", "verify"):
                    self.fail("PL243", f"unknown limit `{item.name}`", item.span,
                              "limits: iterations, time (seconds), counterexamples (per iteration), verify "
                              "(seconds per verification)")
                task.limits[item.name] = float(item.value)
        return task

    # ------------------------------------------------------------------ assertions
    def assertion(self, st: Any) -> None:
        task_names = {t.name for t in self.tasks}
        subject = st.task if hasattr(st, "task") else st.subject
        if subject not in task_names and not (isinstance(st, A.AssertAccuracy) and subject in self.models):
            self.fail("PL202", f"unknown patch `{subject}`", st.span,
                      _suggest(subject, list(task_names | (set(self.models) if isinstance(st, A.AssertAccuracy)
                                                          else set()))))
        pts = None
        if isinstance(st, A.AssertAccuracy):
            pts = self.points_expr(st.points)
            if pts.y is None:
                self.fail("PL215", "accuracy() needs labelled points", st.points.span)
        text = self.spec.source.splitlines()[st.span.line - 1].strip() if st.span.line else "assert"
        self.assertions.append(Assertion(st, pts, text, st.span))


@dataclasses.dataclass
class _Block:
    """What the statements of one patch or repair block have said so far."""

    name: str
    kind: str  # patch | repair
    net: Network
    edits: list[EditSpec] = dataclasses.field(default_factory=list)
    goals: list[GoalSpec] = dataclasses.field(default_factory=list)
    empty_goals: list[GoalSpec] = dataclasses.field(default_factory=list)
    norms: NormSpec = dataclasses.field(default_factory=lambda: NormSpec(objective=[]))
    margin: float = DEFAULT_MARGIN
    save: str | None = None
    backend: BackendChoice = dataclasses.field(default_factory=lambda: BackendChoice("auto"))
    round_bits: int | None = None
    limits: dict[str, float] = dataclasses.field(default_factory=dict)
    seen: dict[str, Span] = dataclasses.field(default_factory=dict)
    suspicious: list[A.EditSuspicious] = dataclasses.field(default_factory=list)  # `edit top N suspicious ...`
    localized: list[Any] = dataclasses.field(default_factory=list)  # their Localizations, in order


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _is_count(v: Any) -> bool:
    return _is_number(v) and float(v) == int(v)


# Options every backend understands: (valid?, what a valid value is); others go to the backend unchecked.
_OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "time_limit": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "mip_gap": (lambda v: _is_number(v) and 0 <= v <= 1, "a number between 0 and 1"),
    "threads": (lambda v: _is_count(v) and 1 <= v <= 1024, "a whole number of threads, at least 1"),
    "seed": (lambda v: _is_count(v) and 0 <= v < 2**31, "a whole number between 0 and 2^31-1"),
}
_OPTION_EXAMPLES = {"time_limit": "30", "mip_gap": "0.01", "threads": "1", "seed": "7"}
_LIMIT_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "iterations": (lambda v: _is_count(v) and v >= 0, "a whole number, at least 0"),
    "counterexamples": (lambda v: _is_count(v) and v >= 1, "a whole number, at least 1"),
    "time": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "verify": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "samples": (lambda v: _is_count(v) and v >= 0, "a whole number, at least 0"),
}


def _repair_is_disjunctive(prop: PropertySpec, n_out: int) -> bool:
    """Whether the property, required at a point, is a disjunction: an unsafe conjunction of several atoms
    (VNN-LIB), or an `ensure` clause with several alternatives (``or``, ``is not``)."""
    if prop.unsafe_dnf is not None:
        return any(len(conj) > 1 for dnf in prop.unsafe_dnf for conj in dnf)
    for cnf in prop.ensures:
        for clause in cnf.clauses:
            alts = sum(n_out - 1 if getattr(atom, "negated", False) else 1 for atom in clause)
            if alts > 1:
                return True
    return False


def _compares_outputs(atom: A.AtomCompare) -> bool:
    """``y[i] op y[j]`` (after moving every term to one side): an order between two outputs, which a monotone
    softmax tail never changes; anything with a constant or other weights constrains values."""
    coef: dict[int, float] = {}
    for i, c in atom.lhs.terms:
        coef[i] = coef.get(i, 0.0) + c
    for i, c in atom.rhs.terms:
        coef[i] = coef.get(i, 0.0) - c
    vals = sorted(v for v in coef.values() if v != 0)
    return atom.lhs.const == atom.rhs.const and len(vals) == 2 and vals[0] == -vals[1]


def check(spec: A.SpecFile, base_dir: Path | None = None) -> Program:
    return Checker(spec, base_dir).run()
