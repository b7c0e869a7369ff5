"""Rewrite a residual block whose branches hold editable layers into an equivalent chain where they are editable.

Why: a :class:`~.layers.Block` is one step of the chain, so the layers of its branches have no position of their own
for `edit layer` to name, and the patch encoder (which walks the chain) could not give them unknowns.  Rather than
teach every consumer about positions inside blocks, the importer rewrites such a block, exactly, into a chain of
layers every consumer already understands:

1. a fork ``x -> [x; x; ...]`` (one copy per branch);
2. each branch's layers before its first editable one, per slice (a concat block whose other branches only select
   their own slice, so their values are carried through any ReLU exactly);
3. per editable layer, a :class:`~.layers.Lifted` layer acting on its branch's slice, followed by the branch's
   next layers up to its next editable one (again a concat block over the slices);
4. the merge: a sum of the slices (``Add``), or nothing (``Concat``: the slices already stand side by side, in the
   order of the node's inputs).

Blocks without an editable layer stay as they are.  The rewritten chain computes the same function (the importer's
self-check compares it with onnxruntime) and keeps every parameter's :class:`~.layers.ParamRef`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .layers import Block, Layer, Lifted, Linear
from .ops import is_editable, out_size

__all__ = ["lift_block"]


def _chain_out(layers: list[Layer], n: int) -> int:
    for layer in layers:
        n = out_size(layer, n)
    return n


def _select(sizes: list[int], i: int, name: str) -> Linear:
    """The slice of branch ``i`` out of the side-by-side vector."""
    start, total = int(sum(sizes[:i])), int(sum(sizes))
    W = sp.csr_matrix((np.ones(sizes[i]), (np.arange(sizes[i]), start + np.arange(sizes[i]))),
                      shape=(sizes[i], total))
    return Linear(W=W, b=np.zeros(sizes[i]), name=f"{name}.slice{i}", op="Slice")


def _per_slice(steps: dict[int, list[Layer]], sizes: list[int], name: str) -> tuple[Block, list[int]]:
    """A concat block applying ``steps[i]`` to slice ``i`` (other slices pass), and the new slice sizes."""
    branches = [[_select(sizes, i, name)] + steps.get(i, []) for i in range(len(sizes))]
    new = [_chain_out(steps.get(i, []), sizes[i]) for i in range(len(sizes))]
    return Block(branches=branches, merge="concat", name=name), new


def lift_block(branches: list[list[Layer]], merge: str, name: str, n: int) -> list[Layer]:
    """The layers replacing a block of ``branches`` over an input of size ``n`` (see the module docstring);
    ``[Block(...)]`` itself when no branch holds an editable layer."""
    if not any(is_editable(layer) for branch in branches for layer in branch):
        return [Block(branches=branches, merge=merge, name=name)]
    m = len(branches)
    # each branch as [P0, L1, P1, L2, P2, ...]: runs of plain layers between its editable layers
    runs: list[list[list[Layer]]] = []
    edits: list[list[Layer]] = []
    for branch in branches:
        plain: list[list[Layer]] = [[]]
        lifted: list[Layer] = []
        for layer in branch:
            if is_editable(layer):
                lifted.append(layer)
                plain.append([])
            else:
                plain[-1].append(layer)
        runs.append(plain)
        edits.append(lifted)
    fork = sp.vstack([sp.identity(n, format="csr")] * m, format="csr")
    out: list[Layer] = [Linear(W=fork, b=np.zeros(m * n), name=f"{name}.fork", op="Fork")]
    sizes = [n] * m
    if any(runs[i][0] for i in range(m)):
        block, sizes = _per_slice({i: runs[i][0] for i in range(m)}, sizes, f"{name}.pre")
        out.append(block)
    for i in range(m):
        for t, layer in enumerate(edits[i]):
            before, after = int(sum(sizes[:i])), int(sum(sizes[i + 1:]))
            out.append(Lifted(inner=layer, before=before, after=after))
            sizes[i] = out_size(layer, sizes[i])
            if runs[i][t + 1]:
                block, sizes = _per_slice({i: runs[i][t + 1]}, sizes, f"{name}.{layer.name}.after")
                out.append(block)
    if merge == "add":
        total = int(sum(sizes))
        W = sp.hstack([sp.identity(sizes[0], format="csr")] * m, format="csr")
        assert W.shape[1] == total
        out.append(Linear(W=W, b=np.zeros(sizes[0]), name=f"{name}.sum", op="Add"))
    return out
