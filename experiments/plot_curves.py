"""Export TensorBoard scalars of training runs to small PNG plots (one figure per run group):

    python experiments/plot_curves.py --out docs/results/ml100k.png --title "ml-100k" \
        /tmp/quality/ml100k/runs/pretrain-xxxx /tmp/quality/ml100k/runs/cllm4rec-seed0

Each argument is a run directory (its ``tensorboard/`` folder is read) or an event-file folder.
Panels: the total loss of each phase (``train/loss/<phase>``), and validation Recall@20 / NDCG@100.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

PANELS = (
    (
        "pretrain / finetune losses",
        ("train/loss/collaborative", "train/loss/content", "train/loss/recommendation"),
    ),
    ("validation", ("val/recall@20", "val/ndcg@100")),
)


def load_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file under ``run_dir``."""
    root = run_dir / "tensorboard" if (run_dir / "tensorboard").is_dir() else run_dir
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(root.rglob("events.out.tfevents.*")):
        acc = event_accumulator.EventAccumulator(
            str(events), size_guidance={event_accumulator.SCALARS: 0}
        )
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in out.items()}


def plot(runs: list[Path], out: Path, title: str) -> list[str]:
    """Write the figure; return the tags drawn (for the caller's log)."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(9, 3), dpi=80)
    drawn = []
    for ax, (name, tags) in zip(axes, PANELS):
        for run in runs:
            scalars = load_scalars(run)
            for tag in tags:
                points = scalars.get(tag)
                if not points:
                    continue
                steps, values = zip(*points)
                ax.plot(steps, values, label=f"{run.name}: {tag}", linewidth=1)
                drawn.append(f"{run.name}:{tag}")
        if name.endswith("losses") and ax.lines:
            ax.set_yscale("log")  # the multinomial NLL is summed over targets: far above LM CEs
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("global step", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    drawn = plot(args.runs, args.out, args.title)
    print(f"{args.out}: {len(drawn)} curves, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
