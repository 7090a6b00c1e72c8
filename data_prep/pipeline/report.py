"""The end-of-run summary table and ``run_log.json`` (timings live here, not in the manifest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_prep.pipeline.arrowio import write_bytes_atomic


def summary_table(
    manifest: dict[str, Any],
    timings: dict[str, float],
    skipped: int,
    cpu: dict[str, float] | None = None,
) -> str:
    """Human-readable summary of a finished run: sizes, shards, rejected counts, wall times
    (and the CPU seconds of each phase's process tree, when given)."""
    cpu = cpu or {}
    counts = manifest["counts"]
    rows: list[tuple[str, str]] = [
        ("users", f"{counts['users']:,}"),
        ("items", f"{counts['items']:,}"),
    ]
    for split, n in counts["interactions"].items():
        rows.append((f"interactions {split}", f"{n:,}"))
    for split, n in counts["evaluated_users"].items():
        rows.append((f"evaluated users {split}", f"{n:,}"))
    for kind, n in counts["documents"].items():
        rows.append((f"documents {kind}", f"{n:,}"))
    for corpus, info in manifest["corpora"].items():
        samples = sum(s["samples"] for s in info["shards"])
        rows.append((f"shards {corpus}", f"{info['num_shards']} ({samples:,} samples)"))
    if skipped:
        rows.append(("shards reused from an earlier run", str(skipped)))
    for reason, n in sorted(manifest["rejected"].items()):
        rows.append((f"rejected {reason}", f"{n:,}"))
    for phase, seconds in timings.items():
        spent = f" (CPU {cpu[phase]:.1f} s)" if phase in cpu else ""
        rows.append((f"time {phase}", f"{seconds:.1f} s{spent}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def write_run_log(path: Path, timings: dict[str, float], extra: dict[str, Any]) -> None:
    """Timings and run facts that must stay out of the (reproducible) manifest."""
    payload = {"timings_s": {k: round(v, 3) for k, v in timings.items()}, **extra}
    write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())
