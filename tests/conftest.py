"""Shared test fixtures: where the shared benchmarks are, and a builder for tiny hand-made ONNX models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The result cache (.patchlang/cache/ beside a spec) is off for the suite: a test that runs a spec must solve it
# (tests that monkeypatch a solver would otherwise get a cached answer).  tests/test_cache.py switches it on.
os.environ.setdefault("PATCHLANG_CACHE", "0")
EXAMPLE_MODELS = REPO_ROOT / "examples" / "models"


def shared_path() -> Path:
    """``PATCHLANG_SHARED`` (default ``../shared``), relative paths taken from the repository root."""
    raw = os.environ.get("PATCHLANG_SHARED", "../shared")
    return Path(raw) if os.path.isabs(raw) else (REPO_ROOT / raw).resolve()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared: needs the shared benchmarks (PATCHLANG_SHARED, default ../shared)")


def pytest_report_header(config: pytest.Config) -> str:
    path = shared_path()
    found = "found" if (path / "benchmarks").is_dir() else "NOT FOUND: tests marked 'shared' will be skipped"
    return f"patchlang shared benchmarks: {path} ({found})"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    if not (path / "benchmarks").is_dir():
        pytest.skip(f"PATCHLANG_SHARED benchmarks not found at {path}: skipping (set PATCHLANG_SHARED to run them)")
    return path


def make_model(nodes: Sequence, initializers: dict[str, np.ndarray], input_dims: Sequence[int | str],
               output: str = "y", input_name: str = "x", opset: int = 13, ir_version: int = 8,
               output_dims: Sequence[int | str] | None = None):
    """A small ``ModelProto`` from ``onnx.helper`` nodes and float32 initializers.

    The output shape is left to onnxruntime unless ``output_dims`` is given (``onnx.checker`` wants it).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        list(nodes), "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None if output_dims is None else list(output_dims))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[..., str]:
    """``write_model(nodes, initializers, input_dims, **kw) -> path`` of the saved model in ``tmp_path``."""
    import onnx

    counter = iter(range(1_000_000))

    def write(*args, **kwargs) -> str:
        path = tmp_path / f"model_{next(counter)}.onnx"
        onnx.save(make_model(*args, **kwargs), str(path))
        return str(path)

    return write


@pytest.fixture()
def examples_copy(tmp_path: Path) -> Path:
    """A copy of examples/ (without outputs or caches) in a temporary folder: runs write nothing in the repository."""
    import shutil

    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("out", ".patchlang"))
    return tmp_path / "examples"


def report_figures(report: dict) -> list:
    """What two runs of one spec must agree on: each task's status, objective, distances and files, and each
    assertion's verdict and value (JSON report)."""
    return [(t["name"], t["status"], t.get("objective"), t.get("distances"), t.get("files")) for t in
            report["tasks"]] + [(a["text"], a["holds"], a.get("value")) for a in report["assertions"]]


def run_copied_spec(tmp_path: Path, capsys, source: Path, names: Sequence[str]) -> tuple[int, str, dict]:
    """Copy ``names`` (the spec first, then the files it reads) from ``source`` into ``tmp_path``, run the spec
    through the CLI with a JSON report, and return (exit code, stdout, report): runs write nothing in the repo."""
    import json
    import shutil

    from patchlang.cli import main

    for name in names:
        shutil.copy(source / name, tmp_path / name)
    code = main(["run", str(tmp_path / names[0]), "--json", str(tmp_path / "r.json")])
    return code, capsys.readouterr().out, json.loads((tmp_path / "r.json").read_text())
