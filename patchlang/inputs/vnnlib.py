"""VNN-LIB 1 properties: read them into input boxes plus an *unsafe* output region, and write them back.

A VNN-LIB file declares inputs ``X_i`` and outputs ``Y_j`` and asserts constraints whose conjunction describes a
**counterexample**: the property holds iff no input satisfying the input constraints produces outputs that
satisfy the output constraints.  patchlang needs that in a solver-friendly normal form, so a file becomes a
list of *cases* ``(lo, hi, unsafe)``: an input box and a DNF (OR of ANDs of linear atoms over the outputs) of
unsafe outputs.  The property holds iff it holds for every case.

Why this form: verification and repair encode one box at a time (a box is what bound propagation and the
MILP encodings need), and an unsafe DNF is exactly "violate one of these conjunctions" which the compiler
turns into one query per disjunct or into a disjunction with binaries.  Files in the wild mix the two
(``(or (and X-box1 Y-cond) (and X-box2 Y-cond))``), so the whole assertion set is expanded into DNF and then
grouped by input box.

Supported subset (everything in the VNN-COMP ACAS Xu / MNIST / CIFAR files and a bit more):
``declare-const`` of ``Real`` variables named ``X_i``/``Y_j``; ``assert`` of ``and``/``or`` trees over atoms
``(<= a b)``, ``(>= a b)``, ``(< a b)``, ``(> a b)``, ``(= a b)`` where ``a``, ``b`` are linear terms built with
``+ - * /`` from variables and numbers (``-0.5``, ``1e-3``).  Strict comparisons are read as non-strict: over
the reals the difference is a measure-zero boundary, and every VNN-COMP tool treats them the same way.  Inputs
may only be bounded variable by variable (boxes); an atom may not mix inputs and outputs.
"""

from __future__ import annotations

import gzip
import itertools
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import PatchlangError

__all__ = [
    "LinearAtom",
    "VnnlibCase",
    "VnnlibProperty",
    "parse_vnnlib",
    "parse_vnnlib_text",
    "format_vnnlib",
    "write_vnnlib",
]

# The number of conjunctions the assertions may expand to.  Real files need a handful; a file that needs
# more is pathological (an exponential DNF) and should be an error, not an out-of-memory.
MAX_DNF_TERMS = 100_000

_HELP = "see the VNN-LIB 1 format: (declare-const X_0 Real), (assert (<= X_0 0.5)), (assert (or (and ...) ...))"


# ============================================================================ public data types


@dataclass(eq=False)
class LinearAtom:
    """``sum(coeffs[j] * Y_j) op rhs`` over the network outputs; ``op`` is ``"<="`` or ``">="``.

    ``(<= Y_0 Y_1)`` is stored as ``{0: 1.0, 1: -1.0} <= 0.0``.  Variables are kept on the left and the
    operator as written, so ``(>= Y_0 3.99)`` stays ``Y_0 >= 3.99`` and reads like the file.
    """

    coeffs: dict[int, float]
    op: str
    rhs: float

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinearAtom):
            return NotImplemented
        return self.op == other.op and self.rhs == other.rhs and self.coeffs == other.coeffs

    def __str__(self) -> str:
        terms = []
        for j, c in sorted(self.coeffs.items()):
            sign = "-" if c < 0 else "+"
            mag = "" if abs(c) == 1 else f"{abs(c):g}*"
            terms.append(f"{sign} {mag}Y_{j}")
        text = " ".join(terms)
        text = text[2:] if text.startswith("+ ") else "-" + text[2:]
        return f"{text} {self.op} {self.rhs:g}"

    def lhs(self, y: np.ndarray) -> np.ndarray:
        """``sum(coeffs[j] * y[..., j])`` for one output vector or a batch ``(B, n_outputs)``."""
        y = np.asarray(y, dtype=np.float64)
        return sum((c * y[..., j] for j, c in self.coeffs.items()), start=np.zeros(y.shape[:-1]))

    def holds(self, y: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Whether the outputs satisfy the atom (within ``tol``), elementwise over a batch."""
        value = self.lhs(y)
        return value <= self.rhs + tol if self.op == "<=" else value >= self.rhs - tol


class VnnlibCase(NamedTuple):
    """One input box and the outputs that are unsafe for it: OR over ``unsafe`` of AND over each list.

    ``unsafe == [[]]`` means every output is unsafe (the file had no output constraint for this box).
    """

    lo: np.ndarray
    hi: np.ndarray
    unsafe: list[list[LinearAtom]]


@dataclass(eq=False)
class VnnlibProperty:
    """A VNN-LIB property as cases; it holds iff no case has an input in its box with unsafe outputs."""

    n_inputs: int
    n_outputs: int
    cases: list[VnnlibCase]
    source: str = "<vnnlib>"

    @property
    def input_boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The input region as a union of boxes ``(lo, hi)``, one per case."""
        return [(case.lo, case.hi) for case in self.cases]

    def __eq__(self, other: object) -> bool:
        """Structural equality: same sizes, and the same boxes (exactly) and DNFs, in the same order."""
        if not isinstance(other, VnnlibProperty):
            return NotImplemented
        return (
            (self.n_inputs, self.n_outputs, len(self.cases)) == (other.n_inputs, other.n_outputs, len(other.cases))
            and all(
                np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi) and a.unsafe == b.unsafe
                for a, b in zip(self.cases, other.cases)
            )
        )

    def __repr__(self) -> str:
        return (f"VnnlibProperty({self.source!r}, n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
                f"cases={len(self.cases)}, unsafe_disjuncts={[len(c.unsafe) for c in self.cases]})")

    def is_counterexample(self, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether input ``x`` (flattened) with outputs ``y`` violates the property, within ``tol``.

        Used to re-check every counterexample a solver claims (trust nothing).
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        for case in self.cases:
            if np.all(x >= case.lo - tol) and np.all(x <= case.hi + tol):
                if any(all(bool(atom.holds(y, tol)) for atom in conj) for conj in case.unsafe):
                    return True
        return False


# ============================================================================ grammar

_GRAMMAR = r"""
start: _command*
_command: declare | assertion

declare: "(" "declare-const" NAME NAME ")"
assertion: "(" "assert" formula ")"

?formula: atom
        | "(" "and" formula* ")"    -> conj
        | "(" "or" formula* ")"     -> disj

atom: "(" CMP term term ")"

?term: NAME                         -> var
     | NUMBER                       -> num
     | "(" "+" term+ ")"            -> add
     | "(" "-" term+ ")"            -> sub
     | "(" "*" term+ ")"            -> mul
     | "(" "/" term term ")"        -> div

CMP: "<=" | ">=" | "<" | ">" | "="
NUMBER: /[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
NAME: /[A-Za-z_][A-Za-z0-9_.]*/
COMMENT: /;[^\n]*/

%import common.WS
%ignore WS
%ignore COMMENT
"""

# How the parser's terminal names read in an error message.
_TERMINAL_WORDS = {
    "LPAR": "'('",
    "RPAR": "')'",
    "NAME": "a name",
    "NUMBER": "a number",
    "CMP": "a comparison (<=, >=, <, >, =)",
    "$END": "the end of the file",
}


class _Located(Exception):
    """A semantic error found while building the tree, with the position of the offending token."""

    def __init__(self, message: str, line: int, column: int):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


# ---------------------------------------------------------------------------- tree values
# The in-parser transformer builds these directly, so a 3072-input CIFAR file never becomes a lark Tree.

Pos = tuple[int, int]


@dataclass
class _Lin:
    """A linear term ``sum(coeffs[name] * name) + const``; ``pos`` is where it starts (for errors)."""

    coeffs: dict[str, float]
    const: float
    pos: Pos

    def scaled(self, k: float) -> _Lin:
        return _Lin({v: k * c for v, c in self.coeffs.items()}, k * self.const, self.pos)

    def plus(self, other: _Lin) -> _Lin:
        coeffs = dict(self.coeffs)
        for v, c in other.coeffs.items():
            coeffs[v] = coeffs.get(v, 0.0) + c
        return _Lin(coeffs, self.const + other.const, self.pos)


@dataclass
class _RawAtom:
    """``sum(coeffs[name] * name) op rhs`` with variable names still unresolved."""

    coeffs: dict[str, float]
    op: str
    rhs: float
    pos: Pos


@dataclass
class _Decl:
    name: str
    sort: str
    pos: Pos


Dnf = list[list[_RawAtom]]

_MIRROR = {"<=": ">=", ">=": "<=", "<": ">", ">": "<", "=": "="}  # a op b  <=>  b mirror(op) a
_NONSTRICT = {"<=": "<=", "<": "<=", ">=": ">=", ">": ">="}


def _pos(token: Token) -> Pos:
    return (token.line or 0, token.column or 0)


def _product(parts: list[Dnf], pos: Pos) -> Dnf:
    """AND of DNFs as a DNF (the cross product of their conjunctions), with a size guard."""
    size = 1
    for part in parts:
        size *= len(part)
    if size > MAX_DNF_TERMS:
        raise _Located(f"this formula expands to {size} cases, more than the {MAX_DNF_TERMS} supported",
                       *pos)
    return [[atom for conj in combo for atom in conj] for combo in itertools.product(*parts)]


class _Build(Transformer):
    """Runs inside the LALR parser: terms become :class:`_Lin`, formulas become DNFs of :class:`_RawAtom`."""

    # ---------------------------------------------------------------- terms
    def var(self, ch: list[Token]) -> _Lin:
        return _Lin({str(ch[0]): 1.0}, 0.0, _pos(ch[0]))

    def num(self, ch: list[Token]) -> _Lin:
        return _Lin({}, float(ch[0]), _pos(ch[0]))

    def add(self, ch: list[_Lin]) -> _Lin:
        total = ch[0]
        for t in ch[1:]:
            total = total.plus(t)
        return total

    def sub(self, ch: list[_Lin]) -> _Lin:
        if len(ch) == 1:
            return ch[0].scaled(-1.0)
        total = ch[0]
        for t in ch[1:]:
            total = total.plus(t.scaled(-1.0))
        return total

    def mul(self, ch: list[_Lin]) -> _Lin:
        varying = [t for t in ch if t.coeffs]
        if len(varying) > 1:
            raise _Located("a product of two variables is not linear; only linear constraints are supported",
                           *varying[1].pos)
        k = float(np.prod([t.const for t in ch if not t.coeffs]))
        return varying[0].scaled(k) if varying else _Lin({}, k, ch[0].pos)

    def div(self, ch: list[_Lin]) -> _Lin:
        num, den = ch
        if den.coeffs:
            raise _Located("division by a variable is not linear", *den.pos)
        if den.const == 0:
            raise _Located("division by zero", *den.pos)
        return num.scaled(1.0 / den.const)

    # ---------------------------------------------------------------- formulas
    def atom(self, ch: list) -> Dnf:
        cmp_token, left, right = ch
        op, pos = str(cmp_token), _pos(cmp_token)
        if not left.coeffs and right.coeffs:  # keep variables on the left: (<= 3 Y_0) is Y_0 >= 3
            left, right = right, left
            op = _MIRROR[op]
        expr = left.plus(right.scaled(-1.0))
        coeffs = {v: c for v, c in expr.coeffs.items() if c != 0.0}
        if not coeffs:
            raise _Located("this comparison has no variables (or they cancel out)", *pos)
        rhs = -expr.const + 0.0  # + 0.0 turns -0.0 into 0.0
        if op == "=":
            return [[_RawAtom(coeffs, "<=", rhs, pos), _RawAtom(coeffs, ">=", rhs, pos)]]
        return [[_RawAtom(coeffs, _NONSTRICT[op], rhs, pos)]]

    def conj(self, ch: list[Dnf]) -> Dnf:
        pos = ch[0][0][0].pos if ch and ch[0] and ch[0][0] else (0, 0)
        return _product(ch, pos)

    def disj(self, ch: list[Dnf]) -> Dnf:
        return [conj for dnf in ch for conj in dnf]

    # ---------------------------------------------------------------- commands
    def declare(self, ch: list[Token]) -> _Decl:
        return _Decl(str(ch[0]), str(ch[1]), _pos(ch[0]))

    def assertion(self, ch: list[Dnf]) -> Dnf:
        return ch[0]

    def start(self, ch: list) -> list:
        return ch


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", transformer=_Build(), maybe_placeholders=False)


# ============================================================================ parsing


def parse_vnnlib(path: str | Path) -> VnnlibProperty:
    """Read a ``.vnnlib`` file, plain or gzip-compressed as VNN-COMP ships them (``.vnnlib.gz``).

    See the module docstring for the supported subset.
    """
    file = Path(path).expanduser().absolute()
    from ..guard import InputRefused, read_input

    try:
        data = read_input(file, "VNN-LIB file")
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
    except InputRefused:
        raise
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise PatchlangError(f"cannot read VNN-LIB file {file}: {exc}",
                             help="give the path of a readable VNN-LIB text file") from None
    return parse_vnnlib_text(text, str(file))


def parse_vnnlib_text(text: str, filename: str = "<vnnlib>") -> VnnlibProperty:
    """Parse VNN-LIB source; errors carry ``filename:line:col`` in their message."""
    try:
        items = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    except _Located as exc:
        where = f"{filename}:{exc.line}:{exc.column}" if exc.line else filename
        raise PatchlangError(f"{where}: {exc.message}", help=_HELP) from None
    decls = [item for item in items if isinstance(item, _Decl)]
    dnfs = [item for item in items if not isinstance(item, _Decl)]
    return _Resolver(filename, decls).property(dnfs)


def _syntax_error(exc: UnexpectedInput, text: str, filename: str) -> PatchlangError:
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = text.splitlines() or [""]
        where = f"{filename}:{len(lines)}:{len(lines[-1]) + 1}"
        return PatchlangError(f"{where}: the file ends inside an expression",
                              help="a closing parenthesis ')' is probably missing")
    where = f"{filename}:{exc.line}:{exc.column}"
    word = _word_at(text, exc.pos_in_stream)
    if isinstance(exc, UnexpectedToken):
        expected = ", ".join(sorted(_TERMINAL_WORDS.get(t, _literal(t)) for t in exc.expected))
        return PatchlangError(f"{where}: unexpected {word!r} (expected {expected})", help=_HELP)
    if isinstance(exc, UnexpectedCharacters):
        return PatchlangError(f"{where}: unexpected {word!r}: not part of the supported VNN-LIB subset",
                              help=_HELP)
    return PatchlangError(f"{where}: invalid VNN-LIB", help=_HELP)


def _word_at(text: str, pos: int | None) -> str:
    match = re.compile(r"[^\s()]+|.").match(text, pos or 0)
    return match.group(0) if match else ""


def _literal(terminal: str) -> str:
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal
    return repr(pattern.value) if pattern.type == "str" else terminal


# ---------------------------------------------------------------------------- resolving names, building cases

_VAR_NAME = re.compile(r"([XY])_(\d+)")


@dataclass
class _Bound:
    """``X_var <= value`` (``upper``) or ``X_var >= value``."""

    var: int
    upper: bool
    value: float


Item = Union[_Bound, LinearAtom]


class _Resolver:
    """Turns declarations and raw DNFs into a :class:`VnnlibProperty`, checking names along the way."""

    def __init__(self, filename: str, decls: list[_Decl]):
        self.filename = filename
        self.vars: dict[str, tuple[str, int]] = {}
        for d in decls:
            self._declare(d)
        self.n_inputs = self._count("X")
        self.n_outputs = self._count("Y")

    # ---------------------------------------------------------------- errors
    def _error(self, message: str, pos: Pos | None = None, help: str = _HELP) -> PatchlangError:
        where = f"{self.filename}:{pos[0]}:{pos[1]}" if pos else self.filename
        return PatchlangError(f"{where}: {message}", help=help)

    # ---------------------------------------------------------------- declarations
    def _declare(self, d: _Decl) -> None:
        m = _VAR_NAME.fullmatch(d.name)
        if m is None:
            raise self._error(f"variable {d.name!r}: names must be X_<i> (inputs) or Y_<j> (outputs)", d.pos)
        if d.sort != "Real":
            raise self._error(f"variable {d.name} has sort {d.sort}; only Real is supported", d.pos)
        if d.name in self.vars:
            raise self._error(f"variable {d.name} is declared twice", d.pos)
        self.vars[d.name] = (m.group(1), int(m.group(2)))

    def _count(self, kind: str) -> int:
        idx = sorted(i for k, i in self.vars.values() if k == kind)
        what = "input" if kind == "X" else "output"
        if not idx:
            raise self._error(f"no {what} variables are declared",
                              help=f"declare them with (declare-const {kind}_0 Real) and so on")
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        if missing:
            raise self._error(f"{kind}_{idx[-1]} is declared but {kind}_{missing[0]} is not",
                              help=f"declare every {what} {kind}_0 .. {kind}_{idx[-1]}")
        return len(idx)

    # ---------------------------------------------------------------- atoms
    def _item(self, atom: _RawAtom) -> Item:
        kinds: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
        for name, c in atom.coeffs.items():
            if name not in self.vars:
                raise self._error(f"variable {name} is not declared", atom.pos,
                                  help=f"add (declare-const {name} Real), or fix the name")
            kind, i = self.vars[name]
            kinds[kind][i] = c
        xs, ys = kinds["X"], kinds["Y"]
        if xs and ys:
            raise self._error("a constraint may not mix inputs (X) and outputs (Y)", atom.pos)
        if ys:
            return LinearAtom(ys, atom.op, atom.rhs)
        if len(xs) > 1:
            raise self._error("only per-variable bounds on inputs are supported (the input region must be a box)",
                              atom.pos)
        (i, c), = xs.items()
        upper = (atom.op == "<=") == (c > 0)  # dividing by a negative coefficient flips the comparison
        return _Bound(i, upper, atom.rhs / c)

    # ---------------------------------------------------------------- cases
    def property(self, dnfs: list[Dnf]) -> VnnlibProperty:
        """AND of all assertions, expanded to DNF, grouped by input box (in order of first appearance)."""
        resolved = [[[self._item(a) for a in conj] for conj in dnf] for dnf in dnfs]
        # Assertions that are a single conjunction (almost all of them) are applied once, not per combination.
        common = [item for dnf in resolved if len(dnf) == 1 for item in dnf[0]]
        branching = [dnf for dnf in resolved if len(dnf) != 1]
        size = int(np.prod([len(d) for d in branching], dtype=np.float64))
        if size > MAX_DNF_TERMS:
            raise self._error(f"the assertions expand to {size} cases, more than the {MAX_DNF_TERMS} supported")
        groups, empty = self._group(common, branching)
        if not groups:
            reason = empty or "an empty (or) is always false"
            raise self._error(f"the input constraints can never hold: every input box is empty ({reason})",
                              help="check the bounds: each X_i needs a lower bound <= its upper bound")
        cases = [self._finish(case, k, len(groups)) for k, case in enumerate(groups)]
        return VnnlibProperty(self.n_inputs, self.n_outputs, cases, self.filename)

    def _group(self, common: list[Item], branching: list[list[list[Item]]]) -> tuple[list[VnnlibCase], str | None]:
        """One case per distinct non-empty box; also a description of the first empty box, if any."""
        lo0, hi0, out0 = self._apply(np.full(self.n_inputs, -np.inf), np.full(self.n_inputs, np.inf), common)
        groups: dict[bytes, VnnlibCase] = {}
        empty: str | None = None
        for combo in itertools.product(*branching):
            lo, hi, out = self._apply(lo0.copy(), hi0.copy(), [item for conj in combo for item in conj])
            if np.any(lo > hi):  # an empty box holds no counterexample: drop it, but remember why
                i = int(np.argmax(lo > hi))
                empty = empty or f"X_{i} must be >= {float(lo[i])!r} and <= {float(hi[i])!r} at once"
                continue
            case = groups.setdefault(lo.tobytes() + hi.tobytes(), VnnlibCase(lo, hi, []))
            case.unsafe.append(out0 + out)
        return list(groups.values()), empty

    @staticmethod
    def _apply(lo: np.ndarray, hi: np.ndarray, items: list[Item]) -> tuple[np.ndarray, np.ndarray, list[LinearAtom]]:
        """Tighten the box with the bounds among ``items``; return the output atoms separately."""
        out = []
        for item in items:
            if isinstance(item, LinearAtom):
                out.append(item)
            elif item.upper:
                hi[item.var] = min(hi[item.var], item.value)
            else:
                lo[item.var] = max(lo[item.var], item.value)
        return lo, hi, out

    def _finish(self, case: VnnlibCase, k: int, n: int) -> VnnlibCase:
        """Check the box is bounded; an empty conjunction makes the whole DNF "always unsafe"."""
        for side, values in (("lower", case.lo), ("upper", case.hi)):
            unbounded = np.flatnonzero(~np.isfinite(values))
            if unbounded.size:
                which = f" in input region {k + 1} of {n}" if n > 1 else ""
                raise self._error(f"X_{unbounded[0]} has no {side} bound{which}",
                                  help="a property needs a bounded input box: add (assert (<= X_i ...)) and "
                                       "(assert (>= X_i ...)) for every input")
        unsafe = [[]] if any(not conj for conj in case.unsafe) else case.unsafe
        return VnnlibCase(case.lo, case.hi, unsafe)


# ============================================================================ writing


def _num(value: float) -> str:
    """Shortest text that reads back as exactly the same float."""
    value = float(value)
    if not np.isfinite(value):
        raise PatchlangError(f"cannot write the non-finite number {value} to VNN-LIB",
                             help="every bound and constant of a VNN-LIB property must be finite")
    return repr(value + 0.0)


def _atom_text(atom: LinearAtom) -> str:
    """The atom in the form the parser reads back to an equal :class:`LinearAtom`."""
    items = sorted(atom.coeffs.items())
    if len(items) == 1 and items[0][1] == 1.0:
        return f"({atom.op} Y_{items[0][0]} {_num(atom.rhs)})"
    if len(items) == 2 and atom.rhs == 0.0 and sorted(c for _, c in items) == [-1.0, 1.0]:
        pos = next(j for j, c in items if c > 0)
        neg = next(j for j, c in items if c < 0)
        return f"({atom.op} Y_{pos} Y_{neg})"
    terms = " ".join(f"(* {_num(c)} Y_{j})" for j, c in items)
    lhs = terms if len(items) == 1 else f"(+ {terms})"
    return f"({atom.op} {lhs} {_num(atom.rhs)})"


def _box_atoms(lo: np.ndarray, hi: np.ndarray) -> list[tuple[str, str]]:
    """The ``(<= X_i hi)`` and ``(>= X_i lo)`` atoms of every input, the way VNN-COMP files state boxes."""
    return [(f"(<= X_{i} {_num(hi[i])})", f"(>= X_{i} {_num(lo[i])})") for i in range(len(lo))]


def _dnf_lines(unsafe: list[list[LinearAtom]], indent: str) -> list[str]:
    """The unsafe DNF as one ``or`` formula (to AND with its box); nothing for "always unsafe"."""
    if unsafe == [[]]:
        return []
    body = [f"{indent}    (and {' '.join(_atom_text(a) for a in conj)})" for conj in unsafe]
    return [f"{indent}(or"] + body + [f"{indent})"]


def _single_case_lines(case: VnnlibCase) -> list[str]:
    """The common layout: one assert per bound, then the output condition (atoms, or one ``or``)."""
    lines = [f"(assert {atom})" for pair in _box_atoms(case.lo, case.hi) for atom in pair]
    if len(case.unsafe) == 1:
        return lines + [f"(assert {_atom_text(a)})" for a in case.unsafe[0]]
    dnf = _dnf_lines(case.unsafe, "")
    return lines + ["(assert " + dnf[0]] + dnf[1:-1] + ["))"]


def _multi_case_lines(cases: list[VnnlibCase]) -> list[str]:
    """Several boxes: one ``or`` of ``(and box unsafe-dnf)``, as ACAS Xu property 6 does."""
    lines = ["(assert (or"]
    for case in cases:
        lines += ["    (and"] + [f"        {hi} {lo}" for hi, lo in _box_atoms(case.lo, case.hi)]
        lines += _dnf_lines(case.unsafe, " " * 8) + ["    )"]
    return lines + ["))"]


def format_vnnlib(prop: VnnlibProperty) -> str:
    """VNN-LIB 1 text for ``prop`` that :func:`parse_vnnlib_text` reads back to an equal property.

    One case is written the usual way (one assert per bound); several cases become one ``or`` of
    ``(and box unsafe)``.  Cases with identical boxes are merged on reading, so write them as one case.
    """
    if not prop.cases:
        raise PatchlangError("cannot write a VNN-LIB property without input regions",
                             help="a property needs at least one input box")
    for case in prop.cases:
        if len(case.lo) != prop.n_inputs or len(case.hi) != prop.n_inputs:
            raise PatchlangError(f"an input box has {len(case.lo)} values but the property has "
                                 f"{prop.n_inputs} inputs", help="give one lower and one upper bound per input")
    lines = [f"; written by patchlang from {prop.source}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(prop.n_inputs)] + [""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(prop.n_outputs)] + [""]
    lines += _single_case_lines(prop.cases[0]) if len(prop.cases) == 1 else _multi_case_lines(prop.cases)
    return "\n".join(lines) + "\n"


def write_vnnlib(prop: VnnlibProperty, path: str | Path) -> Path:
    """Write ``prop`` as a VNN-LIB 1 file (creating parent directories); returns the path written."""
    from ..guard import atomic_write

    file = Path(path)
    atomic_write(str(file), format_vnnlib(prop).encode("utf-8"))  # creates the folders; never half a file
    return file
