"""Markdown for the evaluation: number formatting, tables, sections, the file written with its command."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.{digits}f}"


def mean_sd(values: Sequence[float], digits: int = 2) -> str:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass
class Section:
    """One part of the evaluation document: markdown lines and the raw numbers behind them."""

    name: str  #: key in the raw JSON ("coarse", "fine", ...)
    lines: list[str]
    raw: Any = field(default=None)


def write_markdown(path: str | Path, header: Sequence[str], sections: Sequence[Section], append: bool = False) -> Path:
    """Write ``header`` + every section to ``path`` (UTF-8 whatever the locale); with ``append`` they go
    after what the file already holds, without ``header``'s title (its first two lines)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = list(header)
    for s in sections:
        lines += s.lines
    if append and out.exists():  # keep the file's own title; say what wrote the new part
        lines = [out.read_text(encoding="utf-8"), ""] + lines[2:]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
