"""`domain [lo, hi]` in property blocks (issue 16): every input region is cut to the inputs that exist, for
verify, its falsification and repair alike, so a counterexample outside the domain cannot be reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_task
from patchlang.errors import SpecError
from patchlang.lang.format import format_source
from patchlang.tasks.patch import RunOptions
from patchlang.tasks.verify import property_cases

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
DIGITS = 'model net = "digits_mlp.onnx"\npoints test = "digits_test.npz"\n'
TOY = 'model toy = "toy.onnx"\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for f in ("digits_mlp.onnx", "digits_test.npz", "toy.onnx"):
        shutil.copy(MODELS / f, tmp_path / f)
    return tmp_path


def _robust(domain: str) -> str:
    return (DIGITS + "property robust {\n    input within linf 0.1 of test[0:20] where correct(net)\n"
            f"    ensure label stays\n{domain}}}\nverify net satisfies robust timeout 60\n")


def test_ball_around_a_zero_pixel_never_leaves_the_domain(folder: Path) -> None:
    with_domain = load_program_text(_robust("    domain [0, 1]\n"), folder)
    without = load_program_text(_robust(""), folder)
    net = with_domain.models["net"].net
    centers = np.asarray(with_domain.tasks[0].prop.centers.flat())
    assert np.any(centers == 0)  # digit images have pixels at 0: a ball around them reaches -0.1 without a domain
    assert min(float(np.min(c.lo)) for c in property_cases(without.tasks[0].prop, net)) == pytest.approx(-0.1)
    cases = property_cases(with_domain.tasks[0].prop, net)
    assert all(np.all(c.lo >= 0) and np.all(c.hi <= 1) for c in cases)
    assert all(np.all(c.lo <= x) and np.all(x <= c.hi) for c, x in zip(cases, centers))
    r = run_task(with_domain.tasks[0], RunOptions(write_files=False))
    assert r.status == "violated"  # radius 0.1 is not robust; the counterexample found is a real input
    x = np.asarray(r.details["counterexample"], np.float64)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_repair_searches_only_the_domain(folder: Path) -> None:
    src = (TOY + "property strong {\n    input box lo [2.5, 3.5] hi [3.5, 4.5]\n    ensure y[1] >= 2\n"
           "    domain [[2.5, 3.5], [3, 4]]\n}\n"
           "repair toy for strong as fixed {\n    edit layer -1 weights and biases\n    minimize linf\n}\n")
    program = load_program_text(src, folder)
    task = program.tasks[0]
    (case,) = property_cases(task.prop, program.models["toy"].net)
    assert case.lo.tolist() == [2.5, 3.5] and case.hi.tolist() == [3.0, 4.0]
    r = run_task(task, RunOptions(write_files=False))
    assert r.status == "repaired"
    whole = load_program_text(src.replace("    domain [[2.5, 3.5], [3, 4]]\n", ""), folder)
    assert r.distances["linf"] < run_task(whole.tasks[0], RunOptions(write_files=False)).distances["linf"]


@pytest.mark.parametrize("domain, code, words", [
    ("domain [1, 0]", "PL268", "lo > hi"),
    ("domain [[0, 0], [1, 1, 1]]", "PL268", "differ in length"),
    ("domain [0, 1]\n    domain [0, 2]", "PL268", "more than one"),
    ("domain [10, 11]", "PL268", "lies outside its domain"),
    ("domain [[0, 0, 0], 10]", "PL268", "3 bound(s) per side"),
])
def test_domain_errors(folder: Path, domain: str, code: str, words: str) -> None:
    src = TOY + f"property p {{\n    input box lo [2.5, 3.5] hi [3.5, 4.5]\n    {domain}\n    ensure y[1] >= 2\n}}\n"
    with pytest.raises(SpecError) as err:
        load_program_text(src + "verify toy satisfies p\n", folder)
    assert any(d.code == code and words in d.message for d in err.value.diagnostics), err.value.render()


def test_domain_that_does_not_fit_the_model(folder: Path) -> None:
    src = TOY + "property p {\n    input box lo 0 hi 1\n    domain [[0, 0, 0], 1]\n    ensure y[1] >= 2\n}\n"
    with pytest.raises(SpecError) as err:
        load_program_text(src + "verify toy satisfies p\n", folder)
    assert any(d.code == "PL265" and "`domain` gives 3" in d.message for d in err.value.diagnostics)


def test_fmt_keeps_domain() -> None:
    src = "property q { input box lo [0, 0] hi 1 domain [[0, -1], 1]  ensure y[0] >= y[1] }\n"
    out = format_source(src)
    assert "    domain [[0, -1], 1]\n" in out and format_source(out) == out
