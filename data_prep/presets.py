"""Prepared-data presets shared by the tests, the benchmarks and the experiments:
``launchers/prepare.py`` overrides of the built-in synthetic source, and running it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A catalog small enough for CPU training tests (48 users, 30 items), prepared by the real job.
TINY_CATALOG = (
    "source=synthetic",
    "source.num_users=48",
    "source.num_items=30",
    "source.mean_interactions=8",
    "source.min_interactions=4",
    "source.num_topics=3",
    "source.text_min_words=4",
    "source.text_max_words=8",
    "source.review_fraction=0.1",
    "layout.users_per_sample=4",
    "layout.docs_per_sample=8",
    "layout.samples_per_shard=2",
    "layout.shard_multiple=2",
    "tokenizer.vocab_size=300",
    "ray.num_cpus=1",
    "progress=false",
)


def prepare_dataset(output_dir: Path, overrides: list[str]) -> Path:
    """Run ``launchers/prepare.py`` in a subprocess; raise with its output on error."""
    cmd = [sys.executable, str(REPO / "launchers" / "prepare.py"), *overrides]
    cmd.append(f"output_dir={output_dir}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"prepare.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return output_dir
