"""Benchmark of data prep: our Ray pipeline vs a single-process pandas/pyarrow script.

    python -m bench.bench_prep --users 1000000          # the reference run (docs/data_prep.md)
    python -m bench.bench_prep --users 2000 --items 300  # smoke test, seconds

1. Materialise the common input once (cached in --workdir): synthetic users x ~50 interactions as
   Parquet (user, item, rating, timestamp) plus an item-text Parquet (item, text).
2. (a) ``launchers/prepare.py source=table`` on a local Ray with --num-cpus CPUs;
   (b) ``baseline()`` below: read everything with pyarrow/pandas, factorize, dedupe, the same
   split rule, the same shard layout, the same tokenizer, in one process.
Both run as child processes; a sampler sums the RSS of each one's whole process tree (Ray's
raylet, GCS and workers included) every 0.2 s. Prints wall time, interactions/s, peak RSS and
baseline_time / ours, and checks that both produced the same split; last line ``ratio X.XX``
(baseline / ours wall time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import final_line, load_average
from cllm4rec_dist.data.format import SPLITS, USER_CSR
from data_prep import synthetic
from data_prep.config import SyntheticSourceConfig
from data_prep.pipeline.arrays import sorted_unique
from data_prep.pipeline.arrowio import write_bytes_atomic, write_parquet
from data_prep.pipeline.hashing import mix64
from data_prep.pipeline.layout import plan_shards
from data_prep.pipeline.split import assign_splits
from data_prep.pipeline.tarwrite import json_bytes, npy_bytes, tar_bytes
from data_prep.pipeline.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]

# Layout and sizes shared by both implementations (passed to prepare.py as overrides).
LAYOUT = {"users_per_sample": 256, "docs_per_sample": 256, "samples_per_shard": 64,
          "shard_multiple": 8}  # fmt: skip
SPLIT = {"val_fraction": 0.1, "test_fraction": 0.1, "min_items_for_eval": 3}
SEED = 0
VOCAB = 1024
TOKENIZER_DOCS = 50_000
PROMPTS = [
    "<user> has interacted with", "<user> writes the following review for <item>:",
    "The description of <item> is:", "The description of <user> is:",
    "<user> has interacted with <items>, <user> will interact with",
]  # fmt: skip


# --- input ------------------------------------------------------------------------------------
def _source_config(users: int, items: int, mean: float) -> SyntheticSourceConfig:
    return SyntheticSourceConfig(
        num_users=users, num_items=items, num_topics=32, mean_interactions=mean,
        review_fraction=0.0, user_text_fraction=0.0, users_per_block=4096, seed=SEED,
    )  # fmt: skip


def _block(args: tuple[synthetic.Catalog, dict, int]) -> pa.Table:
    catalog, cfg, block = args
    return synthetic.generate_block(catalog, cfg, block)["interactions"]


def materialise_input(folder: Path, users: int, items: int, mean: float) -> int:
    """Write (or reuse) the benchmark input; returns the number of interaction rows."""
    cfg = asdict(_source_config(users, items, mean))
    meta = folder / "meta.json"
    if meta.is_file() and json.loads(meta.read_text())["config"] == cfg:
        return json.loads(meta.read_text())["rows"]
    folder.mkdir(parents=True, exist_ok=True)
    catalog = synthetic.make_catalog(cfg)
    pq.write_table(synthetic.item_text_table(catalog), folder / "items.parquet")
    rows = 0
    jobs = [(catalog, cfg, b) for b in range(synthetic.num_blocks(cfg))]
    with (
        multiprocessing.get_context("fork").Pool(2) as pool,
        pq.ParquetWriter(folder / "interactions.parquet", _block(jobs[0]).schema) as writer,
    ):
        for table in pool.imap(_block, jobs):
            writer.write_table(table)
            rows += table.num_rows
    meta.write_text(json.dumps({"config": cfg, "rows": rows}))
    return rows


# --- baseline ---------------------------------------------------------------------------------
def _write_user_shards(out: Path, corpus: str, users: np.ndarray, csr: dict) -> None:
    members = USER_CSR[corpus]
    plans = plan_shards(len(users), LAYOUT["users_per_sample"], LAYOUT["samples_per_shard"],
                        LAYOUT["shard_multiple"])  # fmt: skip
    for plan in plans:
        samples, row = [], plan.start
        for j, size in enumerate(plan.sample_sizes):
            sample = [("users.npy", npy_bytes(users[row : row + size]))]
            for split, (offsets_name, items_name) in members.items():
                offsets, flat = csr[split]
                sub = offsets[row : row + size + 1]
                sample.append((offsets_name, npy_bytes(sub - sub[0])))
                sample.append((items_name, npy_bytes(flat[sub[0] : sub[-1]])))
            samples.append((f"{plan.first_sample + j:09d}", sample))
            row += size
        write_bytes_atomic(out / corpus / f"shard-{plan.index:06d}.tar", tar_bytes(samples))


@contextlib.contextmanager
def _step(cpu: dict[str, float], name: str):
    """CPU seconds of this (single) process in one step of the baseline."""
    start = time.process_time()
    yield
    cpu[name] = time.process_time() - start


def baseline(input_dir: Path, out: Path) -> None:
    """The same work as the pipeline on this input, written the ordinary single-process way.
    Its steps' CPU seconds go to ``counts.json`` (``cpu_s``), beside the pipeline's phases."""
    cpu: dict[str, float] = {}
    with _step(cpu, "read + factorize"):
        table = pq.read_table(input_dir / "interactions.parquet", columns=["user", "item"])
        frame = table.to_pandas()
        del table
        user_codes, users = pd.factorize(frame["user"], sort=True)
        item_codes, items = pd.factorize(frame["item"], sort=True)
        del frame
    with _step(cpu, "dedupe"):
        pairs = sorted_unique(user_codes.astype(np.int64) * len(items) + item_codes)
    with _step(cpu, "id maps + split + parquet"):
        csr = _maps_and_splits(out, pairs, users, items)
    with _step(cpu, "user shards"):
        all_users = np.arange(len(users), dtype=np.int64)
        _write_user_shards(out, "collaborative", all_users, csr)
        _write_user_shards(out, "recommendation", all_users, csr)
    with _step(cpu, "content shards + tokenizer"):
        _content_and_tokenizer(input_dir, out, items)
    counts = {name: int(len(csr[name][1])) for name in SPLITS}
    (out / "counts.json").write_text(json.dumps({
        "users": len(users), "items": len(items), "interactions": counts, "cpu_s": cpu,
    }))  # fmt: skip


def _maps_and_splits(out: Path, pairs: np.ndarray, users, items) -> dict:
    """Id maps and split Parquet written; returns each split's per-user CSR (offsets, items)."""
    u, i = pairs // len(items), pairs % len(items)
    for name, ids in (("users", users), ("items", items)):
        ids = pa.array(np.asarray(ids, dtype=object), pa.string())
        write_parquet(out / "id_maps" / f"{name}.parquet",
                      pa.table({"raw_id": ids, "index": np.arange(len(ids))}))  # fmt: skip
    split = assign_splits(u, i, SEED, **{k: v for k, v in SPLIT.items() if k != "min_items_for_eval"},
                          min_items=SPLIT["min_items_for_eval"])  # fmt: skip
    csr = {}
    for code, name in enumerate(SPLITS):
        sel = split == code  # pairs are sorted by (user, item), so each split is too
        write_parquet(out / "splits" / name / "part-00000.parquet",
                      pa.table({"user": u[sel], "item": i[sel]}))  # fmt: skip
        offsets = np.concatenate([[0], np.cumsum(np.bincount(u[sel], minlength=len(users)))])
        csr[name] = (offsets, i[sel])
    return csr


def _content_and_tokenizer(input_dir: Path, out: Path, items) -> None:
    texts = pq.read_table(input_dir / "items.parquet").to_pandas()
    texts["index"] = pd.Index(items).get_indexer(texts["item"])
    texts = texts[texts["index"] >= 0].sort_values(["index", "text"])
    plans = plan_shards(len(texts), LAYOUT["docs_per_sample"], LAYOUT["samples_per_shard"],
                        LAYOUT["shard_multiple"])  # fmt: skip
    index, text = texts["index"].to_numpy(np.int64), texts["text"].tolist()
    for plan in plans:
        samples, row = [], plan.start
        for j, size in enumerate(plan.sample_sizes):
            docs = slice(row, row + size)
            samples.append((f"{plan.first_sample + j:09d}", [
                ("kinds.npy", npy_bytes(np.ones(size, np.int64))),
                ("users.npy", npy_bytes(np.full(size, -1, np.int64))),
                ("items.npy", npy_bytes(index[docs])),
                ("texts.json", json_bytes(text[docs])),
            ]))  # fmt: skip
            row += size
        write_bytes_atomic(out / "content" / f"shard-{plan.index:06d}.tar", tar_bytes(samples))
    rng = np.random.default_rng(SEED)
    sample = rng.choice(len(text), min(len(text), TOKENIZER_DOCS), replace=False)
    train_tokenizer([text[k] for k in sorted(sample)], PROMPTS, VOCAB, 2,
                    out / "tokenizer" / "tokenizer.json")  # fmt: skip


# --- measuring --------------------------------------------------------------------------------
def run_measured(cmd: list[str]) -> tuple[float, int, float]:
    """Run ``cmd``; returns (wall s, peak summed RSS of its process tree, CPU s).

    CPU seconds (user + system) are summed over every process of the tree, each at the last
    sample before it exited: a measure of the work done that the machine's load does not change.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak, cpu, done = 0, {}, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
            peak = max(peak, total)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{output[-4000:]}")
    return wall, peak, sum(cpu.values())


def _split_sets(out: Path) -> dict[str, int]:
    """A checksum of each split's (user, item) set, independent of part layout."""
    result = {}
    for split in SPLITS:
        t = pq.read_table(out / "splits" / split)
        keys = t["user"].to_numpy().astype(np.uint64) << np.uint64(32)
        # Sum of hashed pairs (uint64, wrapping): equal sets give equal sums in any order.
        result[split] = int(mix64(keys | t["item"].to_numpy().astype(np.uint64)).sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--mean-interactions", type=float, default=50.0)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--buckets", type=int, default=0, help="0 = one per ~1M interactions")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_out")
    parser.add_argument("--baseline-only", nargs=2, type=Path, metavar=("INPUT", "OUT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.baseline_only:
        baseline(*args.baseline_only)
        return

    # The machine is shared: the load around the timed runs says how far to trust wall times.
    print("load average (1, 5, 15 min) at the start: " + load_average(), flush=True)
    input_dir = args.workdir / f"input-{args.users}"
    print(f"materialising input in {input_dir} ...", flush=True)
    rows = materialise_input(input_dir, args.users, args.items, args.mean_interactions)
    buckets = args.buckets or max(4, 2 ** math.ceil(math.log2(max(rows / 1e6, 1))))
    out = args.workdir / "ours-table"
    overrides = [
        "source=table", f"source.path={input_dir / 'interactions.parquet'}",
        "source.rating_col=rating", "source.timestamp_col=timestamp",
        f"source.item_text_path={input_dir / 'items.parquet'}", f"output_dir={out}",
        f"ray.num_cpus={args.num_cpus}", f"staging.buckets={buckets}", "progress=false",
        f"tokenizer.vocab_size={VOCAB}", f"tokenizer.max_documents={TOKENIZER_DOCS}",
        f"seed={SEED}", *[f"layout.{k}={v}" for k, v in LAYOUT.items()],
    ]  # fmt: skip
    print(f"{rows:,} interactions; ours via the table reader ({args.num_cpus} CPUs, "
          f"{buckets} buckets) ...", flush=True)  # fmt: skip
    prepare = [sys.executable, str(REPO / "launchers" / "prepare.py"), *overrides]
    results = {"ours, table reader": (*run_measured(prepare), out)}
    print("running the single-process baseline ...", flush=True)
    base_out = args.workdir / "baseline"
    base_cmd = [sys.executable, "-m", "bench.bench_prep", "--baseline-only", str(input_dir)]
    base_cmd.append(str(base_out))
    base = run_measured(base_cmd)

    base_counts = json.loads((base_out / "counts.json").read_text())
    base_splits = _split_sets(base_out)
    print(f"\ninput: {args.users:,} users, {rows:,} interactions, {args.items:,} items; "
          f"ours on {args.num_cpus} CPUs")  # fmt: skip
    print(f"{'':28}{'wall s':>9}{'interactions/s':>16}{'peak RSS GB':>13}{'CPU s':>8}"
          f"{'base/ours':>11}")  # fmt: skip
    agree = True
    for name, (wall, peak, cpu, out) in results.items():
        print(f"{name:28}{wall:>9.1f}{rows / wall:>16,.0f}{peak / 2**30:>13.2f}{cpu:>8.0f}"
              f"{base[0] / wall:>10.2f}x")  # fmt: skip
        manifest = json.loads((out / "manifest.json").read_text())
        counts = {k: manifest["counts"][k] for k in ("users", "items", "interactions")}
        agree &= counts == {k: base_counts[k] for k in counts} and _split_sets(out) == base_splits
    print(f"{'baseline (1 process)':28}{base[0]:>9.1f}{rows / base[0]:>16,.0f}"
          f"{base[1] / 2**30:>13.2f}{base[2]:>8.0f}")  # fmt: skip
    for name, (*_, out) in results.items():
        run_log = json.loads((out / "run_log.json").read_text())
        timings, cpu = run_log["timings_s"], run_log.get("cpu_s", {})
        print(f"{name} phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        # The profile: CPU seconds of the whole process tree per phase, and the share of the
        # phase's capacity (CPUs x wall) they used; the rest of it stood idle.
        print(f"{name} phases, CPU s (of {args.num_cpus} x wall): " + ", ".join(
            f"{k} {cpu[k]:.1f} ({cpu[k] / (args.num_cpus * timings[k]):.0%})"
            for k in cpu if timings.get(k)
        ))  # fmt: skip
    print("baseline steps, CPU s: " + ", ".join(
        f"{k} {v:.1f}" for k, v in base_counts.get("cpu_s", {}).items()
    ))  # fmt: skip
    print("load average (1, 5, 15 min) at the end: " + load_average())
    print(f"outputs agree with the baseline (counts and split sets): {agree}")
    if not agree:
        sys.exit(1)
    wall = next(iter(results.values()))[0]
    print(final_line(ratio=base[0] / wall))


if __name__ == "__main__":
    main()
