"""What every study writes: a results folder, CSV files and a plain-text table."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def results_dir(name: str, out: str | Path | None) -> Path:
    """``out``, or ``results/<name>-<UTC timestamp>``; created if missing."""
    path = Path(out) if out else Path("results") / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str] | None = None) -> None:
    """One row per dict; the columns are ``fieldnames``, else every key in first-seen order."""
    if fieldnames is None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        fieldnames = keys
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned columns, a header line, then one line per row."""
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
