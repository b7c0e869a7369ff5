"""Parser and AST: every statement kind, the corners of the syntax, and syntax errors with positions."""

from __future__ import annotations

import pytest

from patchlang.errors import SpecError
from patchlang.lang import ast as A
from patchlang.lang.parser import parse_text


def one(source: str):
    """The single statement of ``source``."""
    statements = parse_text(source, "t.patch").statements
    assert len(statements) == 1, statements
    return statements[0]


def points(expr_text: str) -> A.PointsExpr:
    return one(f"points p = {expr_text}").expr


def patch_items(body: str) -> tuple:
    block = one(f"patch t on net {{\n{body}\n}}")
    assert isinstance(block, A.PatchBlock)
    return block.items


def syntax_error(source: str):
    with pytest.raises(SpecError) as info:
        parse_text(source, "bad.patch")
    (diag,) = info.value.diagnostics
    assert diag.code == "PL100"
    return diag


# ---------------------------------------------------------------------------------------------- models


def test_model_declarations() -> None:
    m = one('model net = "m.onnx"')
    assert (m.name, m.path, m.format, m.decision) == ("net", "m.onnx", None, "argmax")
    m = one('model acas = nnet "a.nnet" decide argmin')
    assert (m.format, m.decision) == ("nnet", "argmin")
    assert m.span.line == 1 and m.span.column == 1


def test_comments_and_newlines_carry_no_meaning() -> None:
    spec = parse_text('# header\nmodel   net =\n   "m.onnx"   # trailing\n\n', "t.patch")
    assert [type(s) for s in spec.statements] == [A.ModelDecl]
    assert spec.statements[0].span.line == 2


# ---------------------------------------------------------------------------------------------- points


def test_point_file_with_options_and_fraction() -> None:
    e = points('"d.csv" with labels = "l.txt", x = "images", scale = 1/255')
    assert isinstance(e, A.PointsFile) and e.path == "d.csv"
    opts = {k: v for k, v, _ in e.options}
    assert opts == {"labels": "l.txt", "x": "images", "scale": pytest.approx(1 / 255)}


def test_inline_points_with_labels() -> None:
    e = points("[[1, 2.5], [-3, 4e-1],] labels [0, 1]")
    assert isinstance(e, A.PointsInline)
    assert e.rows == ((1.0, 2.5), (-3.0, 0.4)) and e.labels == (0, 1)
    assert points("[[3, 4]]").labels is None


@pytest.mark.parametrize("text,items", [
    ("a[3]", (3,)),
    ("a[-1]", (-1,)),
    ("a[::2]", (A.SliceSpec(None, None, 2),)),
    ("a[-3:]", (A.SliceSpec(-3, None, None),)),
    ("a[:10]", (A.SliceSpec(None, 10, None),)),
    ("a[1:9:3]", (A.SliceSpec(1, 9, 3),)),
    ("a[0, 5:7, -1]", (0, A.SliceSpec(5, 7, None), -1)),
])
def test_indexing_and_slices(text: str, items: tuple) -> None:
    e = points(text)
    assert isinstance(e, A.PointsIndexed) and isinstance(e.base, A.PointsRef)
    assert e.items == items


def test_repeated_indexing_nests() -> None:
    e = points("a[0:10][::2]")
    assert isinstance(e, A.PointsIndexed) and e.items == (A.SliceSpec(None, None, 2),)
    assert isinstance(e.base, A.PointsIndexed) and e.base.items == (A.SliceSpec(0, 10, None),)


def test_where_conditions() -> None:
    e = points("a where label == 3 and label in {1, 2} and correct(net) and misclassified(other)")
    assert isinstance(e, A.PointsWhere)
    c1, c2, c3, c4 = e.conditions
    assert (c1.op, c1.value) == ("==", 3)
    assert c2.values == (1, 2)
    assert (c3.model, c3.negated) == ("net", False)
    assert (c4.model, c4.negated) == ("other", True)
    for op in ("<=", ">=", "!=", "<", ">"):
        assert points(f"a where label {op} 4").conditions[0].op == op


def test_union_and_where_binds_to_its_term() -> None:
    e = points("a + b[0:2] where label == 1 + c")
    assert isinstance(e, A.PointsUnion) and len(e.parts) == 3
    assert isinstance(e.parts[0], A.PointsRef)
    assert isinstance(e.parts[1], A.PointsWhere) and isinstance(e.parts[1].base, A.PointsIndexed)
    grouped = points("(a + b) where label == 1")
    assert isinstance(grouped, A.PointsWhere) and isinstance(grouped.base, A.PointsUnion)


# ---------------------------------------------------------------------------------------------- patch blocks


def test_edit_statements() -> None:
    items = patch_items('edit layer -1 weights\nedit layer "fc2" weights and biases rows [0:3, 7]\n'
                        "edit layers 0, 1 biases\nedit all biases")
    e1, e2, e3, e4, e5 = items
    assert (e1.layer, e1.params, e1.rows) == (-1, frozenset({"weights"}), None)
    assert (e2.layer, e2.params, e2.rows) == ("fc2", frozenset({"weights", "biases"}),
                                             (A.SliceSpec(0, 3, None), 7))
    assert (e3.layer, e3.params) == (0, frozenset({"biases"})) and (e4.layer, e4.params) == (1, frozenset({"biases"}))
    assert isinstance(e5, A.EditAllBiases)


def test_keep_and_change_statements() -> None:
    k1, k2, c1, c2, c3, c4, c5 = patch_items(
        "keep good\nkeep good outputs within 0.25\nchange wm[3] to 7\nchange wm to one of {1, 2}\n"
        "change wm to runner-up\nchange wrong to label\nchange wm away from label")
    assert (k1.within, k2.within) == (None, 0.25)
    assert [(c.kind, c.labels) for c in (c1, c2, c3, c4, c5)] == [
        ("to", (7,)), ("one_of", (1, 2)), ("runner_up", ()), ("to_own", ()), ("away", ())]
    assert isinstance(c1.points, A.PointsIndexed)


def test_require_cnf() -> None:
    (req,) = patch_items("require p: y[0] - 2*y[1] + 3 >= y[2] or y[1] is not min and label stays "
                         "and label is not 4 and (y[3] < 0.5)")
    assert isinstance(req, A.Require) and isinstance(req.points, A.PointsRef)
    c1, c2, c3, c4 = req.cnf.clauses
    cmp_atom, extreme = c1
    assert cmp_atom.lhs == A.LinExpr(((0, 1.0), (1, -2.0)), 3.0) and cmp_atom.op == ">="
    assert cmp_atom.rhs == A.LinExpr(((2, 1.0),), 0.0)
    assert (extreme.index, extreme.negated, extreme.which) == (1, True, "min")
    assert isinstance(c2[0], A.AtomLabelStays)
    assert (c3[0].label, c3[0].negated) == (4, True)
    assert c4[0].op == "<" and c4[0].rhs.const == 0.5


def test_linear_expression_merges_repeated_outputs() -> None:
    (req,) = patch_items("require p: 2 y[0] + y[0] - y[1] <= 1 - 4")
    atom = req.cnf.clauses[0][0]
    assert atom.lhs.terms == ((0, 3.0), (1, -1.0)) and atom.rhs.const == -3.0


def test_norms_and_options() -> None:
    m, b, mg, s, u, r, lim = patch_items(
        'minimize 2*linf + l1 + 0.5 l0\nbound linf <= 0.5\nmargin 1e-4\nsave "out/x.onnx"\n'
        'using highs (time_limit = 10, method = "ipm")\nround significand 8\nlimit iterations 20')
    assert m.terms == ((2.0, "linf"), (1.0, "l1"), (0.5, "l0"))
    assert (b.norm, b.value) == ("linf", 0.5)
    assert mg.value == pytest.approx(1e-4)
    assert s.path == "out/x.onnx"
    assert u.backend == "highs" and [(k, v) for k, v, _ in u.options] == [("time_limit", 10.0), ("method", "ipm")]
    assert r.bits == 8
    assert (lim.name, lim.value) == ("iterations", 20.0)


def test_patch_block_spans() -> None:
    block = one("patch fix on toy {\n    edit layer -1 weights\n}")
    assert (block.name, block.model) == ("fix", "toy")
    assert (block.model_span.line, block.model_span.column) == (1, 14)
    assert (block.items[0].span.line, block.items[0].span.column) == (2, 5)


# ---------------------------------------------------------------------------------------------- properties


def test_properties() -> None:
    v = one('property p1 = vnnlib "props/p.vnnlib"')
    assert isinstance(v, A.PropertyVnnlib) and v.path == "props/p.vnnlib"
    blk = one("property robust {\n input within linf 0.03 of wm[0:3]\n input box lo [0, -1] hi 1\n"
              " ensure label stays\n ensure y[0] is not min or y[1] > 2\n}")
    assert isinstance(blk, A.PropertyBlock)
    ball, box = blk.inputs
    assert (ball.norm, ball.eps) == ("linf", 0.03) and isinstance(ball.points, A.PointsIndexed)
    assert (box.lo, box.hi) == ((0.0, -1.0), 1.0)
    assert len(blk.ensures) == 2 and len(blk.ensures[1].clauses[0]) == 2


def test_verify_and_repair() -> None:
    v = one('verify net satisfies p timeout 60 using z3 (seed = 1) save "cex.npy"')
    assert (v.model, v.prop, v.timeout, v.save) == ("net", "p", 60.0, "cex.npy")
    assert v.using.backend == "z3"
    assert one("verify net satisfies p").timeout is None
    r = one("repair net for p as fixed {\n edit layer -1 weights\n minimize l1\n keep good\n limit iterations 5\n}")
    assert (r.model, r.prop, r.result_name) == ("net", "p", "fixed")
    assert [type(i) for i in r.items] == [A.EditLayer, A.Minimize, A.Keep, A.Limit]
    assert one("repair net for p { edit all biases }").result_name is None


# ---------------------------------------------------------------------------------------------- assertions


def test_assertions() -> None:
    assert one("assert exists(fix)") == A.AssertExists(one("assert exists(fix)").span, "fix", False)
    assert one("assert not exists(fix)").negated is True
    d = one("assert distance(fix, l1) < 2.5")
    assert (d.task, d.norm, d.op, d.value) == ("fix", "l1", "<", 2.5)
    a = one("assert accuracy(fix, test[0:100] where label == 3) >= 0.9")
    assert a.subject == "fix" and isinstance(a.points, A.PointsWhere) and (a.op, a.value) == (">=", 0.9)


# ---------------------------------------------------------------------------------------------- errors


def test_syntax_error_position_and_hint() -> None:
    diag = syntax_error("model net = \"m.onnx\"\npatch p on net {\n    edit layer -1 weigths\n}")
    assert (diag.span.file, diag.span.line, diag.span.column) == ("bad.patch", 3, 19)
    assert "weigths" in diag.message
    assert "weights or biases" in diag.help  # what can really follow, not the whole lookahead set


def test_syntax_error_unclosed_block() -> None:
    diag = syntax_error("patch p on net {\n    edit layer 0 weights\n")
    assert "end of file" in diag.message and "unclosed" in diag.help


@pytest.mark.parametrize("source,needle", [
    ("assert distance(p, l2) <= 1", "linf, l1 or l0"),
    ('model net = "m.onnx" decide argmid', "argmax or argmin"),
    ("points p = a[1.5]", None),
    ("patch p on net { change q to label 3 }", None),
    ("points p = @", None),
])
def test_syntax_errors(source: str, needle: str | None) -> None:
    diag = syntax_error(source)
    assert diag.span.line == 1 and diag.span.column > 1
    if needle:
        assert needle in diag.help
    assert "docs/language.md" in diag.help


def test_division_by_zero_in_a_number() -> None:
    with pytest.raises(SpecError) as info:
        parse_text('points p = "d.npy" with scale = 1/0', "t.patch")
    (diag,) = info.value.diagnostics
    assert diag.code == "PL101" and diag.span.line == 1


def test_missing_spec_file(tmp_path) -> None:
    from patchlang.lang.parser import parse_file

    with pytest.raises(SpecError) as info:
        parse_file(tmp_path / "nope.patch")
    assert info.value.diagnostics[0].code == "PL001"
