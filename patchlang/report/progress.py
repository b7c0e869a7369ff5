"""Progress of long proofs: a live line on a terminal, a plain line per interval in CI (non-tty).

The verifier calls the callback with a dict: ``method`` (input-split | relu-split), ``case`` (which input box),
``domains`` (sub-boxes or ReLU-split domains bounded so far), ``left`` (still open), ``bound`` (the smallest open
lower bound, ReLU splits only: the proof is done when every open bound is above 0), ``elapsed`` and ``limit``
(seconds).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable


def describe(info: dict[str, Any], width: int = 20) -> str:
    """One line: a bar of the time budget used, then domains, open domains, best bound, elapsed."""
    elapsed = float(info.get("elapsed", 0.0))
    limit = float(info.get("limit") or 0.0)
    parts = []
    if limit > 0:
        done = min(1.0, elapsed / limit)
        filled = int(round(done * width))
        parts.append("[" + "#" * filled + "." * (width - filled) + "]")
    parts.append(f"{info.get('method', 'search')}")
    if info.get("case"):
        parts.append(str(info["case"]))
    if info.get("stage"):
        parts.append(str(info["stage"]))
    parts.append(f"{int(info.get('domains', 0)):,} domains, {int(info.get('left', 0)):,} left")
    if info.get("bound") is not None:
        parts.append(f"best bound {float(info['bound']):.4g} (proven above 0)")
    parts.append(f"{elapsed:.0f}s" + (f" of {limit:.0f}s" if limit > 0 else ""))
    return "  ".join(parts)


def progress_printer(update: Callable[[str], None] | None, every: float = 10.0,
                     stream: Any = None) -> Callable[[dict[str, Any]], None]:
    """A callback for the verifier.  ``update`` (a terminal's live status line) gets every report; without it, a
    line goes to ``stream`` (default stderr) at most every ``every`` seconds."""
    last = [time.perf_counter()]

    def report(info: dict[str, Any]) -> None:
        text = describe(info)
        if update is not None:
            update(text)
            return
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            out = stream if stream is not None else sys.stderr
            out.write(f"progress  {text}\n")
            out.flush()

    return report
