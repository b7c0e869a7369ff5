"""What README.md and docs/ tell a user to run, and what they say will happen: the machine-checkable claims.

The docs carry their claims next to the text, in HTML comments (invisible on GitHub):

- a command shown anywhere (a ``console``/``bash``/``yaml`` block or inline code) is followed somewhere in the
  same file by ``<!-- expect `COMMAND`: CLAIM ... -->``;
- a ``patch`` block that uses the shipped example models is followed by one of
  ``<!-- expect: CLAIM ... -->`` (the block is run as a spec placed in ``examples/docs/``),
  ``<!-- file: examples/toy/exact.patch -->`` (the block *is* that shipped file) or
  ``<!-- no-run: REASON -->``.

Claims, separated by spaces (quote values with spaces, shell style):

- ``exit=N``: the exit code;
- ``files=A,B``: files that exist afterwards (relative to the repository root; they are deleted before the run);
- ``says=TEXT``: the output (stdout or stderr) contains TEXT (for ``check``, ``--version``, ``--help``; report wording is not
  compared otherwise);
- ``KEY=VALUE`` (exact) and ``KEY~=NUMBER`` (to the digits written, never looser than relative 1e-4) on the
  JSON report of the run: ``KEY`` is
  ``exit_code`` or another top-level field, ``TASK.PATH`` (a task by name), ``@LINE.PATH`` (the task at that source
  line), ``assert@LINE.PATH`` (the assertion at that line); ``PATH`` is dotted, list items by number
  (``checks.0.points``); ``linf``, ``l1``, ``l0`` stand for ``distances.linf`` ...;
- ``edit="OLD=>NEW"``: run a variant of the command's spec with OLD replaced by NEW (a "try this instead");
- ``help-only`` (with ``reason=...``): the command takes minutes or needs data outside the repository; only
  ``COMMAND --help`` is run and must exit 0;
- ``shared``: the command reads the benchmarks' data (``PATCHLANG_SHARED``, default ``../shared``) and is fast:
  it is run when that data is there, and only ``COMMAND --help`` otherwise.

Numbers in claims must also appear in the text of the section the comment is in, so the comment cannot say one
thing while the text says another.  Commands are found by :func:`commands`; one without a claim fails the tests.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))

FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
COMMENT = re.compile(r"<!--\s*(expect|file|no-run)\b(.*?)-->", re.S)
EXPECT_HEAD = re.compile(r"^\s*`([^`]+)`\s*:(.*)$", re.S)
PROGRAMS = ("patchlang", "python")
NOT_RUN = (("pip",), ("python", "-m", "pytest"))  # installing, and the test suite itself
SHELL_OPS = {"&&", "||", ";", "|"}
PATH_HINT = re.compile(r"\.(patch|py|md)$")


@dataclass
class Claim:
    """One expectation comment: where it is, the command (None: the patch block before it), its claims."""

    doc: str
    line: int
    command: str | None
    claims: list[tuple[str, str, str]] = field(default_factory=list)  # (key, op, value)
    edit: tuple[str, str] | None = None
    help_only: bool = False
    shared: bool = False
    context: str = ""  # the doc's text the comment speaks about

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    code: str
    annotation: str | None  # expect | file | no-run | None
    argument: str  # the annotation's text


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def normalize(command: str) -> str:
    return " ".join(shlex.split(command))


def _split_shell(line: str) -> list[list[str]]:
    """Simple commands of one shell line: comments dropped, split at && || ; |."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return []
    out, cur = [], []
    for tok in tokens:
        if tok in SHELL_OPS:
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    out.append(cur)
    return [c for c in out if c]


def _is_shown_command(tokens: list[str]) -> bool:
    if not tokens or tokens[0] not in PROGRAMS:
        return False
    return not any(tuple(tokens[:len(p)]) == p for p in NOT_RUN)


def _block_lines(lang: str, code: str) -> list[str]:
    """Command lines of a fenced block: ``$ `` lines of a console block, every line of a shell block, the
    patchlang lines of a CI workflow; backslash continuations joined."""
    raw = code.replace("\\\n", " ").splitlines()
    if lang == "console":
        return [ln[2:] for ln in raw if ln.startswith("$ ")]
    if lang in ("bash", "sh", "shell"):
        return raw
    if lang in ("yaml", "yml"):
        return [re.sub(r"^\s*(-\s*)?run:\s*\|?", "", ln) for ln in raw if re.search(r"\b(patchlang|python) ", ln)]
    return []


def commands(doc: Path) -> list[tuple[int, str]]:
    """(line, normalized command) for every patchlang/python command the doc shows."""
    text = doc.read_text(encoding="utf-8")
    found: list[tuple[int, str]] = []
    fenced = []
    for m in FENCE.finditer(text):
        fenced.append((m.start(), m.end()))
        for ln in _block_lines(m.group(1), m.group(2)):
            for tokens in _split_shell(ln):
                if _is_shown_command(tokens):
                    found.append((line_of(text, m.start()), " ".join(tokens)))
    for m in INLINE.finditer(text):
        if any(a <= m.start() < b for a, b in fenced) or text.rfind("<!--", 0, m.start()) > text.rfind("-->", 0,
                                                                                                     m.start()):
            continue  # inside a fenced block or an expectation comment
        for tokens in _split_shell(m.group(1)):
            if _is_shown_command(tokens):
                found.append((line_of(text, m.start()), " ".join(tokens)))
    return found


def runnable(command: str) -> bool:
    """A command a user can run as written: it names files of the repository (or only flags, like
    ``patchlang --version``).  Syntax summaries (``patchlang run SPEC``, ``spec.patch``) are not."""
    tokens = shlex.split(command)[1:]
    if tokens[:2] == ["-m", "patchlang.cli"]:
        tokens = tokens[2:]
    files = [t for t in tokens if PATH_HINT.search(t)]
    folders = [t for t in tokens if "/" in t and not PATH_HINT.search(t) and (REPO / t).is_dir()]
    if files or folders:
        return all((REPO / f).is_file() for f in files)
    return all(t.startswith("-") for t in tokens)


def repo_paths_mentioned(doc: Path) -> list[tuple[int, str]]:
    """Paths into the repository's folders (examples/, bench/, tests/, docs/, grammar/, patchlang/) that the doc
    names: files (with an extension) and folders (written with a trailing ``/``); outputs under out/ excepted, and
    names like the SARIF rule ``patchlang/no-patch``, which are neither."""
    text = doc.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"(?<![\w./-])((?:examples|bench|tests|docs|grammar|patchlang)/[\w./-]*[\w/])", text):
        path = m.group(1)
        if "/out/" in path or path.endswith("/out") or not (path.endswith("/") or re.search(r"\.\w+$", path)):
            continue
        out.append((line_of(text, m.start()), path))
    return out


def _parse_claims(doc: str, line: int, command: str | None, body: str, context: str) -> Claim:
    claim = Claim(doc, line, command, context=context)
    for tok in shlex.split(body):
        if tok in ("help-only", "shared"):
            setattr(claim, tok.replace("-", "_"), True)
            continue
        m = re.fullmatch(r"([\w@.\-]+)(~=|=)(.*)", tok, re.S)
        if not m:
            raise ValueError(f"{doc}:{line}: cannot read the claim {tok!r}")
        key, op, value = m.groups()
        if key == "edit":
            old, _, new = value.partition("=>")
            claim.edit = (old, new)
        elif key != "reason":
            claim.claims.append((key, op, value))
    return claim


def _context(text: str, end: int) -> str:
    """The text a comment speaks about: its section (back to the previous heading), comments left out."""
    start = max(text.rfind("\n#", 0, end), 0)
    return re.sub(r"<!--.*?-->", "", text[start:end], flags=re.S)


def claims(doc: Path) -> tuple[list[Claim], list[Block]]:
    """The expectation comments of a doc (those naming a command, and those after patch blocks), and its patch
    blocks with their annotation."""
    text = doc.read_text(encoding="utf-8")
    out: list[Claim] = []
    blocks: list[Block] = []
    after_block: dict[int, re.Match] = {}
    for m in FENCE.finditer(text):
        if m.group(1) != "patch":
            continue
        c = COMMENT.match(text, m.end() + len(text[m.end():]) - len(text[m.end():].lstrip()))
        blocks.append(Block(doc.name, line_of(text, m.start()), "patch", m.group(2),
                            c.group(1) if c else None, c.group(2).strip().lstrip(":").strip() if c else ""))
        if c:
            after_block[c.start()] = m
    for c in COMMENT.finditer(text):
        if c.group(1) != "expect":
            continue
        line = line_of(text, c.start())
        head = EXPECT_HEAD.match(c.group(2))
        if head:
            out.append(_parse_claims(doc.name, line, normalize(head.group(1)), head.group(2),
                                     _context(text, c.start())))
        elif c.start() in after_block:
            out.append(_parse_claims(doc.name, line, None, c.group(2).strip().lstrip(":"),
                                     _context(text, c.start())))
        else:
            raise ValueError(f"{doc.name}:{line}: an expect comment needs a `command` or must follow a patch block")
    return out, blocks


def block_for(claim: Claim, blocks: list[Block]) -> Block:
    """The patch block an expect comment without a command belongs to."""
    before = [b for b in blocks if b.doc == claim.doc and b.line < claim.line and b.annotation == "expect"]
    return max(before, key=lambda b: b.line)


def uses_example_models(code: str) -> bool:
    """A spec whose input files all exist when it sits in an example folder (``../models/...``)."""
    inputs = [p for p in re.findall(r'"([^"]+\.[A-Za-z0-9]+)"', code) if not p.startswith("out/")]
    return bool(inputs) and all((REPO / "examples" / "docs" / p).resolve().is_file() for p in inputs)


def strip_code(code: str) -> str:
    """A spec without comments and whitespace, to compare a doc block with a shipped file (a formatter may
    re-indent either)."""
    lines = [re.sub(r"#.*$", "", ln) for ln in code.splitlines()]
    return re.sub(r"\s+", "", "".join(lines))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def broken_links(doc: Path) -> list[str]:
    """Relative links whose file or heading anchor does not exist."""
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    out = []
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            out.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            out.append(f"{target}: no heading with that anchor in {file.name}")
    return out
