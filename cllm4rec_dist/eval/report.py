"""Print test metrics of CLLM4Rec beside baselines as a table and say which model wins.

With ``--must-beat METRIC`` it exits 1 when a baseline is at least as good as CLLM4Rec there.

python -m cllm4rec_dist.eval.report --model run/metrics.json --baseline pop.json [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cllm4rec_dist.cli.console import metrics_grid

COLUMNS = ("recall@20", "recall@40", "ndcg@100")


def table(rows: dict[str, dict[str, float]]) -> str:
    """One row per model of the COLUMNS metrics and its evaluated users."""
    picked = {
        name: {c: m.get(c, float("nan")) for c in (*COLUMNS, "users")} for name, m in rows.items()
    }
    return metrics_grid(picked, first="model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="metrics.json of a finetune/evaluate run")
    parser.add_argument("--baseline", action="append", default=[], help="baseline JSON files")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--must-beat",
        default="",
        help="exit 1 unless CLLM4Rec beats every baseline on this metric ('' = no check)",
    )
    args = parser.parse_args(argv)
    rows = {}
    for path in args.baseline:
        blob = json.loads(Path(path).read_text())
        rows[blob.get("method", Path(path).stem)] = blob[args.split]
    rows["CLLM4Rec"] = json.loads(Path(args.model).read_text())[args.split]
    print(f"\n{args.split} metrics (full ranking, training items masked)\n" + table(rows))
    for metric in COLUMNS:
        ranked = sorted(rows, key=lambda n: rows[n].get(metric, float("-inf")), reverse=True)
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
        margin = (
            f" ({rows[best][metric] / rows[second][metric]:.2f}x {second})"
            if second and rows[second][metric] > 0
            else ""
        )
        print(f"best on {metric}: {best}{margin}")
    if args.must_beat:
        ours = rows["CLLM4Rec"][args.must_beat]
        losers = [n for n, m in rows.items() if n != "CLLM4Rec" and m[args.must_beat] >= ours]
        if losers:
            print(f"CLLM4Rec does not beat {', '.join(losers)} on {args.must_beat}")
            return 1
        print(f"CLLM4Rec beats every baseline on {args.must_beat}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
