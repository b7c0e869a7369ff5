"""Text -> AST.  The grammar lives in ``grammar/patchlang.lark`` (shipped in the wheel as package data)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import lark
from lark import Token, Transformer, v_args

from ..errors import Diagnostic, Span, SpecError
from . import ast as A


def grammar_path() -> Path:
    """The grammar inside the installed package, or at the repository top level in a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "grammar" / "patchlang.lark", here.parent / "grammar" / "patchlang.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("patchlang.lark not found: the installation is incomplete (reinstall patchlang)")


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                     maybe_placeholders=False)


def parse_text(source: str, filename: str = "<string>") -> A.SpecFile:
    """Parse a spec; syntax errors become a :class:`SpecError` with a position and a hint."""
    deep = _too_deep(source, filename)
    if deep is not None:
        raise SpecError(items=[deep])
    try:
        tree = _parser().parse(source)
    except lark.exceptions.UnexpectedInput as exc:
        raise SpecError(items=[_syntax_diagnostic(exc, source, filename)]) from None
    try:
        statements = _ToAst(filename).transform(tree)
    except lark.exceptions.VisitError as exc:  # lark wraps what the transformer raises (e.g. PL101)
        if isinstance(exc.orig_exc, SpecError):
            raise exc.orig_exc from None
        if isinstance(exc.orig_exc, RecursionError):
            raise SpecError(items=[Diagnostic("PL102", "the spec nests too deeply", None,
                                              f"use at most {MAX_NESTING} levels of brackets")]) from None
        raise
    except RecursionError:
        raise SpecError(items=[Diagnostic("PL102", "the spec nests too deeply", None,
                                          f"use at most {MAX_NESTING} levels of brackets")]) from None
    return A.SpecFile(path=filename, source=source, statements=tuple(statements.children))


MAX_NESTING = 100


def _too_deep(source: str, filename: str) -> Diagnostic | None:
    """A PL102 at the first bracket nested more than MAX_NESTING deep (outside strings and comments), or None.

    Deeper nesting would exhaust Python's recursion in the tree transformer; no real spec comes near it.
    """
    depth, line, col, in_string, in_comment, escaped = 0, 1, 0, False, False, False
    for ch in source:
        col += 1
        if ch == "\n":
            line, col, in_comment, in_string = line + 1, 0, False, False
            continue
        if in_comment:
            continue
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                return Diagnostic("PL102", f"brackets nested more than {MAX_NESTING} deep",
                                  Span(filename, line, col, line, col + 1),
                                  "write the expression with fewer nested brackets")
        elif ch in ")]}":
            depth = max(0, depth - 1)
    return None


def parse_file(path: str | Path) -> A.SpecFile:
    from ..guard import InputRefused, read_input

    p = Path(path)
    try:
        # utf-8-sig: a byte-order mark (as some Windows editors write) is not part of the text
        source = read_input(p, "spec file").decode("utf-8-sig")
    except InputRefused as exc:
        raise SpecError(items=[Diagnostic("PL001", exc.message, None,
                                          exc.help + "; specs are usually named *.patch")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(items=[Diagnostic("PL001", f"cannot read spec file {p}: not UTF-8 text ({exc.reason} "
                                                   f"at byte {exc.start})", None,
                                          "save the spec as UTF-8 text")]) from None
    return parse_text(source, str(p))


_TOKEN_NAMES = {
    "NAME": "a name", "STRING": 'a quoted string like "file.onnx"', "SIGNED_INT_T": "an integer",
    "SIGNED_NUMBER_T": "a number", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'",
    "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='", "COMMA": "','", "COLON": "':'", "CMP": "a comparison",
    "NORM": "linf, l1 or l0", "PARAM": "weights or biases", "$END": "end of file",
    "DECISION": "argmax or argmin", "FORMAT": "onnx or nnet", "EXTREME": "min or max", "INT": "an index",
}


def _syntax_diagnostic(exc: lark.exceptions.UnexpectedInput, source: str, filename: str) -> Diagnostic:
    line = getattr(exc, "line", 0) or 0
    column = getattr(exc, "column", 0) or 0
    expected: set[str] = set()
    if isinstance(exc, (lark.exceptions.UnexpectedToken,)):
        # `accepts` follows the pending reductions, so it names what can really come next (e.g. only
        # weights/biases after `edit layer -1`); `expected` is the raw LALR state's much larger lookahead set.
        expected = set(getattr(exc, "accepts", None) or exc.expected)
        tok = exc.token
        got = "end of file" if tok.type == "$END" else repr(str(tok))
        message = f"syntax error: unexpected {got}"
    elif isinstance(exc, lark.exceptions.UnexpectedCharacters):
        expected = set(exc.allowed or ())
        message = f"syntax error: unexpected character {source[exc.pos_in_stream]!r}"
    else:
        message = "syntax error: unexpected end of file"
    words = sorted({_TOKEN_NAMES.get(e, e.strip('"').lower()) for e in expected})
    hint = ("expected " + ", ".join(words[:8]) + (" ..." if len(words) > 8 else "")) if words else None
    if hint is not None and "end of file" in message:
        hint += " (an unclosed '{' or '[' earlier?)"
    return Diagnostic("PL100", message, Span(filename, line, column, line, column + 1),
                      (hint + "; see docs/language.md") if hint else "see docs/language.md")


def _unquote(tok: Token | str) -> str:
    s = str(tok)[1:-1]
    return s.encode("utf-8").decode("unicode_escape") if "\\" in s else s


@v_args(meta=True)
class _ToAst(Transformer):
    """Lark tree -> AST nodes; each node gets the span of its rule."""

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.filename, 0, 0)
        return Span(self.filename, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, tok: Token) -> Span:
        return Span(self.filename, tok.line or 0, tok.column or 0, tok.end_line or 0, tok.end_column or 0)

    # ------------------------------------------------------------------ literals
    def int(self, meta, ch):  # noqa: A003 - grammar rule name
        text = str(ch[0])
        if len(text.lstrip("+-")) > 18:  # larger than any index, label, layer or count could be
            raise SpecError(items=[Diagnostic("PL101", f"integer out of range: {text}", self._span(meta),
                                              "integers (indices, labels, layers, counts) have at most 18 digits")])
        return int(text)

    def number(self, meta, ch):
        value = float(str(ch[0]))
        if len(ch) == 2:
            denominator = float(str(ch[1]))
            if denominator == 0:
                raise SpecError(items=[Diagnostic("PL101", "division by zero in a number", self._span(meta))])
            value /= denominator
        if not math.isfinite(value):
            raise SpecError(items=[Diagnostic("PL101", f"number out of range: {''.join(str(c) for c in ch)}",
                                              self._span(meta), "numbers must be finite (at most about 1.8e308)")])
        return value

    def vector(self, meta, ch):
        return tuple(ch)

    def matrix(self, meta, ch):
        return tuple(ch)

    def int_set(self, meta, ch):
        return tuple(ch)

    def index(self, meta, ch):
        return tuple(ch)

    def index_single(self, meta, ch):
        return ch[0]

    def index_slice(self, meta, ch):
        parts: list[int | None] = [None, None, None]
        slot = 0
        for c in ch:
            if isinstance(c, Token) and c.type == "SLICE_COLON":
                slot += 1
            else:
                parts[slot] = c
        return A.SliceSpec(parts[0], parts[1], parts[2])

    def load_option(self, meta, ch):
        key = str(ch[0])
        value = _unquote(ch[1]) if isinstance(ch[1], Token) else ch[1]
        return (key, value, self._span(meta))

    def load_options(self, meta, ch):
        return tuple(ch)

    solver_options = load_options

    def inline_labels(self, meta, ch):
        return tuple(int(v) for v in ch[0])

    # ------------------------------------------------------------------ models and points
    def model_format(self, meta, ch):
        return str(ch[0])

    def model_option(self, meta, ch):
        return ("decide", str(ch[0]))

    def model_decl(self, meta, ch):
        name = str(ch[0])
        rest = ch[1:]
        fmt = rest.pop(0) if isinstance(rest[0], str) and not isinstance(rest[0], Token) else None
        path = _unquote(rest.pop(0))
        decision = "argmax"
        for key, value in rest:
            decision = value
        return A.ModelDecl(self._span(meta), name, path, fmt, decision)

    def points_file(self, meta, ch):
        return A.PointsFile(self._span(meta), _unquote(ch[0]), ch[1] if len(ch) > 1 else ())

    def points_ref(self, meta, ch):
        return A.PointsRef(self._span(meta), str(ch[0]))

    def points_inline(self, meta, ch):
        labels = ch[1] if len(ch) > 1 else None
        return A.PointsInline(self._span(meta), tuple(tuple(r) for r in ch[0]), labels)

    def where_clause(self, meta, ch):
        return ("where", tuple(ch))

    def points_term(self, meta, ch):
        node = ch[0]
        for c in ch[1:]:
            if isinstance(c, tuple) and c and c[0] == "where" and len(c) == 2 and isinstance(c[1], tuple) \
                    and all(isinstance(x, (A.LabelCmp, A.LabelIn, A.Correct)) for x in c[1]):
                node = A.PointsWhere(self._span(meta), node, c[1])
            else:
                node = A.PointsIndexed(self._span(meta), node, c)
        return node

    def points_expr(self, meta, ch):
        return ch[0] if len(ch) == 1 else A.PointsUnion(self._span(meta), tuple(ch))

    def points_decl(self, meta, ch):
        return A.PointsDecl(self._span(meta), str(ch[0]), ch[1])

    def cond_label_cmp(self, meta, ch):
        return A.LabelCmp(self._span(meta), str(ch[0]), ch[1])

    def cond_label_in(self, meta, ch):
        return A.LabelIn(self._span(meta), ch[0])

    def cond_correct(self, meta, ch):
        return A.Correct(self._span(meta), str(ch[0]), False)

    def cond_misclassified(self, meta, ch):
        return A.Correct(self._span(meta), str(ch[0]), True)

    # ------------------------------------------------------------------ patch items
    def layer_ref(self, meta, ch):
        c = ch[0]
        return _unquote(c) if isinstance(c, Token) else c

    def param_kinds(self, meta, ch):
        return frozenset(str(c) for c in ch)

    def rows(self, meta, ch):
        return ch[0]

    def edit_layer(self, meta, ch):
        return A.EditLayer(self._span(meta), ch[0], ch[1], ch[2] if len(ch) > 2 else None)

    def edit_layers(self, meta, ch):
        params = ch[-1]
        return [A.EditLayer(self._span(meta), layer, params, None) for layer in ch[:-1]]

    def edit_all_biases(self, meta, ch):
        return A.EditAllBiases(self._span(meta))

    def suspicious_for(self, meta, ch):
        return tuple(ch)

    def edit_suspicious(self, meta, ch):
        percent = len(ch) > 1 and isinstance(ch[1], Token) and ch[1].type == "PERCENT"
        rest = ch[2:] if percent else ch[1:]
        pts = rest[1] if len(rest) > 1 else ()
        return A.EditSuspicious(self._span(meta), ch[0], percent, rest[0], pts[0] if pts else None,
                                pts[1] if len(pts) > 1 else None)

    def keep_label(self, meta, ch):
        return A.Keep(self._span(meta), ch[0], None)

    def keep_outputs(self, meta, ch):
        return A.Keep(self._span(meta), ch[0], ch[1])

    def change_to(self, meta, ch):
        return A.Change(self._span(meta), ch[0], "to", (ch[1],))

    def change_to_one_of(self, meta, ch):
        return A.Change(self._span(meta), ch[0], "one_of", ch[1])

    def change_to_runner_up(self, meta, ch):
        return A.Change(self._span(meta), ch[0], "runner_up")

    def change_to_own_label(self, meta, ch):
        return A.Change(self._span(meta), ch[0], "to_own")

    def change_away(self, meta, ch):
        return A.Change(self._span(meta), ch[0], "away")

    def require_stmt(self, meta, ch):
        return A.Require(self._span(meta), ch[0], ch[1])

    def norm_term(self, meta, ch):
        return (ch[0], str(ch[1])) if len(ch) == 2 else (1.0, str(ch[0]))

    def minimize_stmt(self, meta, ch):
        return A.Minimize(self._span(meta), tuple(ch))

    def bound_stmt(self, meta, ch):
        return A.Bound(self._span(meta), str(ch[0]), ch[1])

    def margin_stmt(self, meta, ch):
        return A.Margin(self._span(meta), ch[0])

    def save_stmt(self, meta, ch):
        return A.Save(self._span(meta), _unquote(ch[0]))

    def using_stmt(self, meta, ch):
        return A.Using(self._span(meta), str(ch[0]), ch[1] if len(ch) > 1 else ())

    def round_stmt(self, meta, ch):
        return A.Round(self._span(meta), ch[0])

    def limit_stmt(self, meta, ch):
        return A.Limit(self._span(meta), str(ch[0]), ch[1])

    def tag_list(self, meta, ch):
        return tuple(_unquote(c) for c in ch)

    def tag_stmt(self, meta, ch):
        return A.Tag(self._span(meta), ch[0])

    def patch_block(self, meta, ch):
        name, model = str(ch[0]), ch[1]
        return A.PatchBlock(self._span(meta), name, str(model), _flatten_items(ch[2:]), self._tok_span(model))

    # ------------------------------------------------------------------ output constraints
    def output_ref(self, meta, ch):
        return int(str(ch[0]))

    def term_scaled(self, meta, ch):
        return ((ch[1], ch[0]),), 0.0

    def term_ref(self, meta, ch):
        return ((ch[0], 1.0),), 0.0

    def term_const(self, meta, ch):
        return (), ch[0]

    def lin_expr(self, meta, ch):
        terms: dict[int, float] = {}
        const = 0.0
        sign = 1.0
        for c in ch:
            if isinstance(c, Token):
                sign = -1.0 if str(c) == "-" else 1.0
                continue
            t, k = c
            for idx, coef in t:
                terms[idx] = terms.get(idx, 0.0) + sign * coef
            const += sign * k
            sign = 1.0
        return A.LinExpr(tuple(sorted(terms.items())), const)

    def atom_compare(self, meta, ch):
        return A.AtomCompare(self._span(meta), ch[0], str(ch[1]), ch[2])

    def atom_extreme(self, meta, ch):
        negated = any(isinstance(c, Token) and c.type == "NOT" for c in ch)
        which = str([c for c in ch if isinstance(c, Token) and c.type == "EXTREME"][0])
        return A.AtomExtreme(self._span(meta), ch[0], negated, which)

    def atom_label_is(self, meta, ch):
        negated = any(isinstance(c, Token) and c.type == "NOT" for c in ch)
        return A.AtomLabelIs(self._span(meta), ch[-1], negated)

    def atom_label_stays(self, meta, ch):
        return A.AtomLabelStays(self._span(meta))

    def output_clause(self, meta, ch):
        return tuple(ch)

    def output_cnf(self, meta, ch):
        return A.OutputCNF(self._span(meta), tuple(ch))

    # ------------------------------------------------------------------ properties, verify, repair
    def input_box(self, meta, ch):
        return A.InputBox(self._span(meta), ch[0], ch[1])

    def input_ball(self, meta, ch):
        return A.InputBall(self._span(meta), str(ch[0]), ch[1], ch[2])

    def input_domain(self, meta, ch):
        return A.InputDomain(self._span(meta), ch[0], ch[1])

    def ensure_stmt(self, meta, ch):
        return ch[0]

    def property_vnnlib(self, meta, ch):
        return A.PropertyVnnlib(self._span(meta), str(ch[0]), _unquote(ch[1]))

    def property_block(self, meta, ch):
        inputs = tuple(c for c in ch[1:] if isinstance(c, (A.InputBox, A.InputBall)))
        ensures = tuple(c for c in ch[1:] if isinstance(c, A.OutputCNF))
        domains = tuple(c for c in ch[1:] if isinstance(c, A.InputDomain))
        return A.PropertyBlock(self._span(meta), str(ch[0]), inputs, ensures, domains)

    def opt_timeout(self, meta, ch):
        return ("timeout", ch[0])

    def opt_using(self, meta, ch):
        return ("using", A.Using(self._span(meta), str(ch[0]), ch[1] if len(ch) > 1 else ()))

    def opt_save(self, meta, ch):
        return ("save", _unquote(ch[0]))

    def opt_falsify(self, meta, ch):
        only = bool(ch) and isinstance(ch[0], Token) and ch[0].type == "FALSIFY_ONLY"
        rest = ch[1:] if only else ch
        return ("falsify", A.Falsify(self._span(meta), str(rest[0]), rest[1] if len(rest) > 1 else (), only))

    def opt_tag(self, meta, ch):
        return ("tag", ch[0])

    def verify_stmt(self, meta, ch):
        opts = dict(c for c in ch[2:] if c[0] != "tag")
        tags = tuple(t for c in ch[2:] if c[0] == "tag" for t in c[1])
        return A.Verify(self._span(meta), str(ch[0]), str(ch[1]), opts.get("timeout"), opts.get("using"),
                        opts.get("save"), tags, falsify=opts.get("falsify"))

    def repair_block(self, meta, ch):
        model, prop = str(ch[0]), str(ch[1])
        rest = list(ch[2:])
        result_name = str(rest.pop(0)) if rest and isinstance(rest[0], Token) else None
        return A.RepairBlock(self._span(meta), model, prop, result_name, _flatten_items(rest))

    def finetune_block(self, meta, ch):
        model, prop = str(ch[0]), str(ch[1])
        rest = list(ch[2:])
        result_name = str(rest.pop(0)) if rest and isinstance(rest[0], Token) else None
        return A.FinetuneBlock(self._span(meta), model, prop, result_name, tuple(rest))

    def ft_data(self, meta, ch):
        return A.FinetuneOption(self._span(meta), "data", ch[0])

    def ft_epochs(self, meta, ch):
        return A.FinetuneOption(self._span(meta), "epochs", ch[0])

    def ft_rate(self, meta, ch):
        return A.FinetuneOption(self._span(meta), "rate", ch[0])

    def ft_penalty(self, meta, ch):
        return A.FinetuneOption(self._span(meta), "penalty", ch[0])

    def ft_samples(self, meta, ch):
        return A.FinetuneOption(self._span(meta), "samples", ch[0])

    # ------------------------------------------------------------------ experts
    def experts_block(self, meta, ch):
        model = str(ch[0])
        rest = list(ch[1:])
        result_name = str(rest.pop(0)) if rest and isinstance(rest[0], Token) else None
        return A.ExpertsBlock(self._span(meta), model, result_name, _flatten_items(rest))

    def ex_failing(self, meta, ch):
        return A.ExpertOption(self._span(meta), "failing", ch[0])

    def ex_passing(self, meta, ch):
        return A.ExpertOption(self._span(meta), "passing", ch[0])

    def ex_oracle(self, meta, ch):
        return A.ExpertOption(self._span(meta), "oracle", str(ch[0]))

    def ex_combine(self, meta, ch):
        return A.ExpertOption(self._span(meta), "combine", tuple(str(c) for c in ch))

    def ex_filter(self, meta, ch):
        return A.ExpertOption(self._span(meta), "filter", ch[0])

    def ex_classes(self, meta, ch):
        return A.ExpertOption(self._span(meta), "classes", tuple(ch[0]))

    # ------------------------------------------------------------------ adversarial inputs
    def attack_inputs(self, meta, ch):
        return A.AttackInputs(self._span(meta), ch[0])

    def target_away(self, meta, ch):
        return A.AttackTarget(self._span(meta), "away")

    def target_to(self, meta, ch):
        return A.AttackTarget(self._span(meta), "to", (ch[0],))

    def target_one_of(self, meta, ch):
        return A.AttackTarget(self._span(meta), "one_of", tuple(ch[0]))

    def attack_method(self, meta, ch):
        return A.AttackMethod(self._span(meta), str(ch[0]))

    def attack_block(self, meta, ch):
        name, model = str(ch[0]), ch[1]
        return A.AttackBlock(self._span(meta), name, str(model), tuple(ch[2:]), self._tok_span(model))

    # ------------------------------------------------------------------ assertions
    def assert_stmt(self, meta, ch):
        return ch[0]

    def assert_exists(self, meta, ch):
        return A.AssertExists(self._span(meta), str(ch[0]), False)

    def assert_not_exists(self, meta, ch):
        return A.AssertExists(self._span(meta), str(ch[0]), True)

    def assert_distance(self, meta, ch):
        return A.AssertDistance(self._span(meta), str(ch[0]), str(ch[1]), str(ch[2]), ch[3])

    def assert_accuracy(self, meta, ch):
        return A.AssertAccuracy(self._span(meta), str(ch[0]), ch[1], str(ch[2]), ch[3])

    def assert_metric(self, meta, ch):
        return A.AssertMetric(self._span(meta), str(ch[0]), str(ch[1]), str(ch[2]), ch[3])


def _flatten_items(items: list) -> tuple:
    out: list = []
    for item in items:
        if isinstance(item, list):
            out.extend(item)
        else:
            out.append(item)
    return tuple(out)
