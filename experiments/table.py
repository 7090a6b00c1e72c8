"""Markdown table of one dataset's ``results.json`` (written by experiments/run.py):

    python experiments/table.py /tmp/quality/ml100k/results.json [--split test]

Cells are mean ± std over seeds (std omitted for one seed); the last columns give the seeds, the
wall time in seconds (per seed, pretrain + finetune or evaluate) and validation Recall@20.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("recall@20", "recall@40", "ndcg@100")


def cell(stat: dict[str, float], n: int) -> str:
    return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if n > 1 else "")


def render(results: dict, split: str = "test") -> str:
    head = ["row", *(f"{c} ({split})" for c in COLUMNS), "seeds", "wall s", "val recall@20"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results["rows"].items():
        n = len(row.get("seeds", [0]))
        wall = row.get("wall_s")
        cells = [
            name,
            *(cell(row[split][c], n) for c in COLUMNS),
            ",".join(map(str, row.get("seeds", ["-"]))),
            f"{wall:.0f}" if wall is not None else "n/a",
            cell(row["val"]["recall@20"], n),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--split", default="test", choices=("test", "val"))
    args = p.parse_args(argv)
    print(render(json.loads(args.results.read_text()), args.split))


if __name__ == "__main__":
    main()
