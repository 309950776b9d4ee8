"""Plain-text tables for the command line, and the "did you mean" hint of every unknown name."""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

__all__ = ["table", "closest", "did_you_mean"]


def closest(name: object, choices: Iterable[object]) -> str | None:
    """The known name closest to ``name`` (``difflib``'s ratio at least 0.6, case ignored), or None."""
    known = {str(c).lower(): str(c) for c in choices}
    match = difflib.get_close_matches(str(name).lower(), list(known), n=1, cutoff=0.6)
    return known[match[0]] if match else None


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """``" (did you mean 'sweeps'?)"`` for a misspelt name, ``""`` when nothing is close."""
    match = closest(name, choices)
    return f" (did you mean {match!r}?)" if match is not None and match != str(name) else ""


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
