"""Checking NNrepair's constructs: `edit top N suspicious weights ...` and `repair MODEL by experts { ... }`.

Both are new ways of saying `edit`, `keep` and `change`: localization becomes an ordinary :class:`EditSpec` with
an explicit mask (the chosen edges), and each expert an ordinary :class:`PatchTask` (its failing inputs get their
labels or take their class's activation pattern, the passing ones keep theirs), solved by the one patch pipeline.
A mixin of :class:`patchlang.lang.check.Checker` (it uses its helpers: ``fail``, ``points_expr``, blocks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import Diagnostic, PatchlangError
from ..inputs import points as P
from ..model.edits import EditSpec, NormSpec
from ..model.ir import Network
from ..model.localize import LocalizationError, localize
from ..model.patterns import mine_patterns, pre_activations
from . import ast as A
from .program import COMBINATIONS, ORACLES, Expert, ExpertsTask, GoalSpec, PatchTask


class ExpertsChecker:
    """The NNrepair part of the checker."""

    # ------------------------------------------------------------------ localization
    def edit_suspicious(self, b: Any, item: A.EditSuspicious) -> EditSpec:
        """`edit top N suspicious weights of layer L [for F [against P]]` in a patch block: F (labelled) or the
        block's `change ... to N` / `to label` points are failing, P or the block's `keep` points passing."""
        if item.failing is not None:
            fail = self.points_expr(item.failing)
            if fail.y is None:
                self.fail("PL320", "the failing inputs of `edit top ... suspicious` need labels", item.failing.span,
                          "give the points labels (the class each must get)")
            fail_x, fail_t = fail.x, fail.y
        else:
            xs, ts = [], []
            for g in b.goals:
                if g.group != "change":
                    continue
                if g.kind == "to":
                    t = np.full(len(g.points), g.labels[0])
                elif g.kind == "to_own":
                    t = g.points.y
                else:
                    self.fail("PL321", f"`{g.text}` does not say which label its points must get, so it cannot "
                                       "tell which output neurons are suspicious", item.span,
                              "write `edit top N suspicious weights of layer L for POINTS` with labelled points")
                xs.append(g.points.x)
                ts.append(np.asarray(t))
            if not xs:
                self.fail("PL321", "`edit top ... suspicious` needs failing inputs: the block has no `change ... to` "
                                   "statement", item.span, "add `change wrong to label`, or say `for POINTS`")
            fail_x, fail_t = np.concatenate(xs), np.concatenate(ts)
        if item.passing is not None:
            passing = self.points_expr(item.passing)
        else:
            keeps = [g.points for g in b.goals if g.group == "keep" and len(g.points)]
            passing = keeps[0] if keeps else None
            for k in keeps[1:]:
                passing = passing.union(k)
        spec, loc = self.localized_edit(b.net, item, fail_x, fail_t, passing)
        b.localized.append(loc)
        return spec

    def localized_edit(self, net: Network, item: A.EditSuspicious, fail_x: np.ndarray, fail_t: np.ndarray,
                       passing: P.PointSet | None, patterns: dict | None = None) -> tuple[EditSpec, Any]:
        """The EditSpec (explicit edges) and the Localization of one `edit top ...` for these inputs."""
        k = self.suspicious_layer(net, item)
        if item.count <= 0 or (item.percent and item.count > 100):
            self.fail("PL322", f"`top {item.count:g}{'%' if item.percent else ''}` must be a positive count or a "
                               "percentage in (0, 100]", item.span, "e.g. `edit top 10 suspicious weights of layer -1`"
                                                                    " or `top 2%`")
        if not item.percent and item.count != int(item.count):
            self.fail("PL322", f"`top {item.count:g}` must be a whole number of weights", item.span,
                      "write a count, or a percentage with `%`")
        pass_x = passing.x if passing is not None else np.zeros((0, net.input_size))
        pass_y = passing.y if passing is not None else None
        try:
            loc = localize(net, k, item.count, item.percent, fail_x, fail_t, pass_x, pass_y, patterns)
        except LocalizationError as exc:
            self.fail("PL320", f"fault localization: {exc}", item.span,
                      "check the failing inputs (misclassified, labelled) and the layer")
        except PatchlangError as exc:  # scikit-learn missing for an inner layer's patterns
            self.fail("PL330", exc.message, item.span, exc.help)
        layer = net.affine(k)
        self.refuse_shared(net, layer, "weights", item.span)
        return EditSpec(k, "weights", loc.mask, item.span, f"{layer.name}.weight"), loc

    def suspicious_layer(self, net: Network, item: A.EditSuspicious) -> int:
        k = net.find_affine(item.layer)
        if k is None:
            self.fail("PL220", f"model `{net.name}` has no editable layer {item.layer!r}", item.span,
                      "editable affine layers (index: name): "
                      + ", ".join(f"{i}: {n}" for i, n in enumerate(net.layer_names())))
        return k

    # ------------------------------------------------------------------ experts
    def experts_block(self, st: A.ExpertsBlock) -> ExpertsTask:
        entry = self.model_ref(st.model, st.span)
        net = entry.net
        name = st.result_name or f"experts_{st.model}"
        if st.result_name:
            self.declare(st.result_name, "repair", st.span)
        if net.prefix is not None or net.decision != "argmax":
            self.fail("PL329", f"the experts of model `{net.name}` cannot be combined into one file: "
                               + ("its first operations are not dense layers (an opaque prefix)" if net.prefix
                                  else "it decides by argmin"), st.span,
                      "experts combine argmax classifiers made of dense (Gemm/MatMul, ReLU) layers")
        opts: dict[str, A.ExpertOption] = {}
        b = self.new_block(name, "repair", net)
        saves = []
        for item in st.items:
            if isinstance(item, A.ExpertOption):
                if item.name in opts:
                    self.fail("PL240", f"`{item.name}` is given twice in this block (first at line "
                                       f"{opts[item.name].span.line})", item.span, "keep one")
                opts[item.name] = item
            elif isinstance(item, A.Save):
                saves.append(item)
            elif isinstance(item, A.EditSuspicious) and item.failing is not None:
                self.fail("PL327", "in an experts block, `failing` and `passing` say which inputs localize the fault",
                          item.span, "drop the `for ...` part: each expert uses its class's failing inputs")
            else:
                self.guarded(lambda item=item: self.block_item(b, item))
        for key in ("failing", "passing"):
            if key not in opts:
                self.fail("PL323", f"experts block `{name}` has no `{key}` statement", st.span,
                          f"add `{key} POINTS` (the inputs the model gets {'wrong' if key == 'failing' else 'right'})")
        failing = self.points_expr(opts["failing"].value)
        passing = self.points_expr(opts["passing"].value)
        for key, ps in (("failing", failing), ("passing", passing)):
            self.check_shape(ps, net, opts[key].value.span)
        if failing.y is None:
            self.fail("PL215", "`failing` needs labelled points (each expert makes its class's inputs get it)",
                      opts["failing"].value.span, 'give the points labels, e.g. arrays x and y in an npz')
        combos = list(opts["combine"].value) if "combine" in opts else list(COMBINATIONS)
        for c in combos:
            if c not in COMBINATIONS:
                self.fail("PL324", f"unknown combination `{c}`", opts["combine"].span,
                          "combinations: " + ", ".join(COMBINATIONS))
        f1_points = None
        if "filter" in opts:
            f1_points = self.points_expr(opts["filter"].value)
            self.check_shape(f1_points, net, opts["filter"].value.span)
            if f1_points.y is None or not len(f1_points):
                self.fail("PL215", "the F1 filter needs labelled points", opts["filter"].value.span)
        layer = self.experts_layer(net, b, st)
        last = layer == len(net.affine_indices()) - 1
        oracle = opts["oracle"].value if "oracle" in opts else ("labels" if last else "patterns")
        if oracle not in ORACLES:
            self.fail("PL325", f"unknown oracle `{oracle}`", opts["oracle"].span, "oracles: labels, patterns")
        if oracle == "patterns" and last:
            self.fail("PL325", "activation patterns are an oracle for an inner layer; the last layer's outputs are "
                               "the labels", opts["oracle"].span, "write `oracle labels`, or edit an inner layer")
        classes = np.unique(failing.y).astype(int)
        if "classes" in opts:
            wanted = set(opts["classes"].value)
            bad = [c for c in wanted if not 0 <= c < net.output_size]
            if bad:
                self.fail("PL222", f"class {bad[0]} is not an output of model `{net.name}`", opts["classes"].span,
                          f"classes are 0..{net.output_size - 1}")
            classes = np.array([c for c in classes if c in wanted], dtype=int)
        if classes.size == 0:
            self.fail("PL326", f"experts block `{name}`: no failing input of the chosen classes", st.span,
                      "check `failing` (inputs the model gets wrong) and `classes`")
        save = self.experts_saves(name, saves, combos, f1_points is not None)
        pass_y = passing.y if passing.y is not None else (net.labels(passing.x) if len(passing) else None)
        patterns = {}
        if oracle == "patterns" and len(passing):
            patterns = self.patterns_of(net, layer, passing.x, pass_y, st)
        experts = []
        for c in classes:
            e = self.guarded(lambda c=c: self.expert(name, entry, b, int(c), failing, passing, oracle, layer,
                                                     patterns, st))
            if e is not None:
                experts.append(e)
        if not experts:
            self.fail("PL326", f"experts block `{name}`: no class gets an expert", st.span,
                      "see the PL328 warnings: give failing inputs that depart from their class's pattern, or more "
                      "passing inputs to mine patterns from")
        cls = "LP" if all(e.patch.problem_class == "LP" for e in experts) else "MILP"
        reason = (f"{len(experts)} expert(s), one per class, each "
                  + (experts[0].patch.class_reason if experts else "")
                  + f"; combined ({', '.join(combos)})")
        return ExpertsTask(name, entry, st.span, experts, failing, passing, combos, oracle, layer, f1_points, save,
                           cls, reason, patterns=patterns)

    def patterns_of(self, net: Network, layer: int, x: np.ndarray, y: np.ndarray, st: A.ExpertsBlock) -> dict:
        """Each class's activation pattern at ``layer`` (PL330 when scikit-learn is missing)."""
        try:
            return mine_patterns(net, layer, x, y)
        except PatchlangError as exc:
            self.fail("PL330", exc.message, st.span, exc.help)

    def experts_layer(self, net: Network, b: Any, st: A.ExpertsBlock) -> int:
        """The one affine layer every `edit` of the block names."""
        layers = {e.layer for e in b.edits} | {self.suspicious_layer(net, s) for s in b.suspicious}
        if not layers:
            self.fail("PL231", f"experts block `{b.name}` says nothing may move", st.span,
                      "add e.g. `edit top 10 suspicious weights of layer -1`")
        if len(layers) > 1:
            self.fail("PL325", "the experts of one block edit one layer", st.span,
                      "name one layer in every `edit` statement of the block")
        return layers.pop()

    def experts_saves(self, name: str, saves: list[A.Save], combos: list[str], filtered: bool) -> str | None:
        """`save "out/fixed.onnx"` writes out/fixed_naive.onnx, ... (and _f1 variants): every path claimed now."""
        if not saves:
            return None
        if len(saves) > 1:
            self.fail("PL240", f"`save` is given twice in this block (first at line {saves[0].span.line})",
                      saves[1].span, "keep one")
        item = saves[0]
        base = self.output(item.path, item.span, f"the experts of `{name}` (line {item.span.line})", (".onnx",))
        stem = base[: -len(".onnx")]
        self.outputs.pop()  # the base path itself is not written; each combination's file is
        for c in combos:
            for suffix in (("", "_f1") if filtered else ("",)):
                self.outputs.append((f"{stem}_{c}{suffix}.onnx", item.span, f"the {c}{suffix} combination of "
                                                                            f"`{name}`"))
        return base

    def expert(self, name: str, entry: Any, b: Any, c: int, failing: P.PointSet, passing: P.PointSet, oracle: str,
               layer: int, patterns: dict, st: A.ExpertsBlock) -> Expert | None:
        """The patch task of class ``c``."""
        net = entry.net
        fail_c = P.filter_label(failing, "==", c)
        if oracle == "patterns":
            pattern = patterns.get(c)
            why = ("has no activation pattern (no passing input of the class)" if pattern is None else
                   "has failing inputs that all take its activation pattern already (the oracle asks nothing)"
                   if np.all(pattern.follows(pre_activations(net, layer, fail_c.x))) else None)
            if why is not None:
                self.warnings.append(Diagnostic("PL328", f"class {c} {why}: no expert for it", st.span,
                                                severity="warning"))
                return None
        edits = list(b.edits)
        locs = []

        def k_of(item: A.EditSuspicious) -> int:
            return self.suspicious_layer(net, item)

        for item in b.suspicious:
            spec, loc = self.localized_edit(net, item, fail_c.x, fail_c.y, passing if len(passing) else None,
                                            patterns if k_of(item) == layer and patterns else None)
            edits.append(spec)
            locs.append(loc)
        rows = sorted({int(r) for e in edits for r in (np.nonzero(e.mask)[0] if e.mask.ndim else [])})
        if oracle == "labels":
            goals = [GoalSpec("to_own", fail_c, st.span, f"change failing[label == {c}] to label")]
            if len(passing):
                goals.append(GoalSpec("keep", passing, st.span, "keep passing"))
        else:
            goals = [GoalSpec("pattern", fail_c, st.span, f"failing[label == {c}] take the pattern of class {c}",
                              layer=layer, pattern=pattern)]
            if len(passing):
                goals.append(GoalSpec("keep_pattern", passing, st.span, "passing keep their class's pattern",
                                      layer=layer, pattern=patterns, neurons=tuple(rows)))
        norms = NormSpec(list(b.norms.objective) or [(1.0, "linf")], dict(b.norms.bounds), dict(b.norms.bound_spans))
        if oracle == "patterns":
            cls, reason = "LP", (f"only layer {net.affine(layer).name} moves and the goals are signs of its "
                                 "pre-activations (the activation-pattern oracle)")
        else:
            cls, reason = self.classify(net, edits, goals, norms, b.backend, st.span)
        task = PatchTask(f"{name}[{c}]", entry, edits, goals, norms, b.margin, None, b.backend, st.span, cls, reason,
                         b.round_bits, dict(b.limits), "expert", margin_explicit="margin" in b.seen, localized=locs)
        return Expert(c, task, len(fail_c))
