"""The short tables a command ends with: metrics by split or by model, and the paths it wrote.
Plain text, aligned; JSON stays in the files the command writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def grid(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under ``header``, each column as wide as its widest cell; floats with 4 decimals,
    numbers right-aligned, text left-aligned."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "nan" if value != value else f"{value:.4f}"
        return str(value)

    cells = [[cell(v) for v in header], *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) and bool(rows)
        for i in range(len(header))
    ]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def metrics_grid(rows: Mapping[str, Mapping[str, float]], first: str = "split") -> str:
    """One row per name (a split, a model) of its metrics: every metric key of the first row
    except ``users``, then ``users``."""
    if not rows:
        return ""
    keys = [k for k in next(iter(rows.values())) if k != "users"]
    body = [
        [name, *(float(m.get(k, float("nan"))) for k in keys), int(m.get("users", 0))]
        for name, m in rows.items()
    ]
    return grid([first, *keys, "users"], body)


def paths(entries: Mapping[str, object]) -> str:
    """``  name  value`` lines (what a command wrote and where), names aligned."""
    width = max((len(k) for k in entries), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in entries.items())
