"""``patchlang fmt``: one canonical layout for `.patch` files, comments kept.

The canonical form (like black / gofmt, there is nothing to configure):

- every statement starts at column 0; block items (``patch``, ``repair``, ``property``) are indented by 4 spaces,
  one per line, and the closing ``}`` stands on its own line;
- tokens are separated by one space, except: none before ``,`` ``)`` ``]`` and the ``:`` of ``require``, none
  after ``(`` and ``[``, none around ``*``, ``/`` and the colons of a slice, none between a function-like keyword
  and its ``(`` (``correct(net)``, ``exists(t)``, ``accuracy(t, p)``), none before an index or output
  bracket (``test[0:200]``, ``y[1]``; but ``rows [3, 5]``), none inside ``{1, 7}``; trailing commas are dropped;
- a statement longer than 100 columns is wrapped greedily before ``+`` / ``-`` / ``and`` / ``or`` / ``where``
  or after a ``,``, continuation lines indented 4 more;
- blank lines: at most one; a block statement (with the comments directly above it) is always separated from its
  neighbours by one; elsewhere a blank line is kept where the source had at least one; none at the start of a
  block or the file;
- comments are kept: a comment on its own line stays on its own line (at the indentation of what follows it); a
  comment after code stays after that statement's last line, two spaces after the code, and the comments of
  consecutive lines are aligned one column (gofmt style); a comment from inside a statement that spans several
  lines moves above it.

Token texts are never changed (numbers, strings and names are written as they were), so formatting is safe by
construction; :func:`format_source` also re-parses its output and refuses it unless the AST (spans stripped) is
the same as the input's.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import functools
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lark
from lark import Token, Tree

from ..errors import InternalError, PatchlangError, Span, SpecError
from .parser import grammar_path, parse_text

WIDTH = 100
INDENT = "    "
BLOCKS = ("patch_block", "property_block", "repair_block", "finetune_block", "experts_block", "attack_block")
_CALLS = {"cond_correct", "cond_misclassified", "assert_exists", "assert_not_exists", "assert_distance",
          "assert_accuracy", "assert_metric"}
_BREAK_WORDS = {"and", "or"}
_BREAK_CTX = {"output_cnf", "output_clause", "where_clause"}


# ---------------------------------------------------------------------------- parsing with every token


_lock = threading.Lock()
_sink: list[Token] = []


@functools.lru_cache(maxsize=1)
def _full_parser() -> lark.Lark:
    """The language's grammar, keeping keywords and punctuation in the tree and handing comments to ``_sink``."""
    return lark.Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                     maybe_placeholders=False, keep_all_tokens=True,
                     lexer_callbacks={"COMMENT": lambda tok: _sink.append(tok)})


def _parse_full(source: str) -> tuple[Tree, list[Token]]:
    with _lock:
        _sink.clear()
        tree = _full_parser().parse(source)
        comments = list(_sink)
        _sink.clear()
    return tree, comments


# ---------------------------------------------------------------------------- the layout model


@dataclass
class _Tok:
    tok: Token
    ctx: str  # the grammar rule the token belongs to


@dataclass
class _Unit:
    """What becomes one logical line: a simple statement, a block header, a block item or a closing brace."""

    toks: list[_Tok]
    indent: int
    leading: list[str] = field(default_factory=list)  # comments moved above the line
    trailing: list[str] = field(default_factory=list)
    mid: list[tuple[str, bool]] = field(default_factory=list)  # (comment, is trailing-type)

    @property
    def first(self) -> Token:
        return self.toks[0].tok

    @property
    def last(self) -> Token:
        return self.toks[-1].tok


@dataclass
class _Elem:
    """An entry of a statement list (top level or a block): a statement or an own-line comment."""

    unit: _Unit | None = None
    comment: str | None = None
    block: _Block | None = None
    blank_before: bool = False
    start_line: int = 0
    end_line: int = 0


@dataclass
class _Block:
    items: list[_Elem]
    closer: _Unit


def _tokens(tree: Tree, out: list[_Tok]) -> list[_Tok]:
    for c in tree.children:
        if isinstance(c, Tree):
            _tokens(c, out)
        else:
            out.append(_Tok(c, str(tree.data)))
    return out


def _layout(tree: Tree) -> tuple[list[_Elem], list[_Unit]]:
    """The statement list (blocks with their item lists) and every unit in source order."""
    units: list[_Unit] = []
    top: list[_Elem] = []
    for st in tree.children:
        if str(st.data) in BLOCKS:
            i = next(k for k, c in enumerate(st.children) if isinstance(c, Token) and c.value == "{")
            header: list[_Tok] = []
            for c in st.children[: i + 1]:
                if isinstance(c, Tree):
                    _tokens(c, header)
                else:
                    header.append(_Tok(c, str(st.data)))
            head = _Unit(header, 0)
            units.append(head)
            items = []
            for c in st.children[i + 1: -1]:
                u = _Unit(_tokens(c, []), 1)
                units.append(u)
                items.append(_Elem(unit=u))
            closer = _Unit([_Tok(st.children[-1], str(st.data))], 0)
            units.append(closer)
            top.append(_Elem(unit=head, block=_Block(items, closer)))
        else:
            u = _Unit(_tokens(st, []), 0)
            units.append(u)
            top.append(_Elem(unit=u))
    return top, units


def _attach_comments(top: list[_Elem], units: list[_Unit], comments: list[Token]) -> None:
    """Put every comment into a statement list (own line) or onto a unit (after code, or inside a statement)."""
    # every token, in order, with its unit
    flat: list[tuple[Token, _Unit]] = [(t.tok, u) for u in units for t in u.toks]
    starts = [t.start_pos for t, _ in flat]
    lists: dict[int, list[_Elem]] = {}  # id(unit) -> the statement list whose element starts with it
    for e in top:
        lists[id(e.unit)] = top
        if e.block:
            for it in e.block.items:
                lists[id(it.unit)] = e.block.items
    closers = {id(e.block.closer): e.block.items for e in top if e.block}
    inserts: list[tuple[list[_Elem], _Unit | None, _Elem]] = []  # (list, before this unit or at end, comment)
    for c in comments:
        text = c.value.rstrip()
        k = bisect.bisect_left(starts, c.start_pos)  # index of the first token after the comment
        prev = flat[k - 1] if k > 0 else None
        if prev is not None and prev[0].end_line == c.line:  # after code on the same line
            tok, unit = prev
            if tok is unit.last:
                unit.trailing.append(text)
            else:
                unit.mid.append((text, True))
            continue
        elem = _Elem(comment=text, start_line=c.line, end_line=c.line)
        if k == len(flat):
            inserts.append((top, None, elem))
            continue
        tok, unit = flat[k]
        if tok is unit.first and id(unit) in lists:
            inserts.append((lists[id(unit)], unit, elem))
        elif tok is unit.first and id(unit) in closers:
            inserts.append((closers[id(unit)], None, elem))
        else:
            unit.mid.append((text, False))
    for seq, before, elem in inserts:  # comments come in source order, so appending keeps the order
        if before is None:
            seq.append(elem)
        else:
            idx = next(i for i, e in enumerate(seq) if e.unit is before)
            seq.insert(idx, elem)
    for u in units:
        if not u.trailing and u.mid and u.mid[-1][1]:
            u.trailing.append(u.mid.pop()[0])
        u.leading.extend(text for text, _ in u.mid)
        u.mid = []


def _blank_lines(seq: list[_Elem], top_level: bool) -> None:
    for e in seq:
        if e.unit is not None:
            e.start_line = e.unit.first.line
            last = e.block.closer.last if e.block else e.unit.last
            e.end_line = last.end_line
    for i, e in enumerate(seq):
        e.blank_before = i > 0 and e.start_line - seq[i - 1].end_line > 1
    if not top_level:
        return
    for i, e in enumerate(seq):
        if e.block is None:
            continue
        j = i
        while j > 0 and seq[j - 1].comment is not None and not seq[j].blank_before:
            j -= 1
        if j > 0:
            seq[j].blank_before = True
        if i + 1 < len(seq):
            seq[i + 1].blank_before = True


# ---------------------------------------------------------------------------- one unit -> text


def _space(a: _Tok, b: _Tok) -> str:
    pv, v = a.tok.value, b.tok.value
    if v in (",", ")", "]", "%") or pv in ("(", "["):
        return ""
    if pv == ",":
        return " "
    if b.tok.type == "SLICE_COLON" and b.ctx != "require_stmt":
        return ""
    if a.tok.type == "SLICE_COLON" and a.ctx != "require_stmt":
        return ""
    if b.ctx == "require_stmt" and v == ":":
        return ""
    if (v == "}" and b.ctx == "int_set") or (pv == "{" and a.ctx == "int_set"):
        return ""
    if v in ("*", "/") or pv in ("*", "/"):
        return ""
    if v == "(" and b.ctx in _CALLS:
        return ""
    if v == "[" and (b.ctx == "output_ref" or (b.ctx == "index" and pv != "rows")):
        return ""
    return " "


def _breakable(a: _Tok, b: _Tok) -> bool:
    """May a line break go between ``a`` and ``b``?"""
    if a.tok.value == ",":
        return True
    if b.tok.value == "+" or b.tok.type == "ADD_OP":
        return True
    if b.tok.value in _BREAK_WORDS and b.ctx in _BREAK_CTX:
        return True
    return b.tok.value == "where" and b.ctx == "where_clause"


def _render(unit: _Unit) -> list[str]:
    toks = [t for i, t in enumerate(unit.toks)  # drop trailing commas: `[1, 2,]` -> `[1, 2]`
            if not (t.tok.value == "," and i + 1 < len(unit.toks) and unit.toks[i + 1].tok.value == "]")]
    indent = INDENT * unit.indent
    # pieces between break opportunities: (bracket depth of the break before it, separator, text)
    pieces: list[tuple[float, str, str]] = []
    depth = 0
    for i, t in enumerate(toks):
        if i == 0:
            pieces.append((0, "", t.tok.value))
        elif _breakable(toks[i - 1], t):  # `or` binds tighter than `and`: break at `and` first
            pieces.append((depth + (0.5 if t.tok.value == "or" else 0), _space(toks[i - 1], t), t.tok.value))
        else:
            d, sep, text = pieces[-1]
            pieces[-1] = (d, sep, text + _space(toks[i - 1], t) + t.tok.value)
        if t.tok.value in ("(", "[", "{"):
            depth += 1
        elif t.tok.value in (")", "]", "}"):
            depth -= 1
    # break at the outermost level that makes every line fit (the deepest level when none does)
    for level in sorted({d for d, _, _ in pieces}):
        lines = _fill(pieces, indent, level)
        if all(len(ln) <= WIDTH for ln in lines):
            break
    return lines


def _fill(pieces: list[tuple[float, str, str]], indent: str, level: float) -> list[str]:
    """Greedy fill, breaking only at opportunities of bracket depth <= ``level``."""
    groups: list[tuple[str, str]] = []
    for d, sep, text in pieces:
        if groups and d > level:
            gsep, gtext = groups[-1]
            groups[-1] = (gsep, gtext + sep + text)
        else:
            groups.append((sep, text))
    lines = [indent + groups[0][1]]
    for sep, text in groups[1:]:
        if len(lines[-1]) + len(sep) + len(text) > WIDTH:
            lines.append(indent + INDENT + text)
        else:
            lines[-1] += sep + text
    return lines


# ---------------------------------------------------------------------------- the whole file


def _emit(top: list[_Elem]) -> str:
    out: list[tuple[str, str | None]] = []  # (code, trailing comment)

    def unit_lines(u: _Unit, blank: bool) -> None:
        if blank and out:
            out.append(("", None))
        for c in u.leading:
            out.append((INDENT * u.indent + c, None))
        lines = _render(u)
        for ln in lines[:-1]:
            out.append((ln, None))
        out.append((lines[-1], "  ".join(u.trailing) if u.trailing else None))

    def seq_lines(seq: list[_Elem], indent: int) -> None:
        for e in seq:
            if e.comment is not None:
                if e.blank_before and out:
                    out.append(("", None))
                out.append((INDENT * indent + e.comment, None))
                continue
            unit_lines(e.unit, e.blank_before)
            if e.block is not None:
                seq_lines(e.block.items, indent + 1)
                unit_lines(e.block.closer, False)

    seq_lines(top, 0)
    # align the comments of consecutive lines that have one (gofmt style)
    text: list[str] = []
    i = 0
    while i < len(out):
        if out[i][1] is None:
            text.append(out[i][0])
            i += 1
            continue
        j = i
        while j < len(out) and out[j][1] is not None:
            j += 1
        col = max(len(code) for code, _ in out[i:j]) + 2
        text.extend(code.ljust(col) + comment for code, comment in out[i:j])
        i = j
    return "".join(line.rstrip() + "\n" for line in text)


def _strip(v: Any) -> Any:
    """An AST with every span removed, for comparing the meaning of two texts."""
    if isinstance(v, Span):
        return None
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return (type(v).__name__,) + tuple(_strip(getattr(v, f.name)) for f in dataclasses.fields(v)
                                           if f.name not in ("span", "model_span"))
    if isinstance(v, (tuple, list)):
        return tuple(_strip(x) for x in v)
    if isinstance(v, frozenset):
        return tuple(sorted(v))
    return v


def ast_key(source: str, filename: str = "<string>") -> Any:
    """The meaning of a spec: its AST without spans (raises SpecError when it does not parse)."""
    return _strip(parse_text(source, filename).statements)


def format_source(source: str, filename: str = "<string>") -> str:
    """The canonical text of a spec; raises :class:`SpecError` (PL100, PL101) when it does not parse."""
    before = ast_key(source, filename)  # the language's own diagnostics for a broken file
    tree, comments = _parse_full(source)
    top, units = _layout(tree)
    _attach_comments(top, units, comments)
    _blank_lines(top, True)
    for e in top:
        if e.block:
            _blank_lines(e.block.items, False)
    out = _emit(top)
    try:
        after = ast_key(out, filename)
    except SpecError as exc:
        raise InternalError(f"fmt produced text that does not parse for {filename}: {exc.message}") from None
    if after != before:
        raise InternalError(f"fmt would change the meaning of {filename}; nothing was written (please report it)")
    if [c.value.rstrip() for c in comments] != [c.value.rstrip() for c in _parse_full(out)[1]]:
        raise InternalError(f"fmt would lose or reorder comments of {filename}; nothing was written")
    return out


# ---------------------------------------------------------------------------- Markdown: ```patch blocks

FENCE = re.compile(r"^```patch[ \t]*\n(.*?)^```", re.S | re.M)


def format_markdown(text: str, filename: str = "<string>") -> str:
    """Format every ```patch code block of a Markdown file (the rest is left as it is)."""
    def one(m: re.Match) -> str:
        offset = text.count("\n", 0, m.start()) + 1  # the fence's line: block line k is file line offset + k
        try:
            body = format_source(m.group(1), filename)
        except SpecError as exc:  # point at the line of the Markdown file
            raise SpecError(items=[dataclasses.replace(d, span=dataclasses.replace(
                d.span, line=d.span.line + offset, end_line=d.span.end_line + offset) if d.span else None)
                for d in exc.diagnostics]) from None
        return m.group(0)[: m.start(1) - m.start()] + body + "```"

    return FENCE.sub(one, text)


def format_file_text(path: str, text: str) -> str:
    return format_markdown(text, path) if path.endswith(".md") else format_source(text, path)


def unified_diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"{path} (original)", tofile=f"{path} (formatted)"))


def collect(paths: list[str]) -> list[str]:
    """The files to format: files as given, folders searched for ``*.patch`` (hidden folders skipped)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for f in sorted(Path(p).rglob("*.patch")):
                if not any(part.startswith(".") and part not in (".", "..") for part in f.relative_to(p).parts):
                    out.append(str(f))
        else:
            out.append(p)
    return out


def run_fmt(paths: list[str], check: bool, diff: bool, out, err) -> int:
    """The ``patchlang fmt`` command: 0 nothing (left) to change, 1 files would change (--check/--diff), 2 errors.

    ``out`` / ``err`` are rich consoles.  A file that does not parse is reported (``file:line:col: PLxxx``) and
    never written; the others are still formatted.
    """
    from ..guard import InputRefused, atomic_write as write_atomic, read_input

    if paths == ["-"]:  # editors: the text on stdin, the formatted text on stdout
        import sys

        source = sys.stdin.read()
        try:
            sys.stdout.write(format_source(source, "<stdin>"))
        except SpecError as exc:
            for d in exc.diagnostics:
                err.print(d.render({"<stdin>": source.splitlines()}), markup=False, highlight=False)
            return 2
        return 0
    files = collect(paths)
    changed: list[str] = []
    errors = 0
    for path in files:
        try:  # the guarded reader: a FIFO or a device (/dev/zero, /dev/null) is refused, never read or replaced
            old = read_input(path, "spec file").decode("utf-8-sig")
        except (InputRefused, UnicodeDecodeError) as exc:
            err.print(f"{path}: PL001 error: cannot read: {getattr(exc, 'message', exc)}", markup=False,
                      highlight=False)
            errors += 1
            continue
        try:
            new = format_file_text(path, old)
        except SpecError as exc:
            for d in exc.diagnostics:
                err.print(d.render({path: old.splitlines()}), markup=False, highlight=False)
            errors += 1
            continue
        if new == old:
            continue
        changed.append(path)
        if diff:
            out.print(unified_diff(path, old, new), markup=False, highlight=False, end="")
        elif check:
            out.print(f"would reformat {path}", markup=False, highlight=False)
        else:
            target = os.path.realpath(path)  # through a symlink, not over it
            try:
                mode = os.stat(target).st_mode & 0o7777
                write_atomic(target, new.encode("utf-8"))
                os.chmod(target, mode)
            except (PatchlangError, OSError) as exc:
                err.print(f"{path}: PL000 error: {getattr(exc, 'message', exc)}", markup=False, highlight=False)
                changed.pop()
                errors += 1
                continue
            out.print(f"reformatted {path}", markup=False, highlight=False)
    n_same = len(files) - len(changed) - errors
    verb = "would be reformatted" if check or diff else "reformatted"
    summary = [f"{len(changed)} file{'s' * (len(changed) != 1)} {verb}",
               f"{n_same} file{'s' * (n_same != 1)} left unchanged"]
    if errors:
        summary.append(f"{errors} file{'s' * (errors != 1)} with errors (not formatted)")
    err.print(", ".join(summary), markup=False, highlight=False)
    if errors:
        return 2
    return 1 if changed and (check or diff) else 0
