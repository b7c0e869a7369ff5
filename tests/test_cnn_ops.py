"""Convolutional, pooled and batch-normalised networks through the operator table: import (lowering checked
against onnxruntime), sound bounds, and verification whose verdicts agree with a plain MILP and dense sampling,
with every counterexample re-run in onnxruntime.  The models are tiny and built in tiny_cnns.py (never trained)."""

from __future__ import annotations

import numpy as np
import pytest

import tiny_cnns
from patchlang.compile import goals as G
from patchlang.compile.bounds import (backward_bounds, forward_bounds, interval_bounds, relu_network,
                                      spec_lower_bounds)
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
from patchlang.model.ir import Linear, MaxPool
from patchlang.model.onnx_import import load_onnx
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.tasks.verify import verify_cases

NAMES = sorted(tiny_cnns.BUILDERS)


def _load(tmp_path, name: str, seed: int = 0):
    return load_onnx(tiny_cnns.save(tiny_cnns.BUILDERS[name](seed), tmp_path / f"{name}_{seed}.onnx"))


def _ort(net, x):
    import onnxruntime as ort

    s = ort.InferenceSession(net.source_path, providers=["CPUExecutionProvider"])
    return s.run(None, {net.input_name: x.reshape((-1, *net.input_shape)).astype(np.float32)})[0]


def _cnn_program(tmp_path, n_points: int, src: str):
    """The seeded conv-relu-conv CNN as `cnn.onnx` and ``n_points`` uniform inputs as `c.npy` beside ``src``,
    loaded as a program (the points are returned for the test's own checks)."""
    from patchlang.api import load_program_text

    tiny_cnns.save(tiny_cnns.conv_relu_conv(4), tmp_path / "cnn.onnx")
    points = np.random.default_rng(4).uniform(0, 1, (n_points, 1, 6, 6)).astype(np.float32)
    np.save(tmp_path / "c.npy", points)
    return load_program_text(src, tmp_path, filename=str(tmp_path / "spec.patch")), points


@pytest.mark.parametrize("name", NAMES)
def test_lowered_network_matches_onnxruntime(tmp_path, name):
    """No opaque prefix: every op is in the table, and the float64 IR computes what onnxruntime computes."""
    net = _load(tmp_path, name, 1)
    assert net.prefix is None
    assert any(isinstance(l, Linear) and l.op == "Conv" for l in net.layers)
    x = np.random.default_rng(0).uniform(-1, 1, (64, net.input_size)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), _ort(net, x), atol=1e-5)


def test_conv_matrix_remembers_kernel_entries(tmp_path):
    """Weight sharing: every stored entry of the convolution's matrix is one kernel entry, by index."""
    import onnx
    from onnx import numpy_helper

    net = _load(tmp_path, "conv_maxpool")
    conv = net.layers[0]
    kernel = {t.name: numpy_helper.to_array(t) for t in onnx.load(net.source_path).graph.initializer}["c1.w"]
    assert conv.kernel_index is not None and conv.weight_ref.initializer == "c1.w"
    np.testing.assert_array_equal(conv.W.data, kernel.reshape(-1)[conv.kernel_index].astype(np.float64))
    # groups=2: an output channel of group 0 never reads input channel 1 (flat indices 25..49)
    rows = conv.W[:8].tocoo()  # output channels 0 and 1 (2x2 positions each) belong to group 0
    assert rows.col.max() < 25
    assert isinstance(net.layers[2], MaxPool) and net.layers[2].windows.shape == (16, 4)


@pytest.mark.parametrize("name", NAMES)
def test_bounds_contain_dense_samples(tmp_path, name):
    net = _load(tmp_path, name, 2)
    rn = relu_network(net)
    rng = np.random.default_rng(5)
    centre = rng.uniform(-0.5, 0.5, net.input_size)
    lo, hi = centre - 0.1, centre + 0.1
    X = rng.uniform(lo, hi, (4000, net.input_size))
    corners = np.where(rng.uniform(size=(500, net.input_size)) < 0.5, lo, hi)
    X = np.vstack([X, corners])
    np.testing.assert_allclose(rn.forward(X), net.forward_suffix(X), atol=1e-9)
    fb = forward_bounds(rn, lo[None], hi[None], refine=True)
    bb = backward_bounds(rn, lo[None], hi[None])
    ib = interval_bounds(rn, lo[None], hi[None])
    h = X
    for k in range(rn.n_hidden):
        z = h @ rn.Ws[k].T + rn.bs[k]
        for l, u in ((fb.lower[k], fb.upper[k]), (bb.lower[k], bb.upper[k]), ib[k]):
            assert np.all(z >= l - 1e-9) and np.all(z <= u + 1e-9)
        h = np.maximum(z, 0.0)
    C = np.eye(rn.output_size)
    lb, _, _, _ = spec_lower_bounds(rn, C, np.zeros(rn.output_size), lo[None], hi[None], bb)
    assert np.all(rn.forward(X) >= lb - 1e-9)


@pytest.mark.parametrize("name,seed", [(n, s) for n in NAMES for s in range(2)])
def test_verdicts_agree_with_milp_and_sampling(tmp_path, name, seed):
    """`y[k] <= t` with t around the sampled peak over a small box: the verdict (split/BaB, with falsification)
    agrees with one plain MILP, never contradicts sampling, and a violation re-runs in onnxruntime."""
    net = _load(tmp_path, name, 10 + seed)
    rn = relu_network(net)
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.5, 0.5, net.input_size)
    eps = 0.05 if name == "residual" else 0.15  # the deeper residual net has hundreds of open ReLUs at 0.15
    lo, hi = centre - eps, centre + eps
    X = rng.uniform(lo, hi, (20000, net.input_size))
    Y = net.forward_suffix(X)
    k = seed % rn.output_size
    peak = Y[:, k].max()
    for t in (peak + 0.3 * (abs(peak) + 0.1), peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(rn.output_size)[k], "<=", t, 0.0)]], rn.output_size)
        case = RegionCase(lo, hi, spec)
        verdict = verify_cases(net, [case], timeout=60, seed=seed, strategy="relu-split")
        milp = HighsBackend().solve(encode_region_query(rn, lo, hi, spec, None).query, SolveOptions(time_limit=60))
        if verdict.status == "holds":
            assert not np.any(Y[:, k] > t)
            assert milp.status == INFEASIBLE
        else:
            assert verdict.status == "violated"
            assert milp.status != INFEASIBLE
            x32 = verdict.x32.reshape(1, -1)
            assert np.all(x32 >= lo) and np.all(x32 <= hi)
            assert _ort(net, x32)[0, k] > t  # the counterexample re-runs in onnxruntime
        if np.any(Y[:, k] > t):
            assert verdict.status == "violated"


# ---------------------------------------------------------------------------------------------- editing convolutions
def _patch_spec(tmp_path, builder, seed: int, edit: str, n_keep: int = 5):
    """A spec moving one point to its runner-up label while ``n_keep`` others keep theirs; returns (program
    result, network, points)."""
    from patchlang.api import load_program_text, run_program
    from patchlang.tasks.patch import RunOptions

    path = tiny_cnns.save(builder(seed), tmp_path / "cnn.onnx")
    net = load_onnx(path)
    X = np.random.default_rng(seed).uniform(-1, 1, (n_keep + 1, *net.input_shape)).astype(np.float32)
    np.save(tmp_path / "pts.npy", X)
    y = net.forward(X.astype(np.float64))
    target = int(np.argsort(y[0])[-2])
    src = (f'model net = "cnn.onnx"\npoints pts = "pts.npy"\npatch fix on net {{\n    {edit}\n'
           f'    keep pts[1:{n_keep + 1}]\n    change pts[0] to {target}\n    minimize linf\n'
           f'    save "out/cnn_patched.onnx"\n}}\n')
    program = load_program_text(src, tmp_path, filename=str(tmp_path / "spec.patch"))
    return run_program(program, RunOptions()), net, X, target


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return m, {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


@pytest.mark.parametrize("builder,edit,cls", [
    (tiny_cnns.conv_then_dense, 'edit layer "conv1" weights', "LP"),
    (tiny_cnns.conv_relu_conv, 'edit layer "conv2" weights and biases', "MILP"),
    (tiny_cnns.conv_relu_conv, 'edit layer "conv1" weights rows [1]', "MILP"),
    (tiny_cnns.residual, 'edit layer "conv1" biases', "MILP"),  # through a residual Add and a Concat block
])
def test_conv_edit_moves_kernel_entries_and_keeps_the_graph(tmp_path, builder, edit, cls):
    """One unknown per kernel entry (shared by every position): the patched file has the same nodes, only the
    kernel (and bias) initializers change, and onnxruntime on it agrees with the goals."""
    result, net, X, target = _patch_spec(tmp_path, builder, 3, edit)
    task = result.tasks[0]
    assert task.problem_class == cls, task.class_reason
    assert task.status == "patched", task.message
    (label, delta), *rest = task.deltas
    k = net.find_affine(label.split(".")[0])
    kind = "weights" if label.endswith("weight") else "biases"
    assert delta.shape == net.params(k, kind).shape  # the kernel's shape (or one bias per channel)
    assert delta.shape == (net.affine(k).kernel.shape if kind == "weights" else net.affine(k).kernel.shape[:1])
    if "rows 1" in edit:
        assert np.all(delta[0] == 0)  # output channel 0 may not move
    before, b_init = _initializers(net.source_path)
    after, a_init = _initializers(tmp_path / "out" / "cnn_patched.onnx")
    assert [(n.op_type, n.name, list(n.input)) for n in after.graph.node] == \
        [(n.op_type, n.name, list(n.input)) for n in before.graph.node]
    changed = {k for k in b_init if not np.array_equal(b_init[k], a_init[k])}
    assert changed and changed <= {"c1.w", "c1.b", "c2.w", "c2.b"}
    y = _ort(load_onnx(str(tmp_path / "out" / "cnn_patched.onnx")), X)
    assert np.argmax(y[0]) == target
    assert np.array_equal(np.argmax(y[1:], axis=1), np.argmax(net.forward(X[1:].astype(np.float64)), axis=1))


def test_unbounded_op_is_pl300_naming_node_and_op(tmp_path):
    """Softplus is not in the table: the network still imports (the Softplus and what precedes it run
    concretely), but verification refuses with PL300 naming the node, never a traceback.  (Sigmoid and Tanh are
    in the table now, bounded for `verify` only: tests/test_smooth_ops.py.)"""
    import onnx

    from patchlang.errors import PatchlangError

    model = tiny_cnns.conv_relu_conv(0)
    for node in model.graph.node:
        if node.name == "relu1":
            node.op_type, node.name = "Softplus", "squash"
    onnx.save(model, tmp_path / "sig.onnx")
    net = load_onnx(str(tmp_path / "sig.onnx"))
    assert net.prefix is not None and [l.op for l in net.layers if isinstance(l, Linear)] == ["Conv"]
    with pytest.raises(PatchlangError) as err:
        relu_network(net)
    assert err.value.code == "PL300" and "Softplus node 'squash'" in err.value.message


def test_verify_spec_on_a_cnn(tmp_path):
    """The issue's first complaint: `verify` on a small CNN (Conv + ReLU twice, then dense) used to stop with
    "starts with operations that are not piecewise linear"; now a small ball holds and a large one is violated
    with a counterexample that onnxruntime confirms."""
    from patchlang.api import run_task
    from patchlang.tasks.patch import RunOptions

    src = ('model net = "cnn.onnx"\npoints c = "c.npy"\n'
           "property small { input within linf 0.001 of c ensure label stays }\n"
           "property big { input within linf 1 of c ensure label stays }\n"
           "verify net satisfies small\n"
           'verify net satisfies big save "cex.npy"\n')
    program, X = _cnn_program(tmp_path, 1, src)
    small, big = (run_task(t, RunOptions()) for t in program.tasks)
    assert small.status == "holds", small.message
    assert big.status == "violated", big.message
    net = program.models["net"].net
    cex = np.load(tmp_path / "cex.npy").reshape(1, -1)
    assert np.max(np.abs(cex - X.reshape(1, -1))) <= 1 + 1e-6
    assert np.argmax(_ort(net, cex)[0]) != np.argmax(_ort(net, X.reshape(1, -1))[0])


def test_concat_off_the_channel_axis_stays_opaque(tmp_path):
    """A Concat along the height axis is not a block the table knows: it (and everything before it) is the
    opaque prefix; the dense head is still editable, and verify names the node (PL300)."""
    from onnx import helper

    from patchlang.errors import PatchlangError

    from onnx import numpy_helper

    model = tiny_cnns.residual(0)
    for node in model.graph.node:
        if node.op_type == "Concat":
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("axis", 2))
    rng = np.random.default_rng(1)
    shapes = {"c4.w": (2, 2, 1, 1), "c4.b": (2,), "fc.w": (3, 100)}  # both branches with 2 channels: (2, 10, 5)
    for t in model.graph.initializer:
        if t.name in shapes:
            t.CopyFrom(numpy_helper.from_array(rng.normal(size=shapes[t.name]).astype(np.float32), t.name))
    path = tiny_cnns.save(model, tmp_path / "cat2.onnx")
    net = load_onnx(path)
    assert net.prefix is not None and net.layer_names() == ["fc"]
    x = np.random.default_rng(0).uniform(-1, 1, (8, net.input_size)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), _ort(net, x), atol=1e-5)
    with pytest.raises(PatchlangError) as err:
        relu_network(net)
    assert err.value.code == "PL300" and "Concat node 'concat'" in err.value.message and "axis 2" in err.value.message


def test_repair_a_cnn_by_its_convolution_biases(tmp_path):
    """Counterexample-guided repair moving one bias per output channel of a hidden convolution, ending in a proof;
    the written file keeps its graph and onnxruntime agrees that the counterexamples are gone."""
    from patchlang.api import run_task
    from patchlang.tasks.patch import RunOptions

    src = ('model net = "cnn.onnx"\npoints c = "c.npy"\n'
           "property p { input within linf 0.035 of c[0:1] ensure label stays }\n"
           'repair net for p {\n    edit layer "conv2" biases\n    keep c[1:3]\n    minimize linf\n'
           '    save "out/fixed.onnx"\n}\n')
    program, C = _cnn_program(tmp_path, 3, src)
    result = run_task(program.tasks[0], RunOptions())
    assert result.status == "repaired", result.message
    (label, delta), = result.deltas
    assert label == "conv2.bias" and delta.shape == (3,) and np.any(delta != 0)
    fixed = load_onnx(str(tmp_path / "out" / "fixed.onnx"))
    X = C[0].reshape(1, -1) + np.random.default_rng(0).uniform(-0.035, 0.035, (2000, 36))
    assert np.all(np.argmax(_ort(fixed, X.astype(np.float32)), axis=1) == np.argmax(_ort(fixed, C[:1].reshape(1, -1)), axis=1))
