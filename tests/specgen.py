"""Small random patch problems for differential and exactness tests (helpers, no tests here).

Each case is a random ReLU network of 2-4 affine layers saved as ONNX, a handful of inline points, and a spec
with a random edit (last layer, or an earlier one so that ReLUs sit downstream), random keep/change goals, one
of the norms, and sometimes a bound tight enough to make the task infeasible.  Everything derives from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchlang.api import load_program_text
from patchlang.compile.patch import PatchEncoding
from patchlang.query import Query
from patchlang.lang.program import PatchTask
from patchlang.model.build import network_from_arrays
from patchlang.model.ir import Network
from patchlang.model.onnx_export import save_network


@dataclass
class Case:
    seed: int
    source: str
    description: str


def random_net(rng: np.random.Generator, n_layers: int, n_in: int = 3, n_out: int = 3) -> Network:
    sizes = [n_in] + [int(rng.integers(3, 6)) for _ in range(n_layers - 1)] + [n_out]
    Ws = [rng.normal(size=(sizes[k + 1], sizes[k])) for k in range(n_layers)]
    bs = [rng.normal(size=sizes[k + 1]) * 0.3 for k in range(n_layers)]
    return network_from_arrays(Ws, bs, name="net")


def _matrix(x: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in x) + "]"


def random_case(seed: int, folder: Path) -> Case:
    """A random spec (model written into ``folder``); roughly a quarter are made infeasible by a tight bound."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(2, 5))
    net = random_net(rng, n_layers)
    model = folder / f"net_{seed}.onnx"
    save_network(net, str(model))
    norm = ["linf", "l1", "l0"][seed % 3]
    layer = -1 if rng.random() < 0.6 else int(rng.integers(0, n_layers - 1))
    # ReLUs downstream of the edit make a MILP: keep those small so that exact Z3 stays fast
    n_points = int(rng.integers(3, 7)) if layer == -1 else int(rng.integers(2, 4))
    x = rng.normal(size=(n_points, 3))
    labels = net.labels(x)
    params = ["weights", "biases", "weights and biases"][int(rng.integers(0, 3))]
    if layer != -1 and params == "biases" and rng.random() < 0.5:
        params = "weights"
    target = int((labels[0] + 1 + rng.integers(0, 2)) % 3)
    lines = [f'model net = "{model.name}"', f"points p = {_matrix(x)}", "patch t on net {",
             f"    edit layer {layer} {params}", f"    change p[0] to {target}"]
    if n_points > 1:
        lines.append(f"    keep p[1:{n_points}]")
    lines.append(f"    minimize {norm}")
    tight = rng.random() < 0.25
    if norm == "l0" or tight or layer != -1 or rng.random() < 0.5:
        bound = 10 ** rng.uniform(-3, -1.5) if tight else 2.0 + 3 * rng.random()
        lines.append(f"    bound linf <= {bound:.6g}")
    lines.append("}")
    desc = f"seed {seed}: {n_layers} layers, edit layer {layer} {params}, {norm}, {n_points} points" + (
        ", tight bound" if tight else "")
    return Case(seed, "\n".join(lines) + "\n", desc)


def case_task(case: Case, folder: Path) -> PatchTask:
    program = load_program_text(case.source, folder, filename=str(folder / f"case_{case.seed}.patch"))
    return program.tasks[0]


def case_encoding(case: Case, folder: Path) -> tuple[PatchTask, PatchEncoding]:
    from patchlang.tasks.export import task_encoding

    task = case_task(case, folder)
    return task, task_encoding(task)


def case_query(case: Case, folder: Path) -> tuple[PatchTask, Query]:
    task, enc = case_encoding(case, folder)
    return task, enc.query
