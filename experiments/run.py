"""One dataset end to end: prepare -> baselines -> pretrain -> finetune (or evaluate) per variant
and seed -> ``<out>/results.json`` with test/validation metrics, mean ± std over seeds, wall
times and the exact command of every step.

    python -m experiments.run ml100k --out /tmp/quality/ml100k --variants cllm4rec lambda_v0 \
        --seeds 0 1 2 [--ranks 2] [--set key=value ...] [--finetune-set key=value ...]

Recipes (data prep, stage epochs) live in ``experiments/recipes.py``. Steps whose outputs exist
are reused (a finished pretrain is shared by every variant with the same pretrain overrides, e.g.
``cllm4rec`` and ``no_finetune``), so a rerun only does what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.recipes import RECIPES, VARIANTS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COLUMNS = ("recall@20", "recall@40", "ndcg@100")
BASELINES = ("popularity", "ease", "multvae")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repo root with output to ``log``; return wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+", shlex.join(cmd), flush=True)
    start = time.time()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{tail}")
    return time.time() - start


def _launcher(stage: str, ranks: int) -> list[str]:
    script = f"launchers/{stage}.py"
    if ranks == 1:
        return [sys.executable, script]
    return [
        str(BIN / "deepspeed"),
        "--num_gpus",
        str(ranks),
        "--no_local_rank",
        "--master_port",
        str(_port()),
        script,
    ]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var)


def _best_val(metrics: dict[str, Any], select: str = "ndcg@100") -> dict[str, float]:
    if "val" in metrics:
        return metrics["val"]
    history = metrics.get("validation_history") or [{}]
    return max(history, key=lambda h: h.get(select, -1.0))


def _summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed]}
    for split in ("test", "val"):
        out[split] = {}
        for c in COLUMNS:
            mean, std = _mean_std([r[split][c] for r in per_seed])
            out[split][c] = {"mean": mean, "std": std}
    out["wall_s"] = _mean_std([r["wall_s"] for r in per_seed])[0]
    out["per_seed"] = per_seed
    return out


class Experiment:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.recipe = RECIPES[args.dataset]
        self.out = Path(args.out).resolve()
        self.data = Path(args.data_dir).resolve() if args.data_dir else self.out / "data"
        self.results_path = self.out / "results.json"
        self.results = (
            json.loads(self.results_path.read_text()) if self.results_path.exists() else {}
        )
        self.results.update(dataset=args.dataset, ranks=args.ranks, data_dir=str(self.data))
        self.results.setdefault("rows", {})

    def save(self) -> None:
        self.results_path.write_text(json.dumps(self.results, indent=2))

    def prepare(self) -> None:
        if (self.data / "manifest.json").exists():
            return
        raw = self.args.raw_root
        prep = [o.replace("${RAW_DATA_ROOT}", raw) for o in self.recipe["prep"]]
        cmd = [
            sys.executable,
            "launchers/prepare.py",
            *prep,
            *self.args.prep_set,
            f"output_dir={self.data}",
            "progress=false",
        ]
        wall = _run(cmd, self.out / "logs" / "prepare.log")
        self.results["prepare"] = {"command": shlex.join(cmd), "wall_s": wall}
        self.save()

    def baseline(self, method: str) -> None:
        path = self.out / f"{method}.json"
        cmd = [
            sys.executable,
            "launchers/baseline.py",
            f"data_dir={self.data}",
            f"method={method}",
            f"output={path}",
        ]
        wall = None
        if not path.exists():
            wall = _run(cmd, self.out / "logs" / f"{method}.log")
        blob = json.loads(path.read_text())
        prev = self.results["rows"].get(method, {})
        self.results["rows"][method] = {
            "kind": "baseline",
            "command": shlex.join(cmd),
            "wall_s": wall if wall is not None else prev.get("wall_s"),
            "test": {c: {"mean": blob["test"][c], "std": 0.0} for c in COLUMNS},
            "val": {c: {"mean": blob["val"][c], "std": 0.0} for c in COLUMNS},
            **({"lambda": blob["lambda"]} if "lambda" in blob else {}),
        }
        self.save()

    def _common(self, variant: dict[str, Any], seed: int) -> list[str]:
        experiment = variant.get("experiment", self.recipe["experiment"])
        common = [
            f"data.dir={self.data}",
            "run.progress_bar=false",
            f"run.seed={seed}",
            f"model.seed={seed}",
        ]
        if experiment:
            common.insert(0, f"experiment={experiment}")
        return common + variant.get("both", []) + self.args.set

    def _stage(self, stage: str, run_dir: Path, overrides: list[str]) -> tuple[float, str]:
        cmd = [*_launcher(stage, self.args.ranks), *overrides, f"run.dir={run_dir}"]
        done = run_dir / ("export" if stage == "pretrain" else "metrics.json")
        wall_file = run_dir / "wall_s.txt"  # so a reused run still reports what it cost
        if not done.exists():
            wall_file.parent.mkdir(parents=True, exist_ok=True)
            wall = _run(cmd, run_dir.parent / f"{run_dir.name}.log")
            wall_file.write_text(f"{wall:.1f}\n")
        wall = float(wall_file.read_text()) if wall_file.exists() else float("nan")
        return wall, shlex.join(cmd)

    def variant(self, name: str, seed: int) -> dict[str, Any]:
        v = VARIANTS[name]
        common = self._common(v, seed)
        pre = common + self.recipe["pretrain"] + v.get("pretrain", []) + self.args.pretrain_set
        key = hashlib.sha1(json.dumps(pre).encode()).hexdigest()[:8]
        pre_dir = self.out / "runs" / f"pretrain-{key}"
        pre_wall, pre_cmd = self._stage("pretrain", pre_dir, pre)
        (pre_dir / "overrides.json").write_text(json.dumps(pre))
        export = pre_dir / "export"
        if v.get("finetune", True):
            ft = (
                common
                + self.recipe["finetune"]
                + v.get("finetune_overrides", [])
                + self.args.finetune_set
                + [f"stage.init_from={export}"]
            )
            stage = "finetune"
        else:
            ft = common + [f"stage.init_from={export}"]
            stage = "evaluate"
        ft_dir = self.out / "runs" / f"{name}-seed{seed}"
        ft_wall, ft_cmd = self._stage(stage, ft_dir, ft)
        metrics = json.loads((ft_dir / "metrics.json").read_text())
        return {
            "seed": seed,
            "test": {c: metrics["test"][c] for c in COLUMNS},
            "val": {c: _best_val(metrics)[c] for c in COLUMNS},
            "pretrain_wall_s": pre_wall,
            "stage_wall_s": ft_wall,
            "wall_s": pre_wall + ft_wall,
            "commands": [pre_cmd, ft_cmd],
            "run_dirs": [str(pre_dir), str(ft_dir)],
        }

    def main(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.prepare()
        for method in self.args.baselines:
            self.baseline(method)
        for name in self.args.variants:
            per_seed = [self.variant(name, seed) for seed in self.args.seeds]
            self.results["rows"][name] = {"kind": "cllm4rec", **_summarise(per_seed)}
            self.save()
        print(json.dumps({n: r["test"] for n, r in self.results["rows"].items()}, indent=1))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dataset", choices=sorted(RECIPES))
    p.add_argument("--out", required=True, help="run outputs (never inside the repo)")
    p.add_argument("--data-dir", help="an already prepared dataset (default <out>/data)")
    p.add_argument(
        "--raw-root", default=os.environ.get("RAW_DATA_ROOT", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--variants", nargs="*", default=["cllm4rec"], choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--set", nargs="*", default=[], help="overrides for both stages")
    p.add_argument("--pretrain-set", nargs="*", default=[])
    p.add_argument("--finetune-set", nargs="*", default=[])
    p.add_argument("--prep-set", nargs="*", default=[], help="extra data-prep overrides")
    return p.parse_args(argv)


if __name__ == "__main__":
    Experiment(parse()).main()
