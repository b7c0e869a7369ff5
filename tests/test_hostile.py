"""Hostile and careless input (issue 10): no wrong "all good", no clobbered input, no crash, no hang.

Every case runs the CLI on a workspace of copied models and data, and asserts what a user must be able to rely on:
the right exit code (0 all holds, 1 a check failed, 2 spec or usage error, 3 inconclusive, never 101), no
traceback, every input file byte-for-byte unchanged (hashed before and after), and, where it matters, the PL code
and the words of the message.  Cases that could hang (FIFOs, devices) run in a subprocess with a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from patchlang.cli import main

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
TINY = REPO / "examples" / "verify" / "tiny.onnx"

HEAD = 'model net = "digits_mlp.onnx"\npoints test = "digits_test.npz"\n'
TOY = 'model toy = "toy.onnx"\npoints p = [[3, 4]]\n'
TINY_HEAD = 'model net = "tiny.onnx"\npoints e = [[0, 0], [0.5, -0.5]] labels [1, 1]\n'
FIX = "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n}\n"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    for f in ("toy.onnx", "digits_mlp.onnx", "digits_test.npz"):
        shutil.copy(MODELS / f, tmp_path / f)
    shutil.copy(TINY, tmp_path / "tiny.onnx")
    np.save(tmp_path / "pts.npy", np.zeros((2, 2)))
    (tmp_path / "sub").mkdir()
    return tmp_path


def hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and "out" not in p.relative_to(root).parts:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(ws: Path, capsys, spec: str | None, *argv: str, expect: int, words: tuple[str, ...] = (),
        name: str = "spec.patch") -> str:
    """Run ``patchlang ARGV`` (``{spec}`` in argv is the spec path) and check the invariants; the output."""
    path = ws / name
    if spec is not None:
        path.write_text(spec, encoding="utf-8")
    before = hashes(ws)
    code = main([a.replace("{spec}", str(path)) for a in argv])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert code != 101 and "Traceback" not in text, text
    assert code == expect, text
    after = hashes(ws)
    assert {k: v for k, v in after.items() if k in before} == before, "an input file was changed"
    for w in words:
        assert w in text, f"{w!r} not in:\n{text}"
    return text


# ============================================================================ wrong success or lost data

SPEC_ERRORS = {
    "self-referencing point set": (HEAD + "points q = q where label == 1\n" + FIX +
                                   "assert accuracy(f, q) >= 0.9\n", ("PL218", "defined from itself")),
    "forward reference": (HEAD + "points a = b\npoints b = test[0:3]\n", ("PL218", "before its declaration")),
    "cyclic references": (HEAD + "points a = b\npoints b = a\n", ("PL218",)),
    "verify save onto the model": (TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1]  ensure y[2] <= 1.5 }\n"
                                   'verify net satisfies p save "tiny.onnx"\n', ("PL242",)),
    "verify save onto a point file": (TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
                                      'points z = "pts.npy"\nverify net satisfies p save "pts.npy"\n',
                                      ("PL242", "refusing to overwrite an input file")),
    "verify save onto a later-declared point file": (
        TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
        'verify net satisfies p save "pts.npy"\npoints z = "pts.npy"\n', ("PL242",)),
    "verify save onto the spec": (TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
                                  'verify net satisfies p save "spec.patch"\n', ("PL242",)),
    "verify save into a directory": (TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
                                     'verify net satisfies p save "sub"\n', ("PL242",)),
    "verify save into a directory named .npy": (
        TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
        'verify net satisfies p save "sub.npy"\n', ("PL242", "directory")),
    "two tasks save to one path": (HEAD + 'patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n'
                                   '  save "out/a.onnx"\n}\npatch g on net {\n  edit layer -1 biases\n'
                                   '  change test[1] to 3\n  save "out/a.onnx"\n}\n', ("PL242", "written there too")),
    "patch save onto a hard link of the model": (HEAD + 'patch f on net {\n  edit layer -1 biases\n'
                                                 '  change test[0] to 3\n  save "link.onnx"\n}\n', ("PL242",)),
    "box vector shorter than the input": (TINY_HEAD + "property q { input box lo [2.5] hi [3.5] ensure y[2] <= 1.5 }\n"
                                          "verify net satisfies q\n", ("PL265", "1 input bound", "takes 2")),
    "box bounds of different lengths": (TINY_HEAD + "property q { input box lo [2.5] hi [3.5, 4.5] "
                                        "ensure y[2] <= 1.5 }\n", ("PL261",)),
    "infinite box bound": (TINY_HEAD + "property q { input box lo [2.5, 0] hi [3.5, 1e400] ensure y[2] <= 1.5 }\n",
                           ("PL101", "out of range")),
    "vnnlib with fewer inputs": (TINY_HEAD + 'property v = vnnlib "one.vnnlib"\nverify net satisfies v\n',
                                 ("PL265", "VNN-LIB file declares 1", "takes 2")),
    "shared weight tensor": ('model net = "shared.onnx"\npoints p = [[1, 1]]\npatch f on net {\n'
                             "  edit layer 0 weights\n  require p: y[1] >= y[0] + 0.5\n  bound linf <= 5\n}\n",
                             ("PL234", "`W`")),
}


def _extra_files(ws: Path) -> None:
    (ws / "one.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                                   "(declare-const Y_2 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
                                   "(assert (>= Y_2 2))\n")
    os.link(ws / "digits_mlp.onnx", ws / "link.onnx")
    (ws / "sub.npy").mkdir()
    from onnx import helper

    import onnx
    from conftest import make_model

    w = np.array([[1.0, 0.5], [-0.5, 1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W", "b"], ["y"], transB=1)]
    onnx.save(make_model(nodes, {"W": w, "b": np.zeros(2, np.float32)}, [1, 2]), str(ws / "shared.onnx"))


@pytest.mark.parametrize("case", sorted(SPEC_ERRORS))
@pytest.mark.parametrize("command", ["check", "run"])
def test_spec_errors_wrong_success_or_lost_data(ws, capsys, case, command):
    _extra_files(ws)
    spec, words = SPEC_ERRORS[case]
    cli(ws, capsys, spec, command, "{spec}", expect=2, words=words)
    assert not (ws / "out").exists()


@pytest.mark.parametrize("flag,target", [("--json", "digits_mlp.onnx"), ("--json", "spec.patch"),
                                         ("--junit", "digits_test.npz"), ("--json", "sub"),
                                         ("--plots", "digits_mlp.onnx")])
def test_reports_never_overwrite_inputs(ws, capsys, flag, target):
    cli(ws, capsys, HEAD + FIX, "run", "{spec}", flag, str(ws / target), expect=2, words=("refusing",))


def test_json_and_junit_on_one_path_refused(ws, capsys):
    cli(ws, capsys, HEAD + FIX, "run", "{spec}", "--json", str(ws / "r.xml"), "--junit", str(ws / "r.xml"),
        expect=2, words=("written there too",))


@pytest.mark.parametrize("target", ["digits_mlp.onnx", "spec.patch", "digits_test.npz", "sub"])
def test_export_never_overwrites_inputs(ws, capsys, target):
    cli(ws, capsys, HEAD + FIX, "export", "{spec}", "--task", "f", "--format", "lp", "-o", str(ws / target),
        expect=2, words=("refusing",))


def test_export_through_a_symlink_to_the_model_refused(ws, capsys):
    (ws / "alias.lp").symlink_to(ws / "digits_mlp.onnx")
    cli(ws, capsys, HEAD + FIX, "export", "{spec}", "--task", "f", "--format", "lp", "-o", str(ws / "alias.lp"),
        expect=2, words=("refusing to overwrite an input model",))


# ============================================================================ crashes and hangs

def _bad_paths(ws: Path) -> dict[str, str]:
    (ws / "loop_a.onnx").symlink_to(ws / "loop_b.onnx")
    (ws / "loop_b.onnx").symlink_to(ws / "loop_a.onnx")
    (ws / "empty.npy").write_bytes(b"")
    return {"directory": "sub", "symlink loop": "loop_a.onnx", "NUL byte": "a\\0b.onnx",
            "over-long path": "a" * 5000 + ".onnx", "over-long name": "d/" + "b" * 300 + ".onnx",
            "device": "/dev/zero", "null device": "/dev/null"}


@pytest.mark.parametrize("what", ["directory", "symlink loop", "NUL byte", "over-long path", "over-long name",
                                  "device", "null device"])
@pytest.mark.parametrize("kind", ["model", "points", "vnnlib"])
def test_unreadable_inputs_are_spec_errors(ws, capsys, what, kind):
    bad = _bad_paths(ws)[what]
    spec = {"model": f'model net = "{bad}"\n',
            "points": f'model net = "tiny.onnx"\npoints p = "{bad}"\n',
            "vnnlib": f'model net = "tiny.onnx"\nproperty v = vnnlib "{bad}"\n'}[kind]
    if what == "device":  # a regression here would read /dev/zero forever: never in the test process
        (ws / "spec.patch").write_text(spec)
        proc = subprocess.run([sys.executable, "-m", "patchlang.cli", "check", str(ws / "spec.patch")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "PL217" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        return
    text = cli(ws, capsys, spec, "check", "{spec}", expect=2, words=("PL2",))
    if what == "null device":
        assert "directory" not in text and "device" in text


def test_zero_byte_npy(ws, capsys):
    (ws / "empty.npy").write_bytes(b"")
    cli(ws, capsys, 'model net = "tiny.onnx"\npoints p = "empty.npy"\n', "check", "{spec}", expect=2,
        words=("PL212", "empty"))


def test_unreadable_file(ws, capsys, monkeypatch):
    (ws / "secret.npy").write_bytes((ws / "pts.npy").read_bytes())
    os.chmod(ws / "secret.npy", 0)
    if os.geteuid() == 0:  # root reads whatever the permissions say: make the access check see what a user would
        import patchlang.guard as guard

        real = os.access
        monkeypatch.setattr(guard.os, "access", lambda p, m: False if str(p).endswith("secret.npy") else real(p, m))
    cli(ws, capsys, 'model net = "tiny.onnx"\npoints p = "secret.npy"\n', "check", "{spec}", expect=2,
        words=("PL217", "permission denied"))


@pytest.mark.parametrize("kind", ["model", "points", "spec", "external data"])
def test_fifo_never_hangs(ws, kind):
    """A named pipe nobody writes to: a plain open() would block forever. Refused at once, in a subprocess."""
    fifo = ws / ("pipe.onnx" if kind == "model" else "pipe.npy" if kind == "points" else "pipe.patch")
    if kind == "external data":
        import onnx

        onnx.save_model(onnx.load(str(ws / "toy.onnx")), str(ws / "pipe.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="pipe.data", size_threshold=0)
        fifo = ws / "pipe.data"
        fifo.unlink()
        kind = "model"
    os.mkfifo(fifo)
    spec = ws / "spec.patch"
    spec.write_text('model net = "pipe.onnx"\n' if kind == "model" else
                    'model net = "tiny.onnx"\npoints p = "pipe.npy"\n')
    target = fifo if kind == "spec" else spec
    proc = subprocess.run([sys.executable, "-m", "patchlang.cli", "check", str(target)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "FIFO" in proc.stderr and "Traceback" not in proc.stderr


CRASHERS = {
    "empty keep allowed with PL250": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                                      "  keep test[0:50] where label == 3 and label == 4\n}\n", 0, ("PL250",)),
    "every goal empty": (HEAD + "patch f on net {\n  edit layer -1 biases\n"
                         "  keep test[0:50] where label == 3 and label == 4\n}\n", 2, ("PL251",)),
    "ball around an empty set": (TINY_HEAD + "points none = e where label == 5\n"
                                 "property p { input within linf 0.1 of none  ensure y[2] <= 1.5 }\n"
                                 "verify net satisfies p\n", 2, ("PL263", "selects no points")),
    "rows step zero": (HEAD + "patch f on net {\n  edit layer -1 weights rows [::0]\n  change test[0] to 3\n}\n", 2,
                       ("PL221", "step cannot be 0")),
    "rows empty slice": (HEAD + "patch f on net {\n  edit layer -1 weights rows [1:0]\n  change test[0] to 3\n}\n",
                         2, ("PL221", "picks no row")),
    "300 nested parentheses": (TOY + "points q = " + "(" * 300 + "p" + ")" * 300 + "\n", 2, ("PL102",)),
    "string time limit": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                          '  using highs (time_limit = "abc")\n}\n', 2, ("PL245", "time_limit")),
    "string seed": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                    '  using highs (seed = "x")\n}\n', 2, ("PL245",)),
    "fractional threads": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                           "  using highs (threads = 1.5)\n}\n", 2, ("PL245",)),
    "negative radius": (TINY_HEAD + "property p { input within linf -0.1 of e  ensure y[2] <= 1.5 }\n", 2,
                        ("PL262",)),
    "huge norm weight": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                         "  minimize 1e400 linf\n}\n", 2, ("PL101",)),
    "huge margin": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n  margin 1e400\n}\n", 2,
                    ("PL101",)),
    "negative time limit": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                            "  using highs (time_limit = -5)\n}\n", 2, ("PL245",)),
    "negative iterations": (TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
                            "repair net for p {\n  edit layer -1 biases\n  limit iterations -3\n}\n", 2, ("PL241",)),
    "negative verify timeout": (TINY_HEAD + "property p { input box lo [0, 0] hi [1, 1] ensure y[2] <= 1.5 }\n"
                                "verify net satisfies p timeout -5\n", 2, ("PL241",)),
    "huge integer": (HEAD + "points q = test[" + "9" * 40 + "]\n", 2, ("PL101",)),
    "patch with marabou": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                           "  using marabou\n}\n", 2, ("PL267", "Marabou")),
    "option given twice": (HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n"
                           "  using highs (seed = 1, seed = 2)\n}\n", 2, ("PL240",)),
}


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_former_crashers(ws, capsys, case):
    spec, code, words = CRASHERS[case]
    cli(ws, capsys, spec, "check", "{spec}", expect=0 if code == 0 else code, words=words)
    cli(ws, capsys, None, "run", "{spec}", expect=code, words=words)


def test_empty_keep_is_left_out_and_the_patch_checked(ws, capsys):
    text = cli(ws, capsys, CRASHERS["empty keep allowed with PL250"][0], "run", "{spec}", "--json",
               str(ws / "out" / "r.json"), expect=0)
    assert "left out" in text
    report = json.loads((ws / "out" / "r.json").read_text())
    assert [c["text"] for c in report["tasks"][0]["checks"]] == ["change test[0] to 3"]


# ============================================================================ minor

def test_nan_weights_refused(ws, capsys):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(ws / "toy.onnx"))
    t = m.graph.initializer[0]
    a = numpy_helper.to_array(t).copy()
    a.flat[0] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    onnx.save(m, str(ws / "nan.onnx"))
    cli(ws, capsys, 'model net = "nan.onnx"\n', "check", "{spec}", expect=2, words=("PL211", "NaN"))


def test_check_warns_that_verify_of_an_unencodable_model_proves_nothing(ws, capsys):
    """A network with an opaque (non piecewise-linear) prefix cannot be bounded: `check` must not promise a proof
    (PL380 warning) and `run` searches it as a black box: unknown here (softplus(1) < 5), never holds."""
    import onnx
    from onnx import helper

    from conftest import make_model

    nodes = [helper.make_node("Softplus", ["x"], ["s"]), helper.make_node("Gemm", ["s", "W", "b"], ["y"], transB=1)]
    onnx.save(make_model(nodes, {"W": np.eye(2, dtype=np.float32), "b": np.zeros(2, np.float32)}, [1, 2]),
              str(ws / "sig.onnx"))
    spec = ('model net = "sig.onnx"\nproperty p { input box lo [0, 0] hi [1, 1] ensure y[0] <= 5 }\n'
            "verify net satisfies p\n")
    cli(ws, capsys, spec, "check", "{spec}", expect=0, words=("PL380", "cannot be proven", "never holds"))
    cli(ws, capsys, None, "run", "{spec}", expect=3, words=("unknown", "no proof was attempted"))


def _npz_without_x(path: Path) -> None:
    np.savez(path, imgs=np.zeros((2, 2)), lbl=np.zeros(2))


@pytest.mark.parametrize("name,write,says,never", [
    ("d.npy.gz", lambda p: p.write_bytes(b"this is not gzip at all"), "not gzip", "pickle"),
    ("t.npy", lambda p: p.write_bytes(b"hello, this is text"), "not a .npy file", "pickle"),
    ("d.npz", _npz_without_x, "with x =", "x_key"),  # the spec's option, not an internal parameter name
])
def test_messages_do_not_mislead(ws, capsys, name, write, says, never):
    write(ws / name)
    text = cli(ws, capsys, f'model net = "tiny.onnx"\npoints p = "{name}"\n', "check", "{spec}", expect=2,
               words=(says,))
    assert never not in text


def test_utf8_bom_is_not_a_syntax_error(ws, capsys):
    (ws / "spec.patch").write_bytes("\ufeff".encode() + (HEAD + FIX).encode())
    cli(ws, capsys, None, "check", "{spec}", expect=0)


def test_negative_cli_time_limit(ws, capsys):
    cli(ws, capsys, HEAD + FIX, "run", "{spec}", "--time-limit", "-1", expect=2, words=("--time-limit",))


# ============================================================================ reports for every outcome

def test_json_and_junit_after_a_spec_error(ws, capsys):
    cli(ws, capsys, HEAD + "points q = q\n", "run", "{spec}", "--json", str(ws / "out" / "r.json"),
        "--junit", str(ws / "out" / "r.xml"), expect=2)
    report = json.loads((ws / "out" / "r.json").read_text())
    assert report["outcome"] == "spec error" and report["exit_code"] == 2 and report["tasks"] == []
    assert "PL218" in report["errors"][0]
    assert str(ws / "digits_mlp.onnx") in report["inputs"]
    xml = (ws / "out" / "r.xml").read_text()
    assert 'errors="1"' in xml and "spec error" in xml


def test_json_after_an_internal_error_lists_finished_tasks(ws, capsys, monkeypatch):
    import patchlang.api as api

    real = api.run_task

    def flaky(task, options):
        if task.name == "g":
            raise RuntimeError("boom")
        return real(task, options)

    monkeypatch.setattr(api, "run_task", flaky)
    spec = HEAD + FIX + FIX.replace("patch f", "patch g")
    code = main(["run", str(_write(ws, spec)), "--json", str(ws / "out" / "r.json")])
    capsys.readouterr()
    assert code == 101
    report = json.loads((ws / "out" / "r.json").read_text())
    assert report["outcome"] == "internal error" and report["exit_code"] == 101
    assert [t["name"] for t in report["tasks"]] == ["f"]
    assert report["not_run"] == [{"name": "g", "kind": "patch", "why": "internal error"}]
    assert "boom" in report["errors"][0]


def test_ctrl_c_reports_finished_tasks(ws, capsys, monkeypatch):
    import patchlang.api as api

    real = api.run_task

    def interrupted(task, options):
        if task.name == "g":
            raise KeyboardInterrupt
        return real(task, options)

    monkeypatch.setattr(api, "run_task", interrupted)
    spec = HEAD + FIX + FIX.replace("patch f", "patch g") + FIX.replace("patch f", "patch h")
    code = main(["run", str(_write(ws, spec)), "--json", str(ws / "out" / "r.json"), "--junit",
                 str(ws / "out" / "r.xml")])
    out = capsys.readouterr().out
    assert code == 3 and "not run" in out
    report = json.loads((ws / "out" / "r.json").read_text())
    assert report["outcome"] == "interrupted" and [t["name"] for t in report["tasks"]] == ["f"]
    assert [(n["name"], n["why"]) for n in report["not_run"]] == [("g", "interrupted"), ("h", "not started")]
    assert "skipped" in (ws / "out" / "r.xml").read_text()


def _write(ws: Path, spec: str) -> Path:
    path = ws / "spec.patch"
    path.write_text(spec)
    return path


# ============================================================================ certified "no patch"

def test_no_patch_is_certified(ws, capsys):
    spec = HEAD + ("patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n  keep test[0]\n}\n"
                   "patch h on net {\n  edit layer 0 weights\n  change test[0:3] to 3\n  bound linf <= 0.001\n}\n")
    cli(ws, capsys, spec, "run", "{spec}", "--json", str(ws / "out" / "r.json"), expect=1)
    report = json.loads((ws / "out" / "r.json").read_text())
    certs = [t["details"]["certificate"] for t in report["tasks"]]
    assert all(t["status"] == "no patch" for t in report["tasks"])
    assert certs[0]["certified"] is True and "Farkas" in certs[0]["method"]
    assert certs[1]["method"]  # certified or honestly marked, never silent


def test_farkas_check_is_exact_and_rejects_a_wrong_ray():
    import scipy.sparse as sp

    from patchlang.solvers.milp import LinearModel
    from patchlang.tasks.certify import farkas_holds

    # x0 + x1 >= 1 and x0 + x1 <= 0 over free x: infeasible, certificate y = (1, -1)
    A = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 1.0]]))
    m = LinearModel(A, np.array([1.0, -np.inf]), np.array([np.inf, 0.0]), np.full(2, -np.inf), np.full(2, np.inf),
                    np.zeros(2), np.zeros(2, bool), 0.0, 2)
    assert farkas_holds(m, np.array([1.0, -1.0]))
    assert not farkas_holds(m, np.array([1.0, -1.0 + 1e-12]))  # a ray that is only nearly one proves nothing
    assert not farkas_holds(m, np.array([1.0, 1.0]))
    feasible = LinearModel(A, np.array([0.0, -np.inf]), np.array([np.inf, 0.0]), np.full(2, -np.inf),
                           np.full(2, np.inf), np.zeros(2), np.zeros(2, bool), 0.0, 2)
    assert not farkas_holds(feasible, np.array([1.0, -1.0]))


def test_disagreeing_recheck_withdraws_no_patch(ws, capsys, monkeypatch):
    import patchlang.tasks.certify as certify

    monkeypatch.setattr(certify, "certify_infeasible",
                        lambda q, seed=0, budget=None: certify.Certificate(None, "Z3 finds a solution"))
    spec = HEAD + "patch f on net {\n  edit layer -1 biases\n  change test[0] to 3\n  keep test[0]\n}\n"
    cli(ws, capsys, spec, "run", "{spec}", expect=3, words=("disagrees",))


# ============================================================================ found by the fuzzers (regressions)

def test_onnx_with_a_tensor_of_undefined_type(ws, capsys):
    good = (MODELS / "toy.onnx").read_bytes()
    (ws / "bad.onnx").write_bytes(good[:235] + b"\x00" + good[236:])
    cli(ws, capsys, 'model net = "bad.onnx"\n', "check", "{spec}", expect=2, words=("PL211",))


@pytest.mark.parametrize("text", ["INF", "NaN\n2\n", "0\n", "2\n-1,3,4\n"])
def test_nnet_with_impossible_counts(ws, capsys, text):
    (ws / "bad.nnet").write_text(text)
    cli(ws, capsys, 'model net = "bad.nnet"\n', "check", "{spec}", expect=2, words=("PL211", "invalid NNet"))


# ============================================================================ certified "holds"

VERIFY_TINY = (TINY_HEAD + "property capped { input box lo [-1, -1] hi [1, 1]  ensure y[2] <= 1.5 }\n"
               "verify net satisfies capped timeout 60\n")


def test_holds_is_reproven_exactly(ws, capsys):
    cli(ws, capsys, VERIFY_TINY, "run", "{spec}", "--json", str(ws / "out" / "r.json"), expect=0)
    task = json.loads((ws / "out" / "r.json").read_text())["tasks"][0]
    assert task["status"] == "holds"
    assert task["details"]["certificate"]["certified"] is True and "Z3" in task["details"]["certificate"]["method"]


def test_disagreeing_recheck_withdraws_holds(ws, capsys, monkeypatch):
    import patchlang.tasks.certify as certify

    monkeypatch.setattr(certify, "certify_holds",
                        lambda net, cases, seed=0, budget=0: certify.Certificate(None, "Z3 finds an unsafe input"))
    cli(ws, capsys, VERIFY_TINY, "run", "{spec}", expect=3, words=("disagrees",))


def test_certify_holds_finds_a_real_violation(ws):
    """The exact re-check is a real check: on a violated property it finds the unsafe input."""
    from patchlang.api import load_program_text
    from patchlang.tasks.certify import certify_holds
    from patchlang.tasks.verify import property_cases

    program = load_program_text(TINY_HEAD + "property two { input box lo [0.5, -1] hi [1, -0.5] "
                                            "ensure label is not 2 }\nverify net satisfies two\n", ws)
    task = program.tasks[0]
    assert certify_holds(task.model.net, property_cases(task.prop, task.model.net)).refuted


def test_huge_labels_and_out_of_range_centre_labels(ws, capsys):
    np.save(ws / "big.npy", np.array([1e30, 2.0]))
    cli(ws, capsys, 'model net = "tiny.onnx"\npoints p = "pts.npy" with labels = "big.npy"\n', "check", "{spec}",
        expect=2, words=("PL212", "not a class number"))
    spec = (TINY_HEAD.replace("labels [1, 1]", "labels [1, 7]")
            + "property q { input within linf 0.1 of e  ensure label stays }\nverify net satisfies q\n")
    cli(ws, capsys, spec, "check", "{spec}", expect=2, words=("PL222", "label 7"))


def test_input_size_limit(ws, capsys, monkeypatch):
    import patchlang.guard as guard

    monkeypatch.setattr(guard, "MAX_INPUT_BYTES", 100)
    cli(ws, capsys, 'model net = "tiny.onnx"\n', "check", "{spec}", expect=2, words=("PL217", "PATCHLANG_MAX"))


@pytest.mark.parametrize("spec", ["sub", "missing.patch", "pts.npy"])
def test_bad_spec_paths(ws, capsys, spec):
    cli(ws, capsys, None, "check", str(ws / spec), expect=2, words=("PL001",))


def test_unknown_task_still_writes_the_report(ws, capsys):
    cli(ws, capsys, HEAD + FIX, "run", "{spec}", "--task", "nope", "--json", str(ws / "out" / "r.json"), expect=2)
    report = json.loads((ws / "out" / "r.json").read_text())
    assert report["outcome"] == "usage error" and report["exit_code"] == 2


def test_ctrl_c_while_checking_still_writes_the_report(ws, capsys, monkeypatch):
    import patchlang.api as api

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "load_program", interrupted)
    code = main(["run", str(_write(ws, HEAD + FIX)), "--json", str(ws / "out" / "r.json")])
    capsys.readouterr()
    assert code == 3
    report = json.loads((ws / "out" / "r.json").read_text())
    assert report["outcome"] == "interrupted" and report["tasks"] == []


def test_one_path_twice_by_identical_statements_and_report_onto_a_task_output(ws, capsys):
    prop = TINY_HEAD + "property p { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
    cli(ws, capsys, prop + 'verify net satisfies p save "o/c.npy"\n' * 2, "check", "{spec}", expect=2,
        words=("PL242", "written there too"))
    cli(ws, capsys, prop + 'verify net satisfies p save "o/c.npy"\n', "run", "{spec}", "--json", str(ws / "o" / "c.npy"),
        expect=2, words=("refusing to overwrite the file task",))
    repair = "repair net for p {\n  edit layer -1 biases\n  save \"o/r.onnx\"\n}\n"
    cli(ws, capsys, prop + repair * 2, "check", "{spec}", expect=2, words=("PL242",))


def test_report_after_a_syntax_error_never_overwrites_a_named_file(ws, capsys):
    cli(ws, capsys, 'model net = "digits_mlp.onnx"\npatch oops {\n', "run", "{spec}", "--json",
        str(ws / "digits_mlp.onnx"), expect=2, words=("PL100",))


@pytest.mark.parametrize("target", ["fifo", "/dev/null", "/dev/zero"])
def test_fmt_never_reads_or_replaces_a_pipe_or_device(ws, target):
    """`patchlang fmt` rewrites its input by design, but only a regular file: never blocks on a FIFO, never
    replaces /dev/null (as root, an atomic rename would)."""
    path = str(ws / "pipe.patch") if target == "fifo" else target
    if target == "fifo":
        os.mkfifo(path)
    before = os.stat(path)
    proc = subprocess.run([sys.executable, "-m", "patchlang.cli", "fmt", path], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr
    after = os.stat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
