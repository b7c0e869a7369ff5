"""``patchlang fmt``: the output means the same (same AST, spans aside), is a fixed point, and keeps every comment.

Hypothesis re-lays out valid specs (the examples, the docs' code blocks, the fuzz seeds and generated point /
output-constraint expressions) with random whitespace, line breaks and comments between their tokens; whatever
the layout, formatting must give back the same canonical text.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchlang.cli import main
from patchlang.errors import ModelError
from patchlang.lang.format import FENCE, _parse_full, ast_key, format_source

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").rglob("*.patch"))
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
DOC_BLOCKS = [m.group(1) for doc in DOCS for m in FENCE.finditer(doc.read_text(encoding="utf-8"))]
SEED = """model toy = "toy.onnx"
points p = [[3, 4], [1, 2],] labels [0, 1]
property q { input box lo [0, 0] hi [1, 1]  domain [0, [1, 2]]  ensure y[0] >= y[1] or y[1] is max }
verify toy satisfies q timeout 5 using z3 (a = 1) save "c.npy"
patch a on toy { edit layer -1 weights and biases  keep p outputs within 0.5  change p[0] to one of {0, 1}
  change p[::2, -1] away from label change p to runner-up
  edit layer "fc" weights rows [0:2, 3]  edit layers 0, 1 biases  edit all biases
  require (p + p)[1:] where label in {1} and correct(toy): -2*y[0] + 3 y[1] - 1/255 < y[1] and label is not 3
  minimize 2 * l1 + linf  bound linf <= 1  margin 0.01  round significand 10  using z3 (method = "bisect") }
repair toy for q as fixed { edit layer 0 biases  keep p where misclassified(toy)  limit iterations 3 }
assert distance(a, l1) < 3
assert not exists(fixed)
assert accuracy(toy, p where label != 0) >= .5
"""
SOURCES = [p.read_text(encoding="utf-8") for p in EXAMPLES] + DOC_BLOCKS + [SEED]


def comments(text: str) -> list[str]:
    return [c.value.rstrip() for c in _parse_full(text)[1]]


def assert_safe(source: str) -> str:
    out = format_source(source)
    assert ast_key(out) == ast_key(source)
    assert format_source(out) == out, "formatting twice changed the text"
    assert comments(out) == comments(source)
    assert out == "" or out.endswith("\n") and not out.endswith("\n\n")
    assert all(line == line.rstrip() for line in out.splitlines())
    for line in out.splitlines():
        code = line.split("#")[0] if '"' not in line else line  # comments are free text
        assert not re.search(r",\S", code), line  # one space after every comma
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert format_source(text) == text, f"run `patchlang fmt {path.relative_to(REPO)}`"


def test_docs_code_blocks_are_formatted(capsys) -> None:
    assert len(DOC_BLOCKS) >= 20
    assert main(["fmt", "--check", *map(str, DOCS)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("source", SOURCES, ids=range(len(SOURCES)))
def test_formatting_is_safe(source: str) -> None:
    assert_safe(source)


def test_canonical_layout() -> None:
    src = ('model   net=nnet "n.nnet"decide argmin   # the net\n\n\n\n'
           "points p=[[1,2],[3,4],]labels[0,1]\n"
           "# about t\n"
           "patch t on net{edit layer -1 weights rows[0:2]  # rows\n"
           "keep p[0 :1]where label==0 change p [ 1 ] to one of { 0 , 1 }\n\n\n"
           "require p:y[0]>=2*y[1]-1/2 or y[0] is not max\n"
           "    minimize 2 *linf+l1 }\n"
           "assert accuracy( t , p ) >= 0.5")
    assert assert_safe(src) == (
        'model net = nnet "n.nnet" decide argmin  # the net\n'
        "\n"
        "points p = [[1, 2], [3, 4]] labels [0, 1]\n"
        "\n"
        "# about t\n"
        "patch t on net {\n"
        "    edit layer -1 weights rows [0:2]  # rows\n"
        "    keep p[0:1] where label == 0\n"
        "    change p[1] to one of {0, 1}\n"
        "\n"
        "    require p: y[0] >= 2*y[1] - 1/2 or y[0] is not max\n"
        "    minimize 2*linf + l1\n"
        "}\n"
        "\n"
        "assert accuracy(t, p) >= 0.5\n")


def test_slices() -> None:
    assert format_source("points q = p[0,:2 , 3: , ::-1][ 1 : ]") == "points q = p[0, :2, 3:, ::-1][1:]\n"


def test_comments_inside_a_statement_move_above_it_and_trailing_ones_align() -> None:
    src = ("points p = [[1, 2], # first row\n  [3, 4]] # end\n"
           "patch t on net { # header\n  keep p # a\n  change p to 1 # bb\n  # last\n} # done\n# eof\n")
    assert assert_safe(src) == (
        "# first row\n"
        "points p = [[1, 2], [3, 4]]  # end\n"
        "\n"
        "patch t on net {   # header\n"
        "    keep p         # a\n"
        "    change p to 1  # bb\n"
        "    # last\n"
        "}  # done\n"
        "\n"
        "# eof\n")


def test_long_statements_wrap_at_the_outermost_operator() -> None:
    terms = " + ".join(f"(good where label == {k})[0]" for k in range(10))
    out = assert_safe(f"points keep = {terms}\n")
    lines = out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 100 for line in lines)
    assert all(line.startswith("    + (good") for line in lines[1:])


def test_empty_and_comment_only_files() -> None:
    assert format_source("") == ""
    assert format_source("\n\n  \n") == ""
    assert assert_safe("# only\n\n\n#  a comment   \n") == "# only\n\n#  a comment\n"


# ---------------------------------------------------------------------------- hypothesis: any layout, one output

SEPARATORS = [" ", "  ", "\t", "\n", "\n\n\n", "\r\n", " # c\n", "\n# own line\n", "\n\n# para\n\n", "#\n"]


def relayout(source: str, seps: list[str]) -> str:
    """The same tokens with other whitespace and comments between them (comments need a line end)."""
    tree, _ = _parse_full(source)
    toks = list(tree.scan_values(lambda v: hasattr(v, "type")))
    out = []
    for i, t in enumerate(toks):
        out.append(t.value)
        out.append(seps[i % len(seps)] if seps else " ")
    return "".join(out)


@st.composite
def points_expr(draw, depth: int = 0) -> str:
    atom = draw(st.sampled_from(["p", '"d.npz"', '"d.npz" with scale = 1/255, y = "last"', "[[1, 2]] labels [1]",
                                 "[[1.5e-3, -2], [3, 4,],]"]))
    if depth < 2 and draw(st.booleans()):
        atom = "(" + draw(points_expr(depth + 1)) + ")"
    for _ in range(draw(st.integers(0, 2))):
        atom += draw(st.sampled_from(["[0]", "[-1]", "[1:3]", "[::2]", "[0, 2:, :-1:2]"]))
    if draw(st.booleans()):
        atom += " where " + " and ".join(draw(st.lists(st.sampled_from(
            ["label == 1", "label in {1, 2}", "correct(n)", "misclassified(n)", "label >= -1"]), min_size=1,
            max_size=3)))
    if depth < 2 and draw(st.booleans()):
        atom += " + " + draw(points_expr(depth + 1))
    return atom


LIN = st.sampled_from(["y[0]", "2*y[1]", "-0.5 y[2]", "y[0] - y[1] + 3", "1/3", "-2"])
ATOMS = st.one_of(st.builds(lambda a, op, b: f"{a} {op} {b}", LIN, st.sampled_from(["<=", ">=", "<", ">", "=="]),
                            LIN),
                  st.sampled_from(["y[1] is max", "y[2] is not min", "label is 3", "label is not 0", "label stays",
                                   "(y[0] >= 1)"]))
CNF = st.lists(st.lists(ATOMS, min_size=1, max_size=3).map(" or ".join), min_size=1, max_size=4).map(" and ".join)


NUM = st.sampled_from(["0", "1", "-1", "0.5", "1e-3", ".25", "1/255", "+2", "3.", "1E+2"])
INT = st.sampled_from(["0", "1", "-1", "7", "+3"])
STR = st.sampled_from(['"a.onnx"', '"out/x.onnx"', '"with space.npz"', '"esc\\"q"', '""'])
EDIT = st.one_of(
    st.builds(lambda k, p: f"edit layer {k} {p}", st.one_of(INT, STR),
              st.sampled_from(["weights", "biases", "weights and biases", "biases and weights"])),
    st.builds(lambda k, r: f"edit layer {k} weights rows [{r}]", INT, st.sampled_from(["0", "0:2", "1, 3:5", "::2"])),
    st.builds(lambda ks: f"edit layers {', '.join(ks)} biases", st.lists(st.one_of(INT, STR), min_size=2, max_size=3)),
    st.just("edit all biases"))


@st.composite
def item(draw) -> str:
    p = draw(points_expr())
    return draw(st.sampled_from([
        f"keep {p}", f"keep {p} outputs within {draw(NUM)}", f"change {p} to {draw(INT)}",
        f"change {p} to one of {{{draw(INT)}, {draw(INT)}}}", f"change {p} to runner-up", f"change {p} to label",
        f"change {p} away from label", f"require {p}: {draw(CNF)}", draw(EDIT),
        f"minimize {draw(st.sampled_from(['linf', 'l1 + 2*linf', '0.5 l0 + l1', '3 * l1']))}",
        f"bound {draw(st.sampled_from(['linf', 'l1', 'l0']))} <= {draw(NUM)}", f"margin {draw(NUM)}",
        f"save {draw(STR)}", "using z3", f"using highs (time_limit = {draw(NUM)}, method = {draw(STR)})",
        f"round significand {draw(INT)}", f"limit iterations {draw(NUM)}", f'tag "ci", "x y"']))


@st.composite
def statement(draw) -> str:
    items = "\n".join("    " + i for i in draw(st.lists(item(), max_size=4)))
    return draw(st.sampled_from([
        f"model m = {draw(STR)}", f"model m = nnet {draw(STR)} decide argmin", f"points p = {draw(points_expr())}",
        f"patch t on m {{\n{items}\n}}", f"repair m for q as r {{\n{items}\n}}", f"repair m for q {{ {items} }}",
        f"property q = vnnlib {draw(STR)}",
        f"property q {{ input box lo [{draw(NUM)}, {draw(NUM)}] hi {draw(NUM)} ensure {draw(CNF)} }}",
        f"property q {{ input box lo {draw(NUM)} hi {draw(NUM)} domain [{draw(NUM)}, [{draw(NUM)}, {draw(NUM)}]] "
        f"ensure {draw(CNF)} }}",
        f"property q {{ input within linf {draw(NUM)} of {draw(points_expr())} ensure {draw(CNF)} ensure label stays }}",
        f"verify m satisfies q timeout {draw(NUM)} using marabou (a = 1) save {draw(STR)} tag \"n\"",
        "verify m satisfies q", "assert exists(t)", "assert not exists(t)",
        f"assert distance(t, l1) {draw(st.sampled_from(['<=', '>=', '<', '>', '==', '!=']))} {draw(NUM)}",
        f"assert accuracy(m, {draw(points_expr())}) >= {draw(NUM)}"]))


@st.composite
def generated_spec(draw) -> str:
    return "\n".join(draw(st.lists(statement(), min_size=1, max_size=6))) + "\n"


SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@settings(SETTINGS, max_examples=200)
@given(st.sampled_from(SOURCES), st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=12))
def test_any_layout_formats_to_the_same_text(source: str, seps: list[str]) -> None:
    messy = relayout(source, seps)
    out = assert_safe(messy)
    if not any("#" in s or "\n\n" in s for s in seps):  # no new comments or blank lines: the same text
        assert out == format_source(relayout(source, [" "]))


@SETTINGS
@given(generated_spec(), st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=6))
def test_generated_specs_format_safely(source: str, seps: list[str]) -> None:
    out = assert_safe(source)
    assert assert_safe(relayout(source, [s for s in seps if "#" not in s and "\n\n" not in s] or [" "])) == out


@pytest.mark.parametrize("seed", range(12))
def test_specgen_cases(seed: int, tmp_path: Path) -> None:
    """The random patch problems of the differential tests (tests/specgen.py), laid out messily."""
    from specgen import random_case

    source = random_case(seed, tmp_path).source
    out = assert_safe(relayout(source, SEPARATORS[seed % len(SEPARATORS):] + SEPARATORS[:1]))
    assert assert_safe(source) == format_source(relayout(source, [" "]))
    assert ast_key(out) == ast_key(source)


# ---------------------------------------------------------------------------- the command


def test_cli_check_diff_and_rewrite(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.patch"
    good.write_text(format_source(SEED))
    messy = tmp_path / "sub" / "messy.patch"
    messy.parent.mkdir()
    messy.write_text(SEED)
    os.chmod(messy, 0o640)
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert f"would reformat {messy}" in out.out and "good.patch" not in out.out
    assert "1 file would be reformatted, 1 file left unchanged" in out.err
    assert messy.read_text() == SEED
    assert main(["fmt", "--diff", str(messy)]) == 1
    diff = capsys.readouterr().out
    assert diff.startswith(f"--- {messy} (original)\n+++ {messy} (formatted)\n") and "\n+patch a on toy {\n" in diff
    assert messy.read_text() == SEED
    assert main(["fmt", str(good), str(messy)]) == 0
    assert f"reformatted {messy}" in capsys.readouterr().out
    assert messy.read_text() == format_source(SEED)
    assert stat.S_IMODE(messy.stat().st_mode) == 0o640
    assert [p.name for p in messy.parent.iterdir()] == ["messy.patch"]  # no temporary file left behind
    assert main(["fmt", "--check", str(tmp_path)]) == 0


def test_cli_never_touches_a_file_that_does_not_parse(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.patch"
    bad.write_text('model net = "n.onnx"\npatch t on net {\n    keep\n}\n')
    other = tmp_path / "other.patch"
    other.write_text("model   net = \"n.onnx\"\n")
    before = bad.read_text()
    assert main(["fmt", str(bad), str(other)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(bad))}:4:1: PL100 error", err), err
    assert bad.read_text() == before
    assert other.read_text() == 'model net = "n.onnx"\n'  # the other files are still formatted
    assert main(["fmt", "--check", str(tmp_path / "missing.patch")]) == 2
    assert "PL001" in capsys.readouterr().err


def test_markdown_blocks_and_their_errors(tmp_path: Path, capsys) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\n```patch\nmodel   n = \"n.onnx\"\n```\n\ntext\n\n```patch\npoints p = [[1]]\n```\n")
    assert main(["fmt", str(doc)]) == 0
    assert doc.read_text().startswith('# Title\n\n```patch\nmodel n = "n.onnx"\n```\n\ntext\n')
    capsys.readouterr()
    doc.write_text(doc.read_text() + "\n```patch\nmodel n =\n```\n")
    assert main(["fmt", "--check", str(doc)]) == 2
    assert f"{doc}:14:9: PL100 error" in capsys.readouterr().err  # the line in the Markdown file


def test_stdin_to_stdout(monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("model  n = \"n.onnx\"  # c\n"))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == 'model n = "n.onnx"  # c\n'
    monkeypatch.setattr("sys.stdin", io.StringIO("model n =\n"))
    assert main(["fmt", "-"]) == 2
    assert "<stdin>:1:9: PL100 error" in capsys.readouterr().err


def test_rewrite_follows_symlinks_and_reports_write_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    real = tmp_path / "real.patch"
    real.write_text("model  n = \"n.onnx\"\n")
    link = tmp_path / "link.patch"
    link.symlink_to(real)
    assert main(["fmt", str(link)]) == 0
    assert link.is_symlink() and real.read_text() == 'model n = "n.onnx"\n'

    def refuse(path, data, protected=None):
        raise ModelError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr("patchlang.files.write_atomic", refuse)
    spec = tmp_path / "s.patch"
    spec.write_text("model  n = \"n.onnx\"\n")
    capsys.readouterr()
    assert main(["fmt", str(spec), str(real)]) == 2
    assert f"{spec}: PL000 error: cannot write" in capsys.readouterr().err
    assert spec.read_text() == "model  n = \"n.onnx\"\n"
