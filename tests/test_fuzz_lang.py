"""Property-based fuzzing of the parser and checker: no input may produce anything but a clean diagnostic.

Random token soups (the language's own keywords and punctuation, so the parser gets deep) and random mutations of
the valid example specs (characters deleted, inserted, duplicated, lines swapped) go through
``load_program_text``; the only acceptable failures are SpecError / PatchlangError (printed as ``file:line:col``
diagnostics, exit code 2).  A handful of broken specs also go through ``patchlang check`` for the exit code and
the location on stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchlang.api import load_program_text
from patchlang.cli import main
from patchlang.errors import PatchlangError

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
SEEDS = [
    (REPO / "examples" / "toy" / "toy.patch").read_text(),
    (REPO / "examples" / "quickstart" / "fix_digits.patch").read_text().replace("../models/", ""),
    """model toy = "toy.onnx"
points p = [[3, 4], [1, 2]] labels [0, 1]
property q { input box lo [0, 0] hi [1, 1]  ensure y[0] >= y[1] or y[1] is max }
verify toy satisfies q timeout 5
patch a on toy { edit layer -1 weights and biases  keep p outputs within 0.5  change p[0] to one of {0, 1}
  minimize 2 * l1 + linf  bound linf <= 1  margin 0.01  round significand 10  using z3 (method = "bisect") }
repair toy for q as fixed { edit layer 0 biases  keep p  limit iterations 3 }
assert distance(a, l1) < 3
assert not exists(fixed)
""",
]
TOKENS = ["model", "points", "patch", "on", "edit", "layer", "layers", "weights", "biases", "and", "all", "keep",
          "change", "to", "label", "away", "from", "one", "of", "runner-up", "require", "minimize", "bound",
          "margin", "save", "using", "round", "significand", "limit", "property", "vnnlib", "input", "box", "domain", "lo",
          "hi", "within", "ensure", "verify", "satisfies", "repair", "for", "as", "assert", "exists", "not",
          "distance", "accuracy", "where", "correct", "misclassified", "rows", "outputs", "is", "min", "max",
          "or", "y", "linf", "l1", "l0", "z3", "highs", "toy", "p", "net", "x", "{", "}", "[", "]", "(", ")", ",",
          ":", "=", "+", "-", "*", "/", "<=", ">=", "<", ">", "==", "!=", "0", "1", "-1", "3", "0.5", "1e400",
          "1e-9", "99999999999999999999", '"toy.onnx"', '"missing.onnx"', '"x.npz"', '""', "#", "\n", "\t", "@",
          "é", "\x00"]

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _load(source: str) -> None:
    try:
        load_program_text(source, MODELS, filename="fuzz.patch")
    except PatchlangError as exc:  # includes SpecError: a clean, located diagnostic
        for d in exc.diagnostics:
            d.render({"fuzz.patch": source.splitlines()})  # rendering must not fail either


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_never_crashes(tokens: list[str]) -> None:
    _load(" ".join(tokens))


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "swap_lines", "token"]))
        if op == "delete":
            j = draw(st.integers(i, min(len(text), i + 12)))
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.text(max_size=4)) + text[i:]
        elif op == "duplicate":
            text = text[:i] + text[i: i + 20] + text[i:]
        elif op == "token":
            text = text[:i] + " " + draw(st.sampled_from(TOKENS)) + " " + text[i:]
        else:
            lines = text.splitlines()
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@SETTINGS
@given(mutated())
def test_mutated_specs_never_crash(source: str) -> None:
    _load(source)


def test_seeds_are_valid() -> None:
    """The mutation seeds themselves load, so mutations start from deep inside the checker."""
    for source in SEEDS:
        load_program_text(source, MODELS, filename="seed.patch")


BROKEN = {
    "syntax": ("model toy = \"toy.onnx\"\npatch t on toy {\n    edit layer -1 weights\n    keep\n}\n", "5:1"),
    "unknown_model": ("model toy = \"toy.onnx\"\npoints p = [[1, 2]]\npatch t on nett {\n  edit layer -1 weights\n"
                      "  keep p\n}\n", "3:12"),
    "bad_label": ("model toy = \"toy.onnx\"\npoints p = [[1, 2]]\npatch t on toy {\n  edit layer -1 weights\n"
                  "  change p to 7\n}\n", "5:3"),
    "bilinear": ("model toy = \"toy.onnx\"\npoints p = [[1, 2]]\npatch t on toy {\n  edit layer 0 weights\n"
                 "  edit layer 1 weights\n  keep p\n}\n", ":5:"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_reports_location_and_exit_2(case: str, tmp_path: Path, capsys) -> None:
    source, where = BROKEN[case]
    spec = tmp_path / "broken.patch"
    spec.write_text(source.replace('"toy.onnx"', f'"{MODELS / "toy.onnx"}"'))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:" in err and where in err, err
    assert "Traceback" not in err
