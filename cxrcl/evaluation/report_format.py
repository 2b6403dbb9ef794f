"""Markdown cells and tables of ``cxrcl report``: number formatting, row names, tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DASH = "–"


def is_floor(run: str) -> bool:
    return run == "pixels" or run == "random" or run.startswith("random:")


def fmt_num(v) -> str:
    """Ints as ints; floats with 3 significant digits below 1, 2 decimals below 100."""
    if v is None or isinstance(v, bool):
        return DASH if v is None else str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if not isinstance(v, (float, np.floating)):
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return DASH
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_pct(f: float) -> str:
    return f"{f * 100:g} %"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def row_name(ev: dict) -> str:
    name = str(ev.get("run", "?"))
    level = int(ev.get("degrade_test") or 0)
    if is_floor(name):
        name = f"_{name}_ (floor)"
    return f"{name} · degraded test L{level}" if level else name
