"""Online top-K over HTTP: ``launchers/serve.py`` under a closed-loop load, against FAISS
answering the same queries in-process. ``--backends local,ray`` measures both servers (the
one-process default, and Ray Serve with ``--replicas``) on the same exports and queries.

For each catalog size (default 100k and 1M items, d=64) it writes a synthetic export
(``Recommender.save_pretrained``: random ID rows, the tiny backbone, random histories), starts
``launchers/serve.py`` on it on a free port of 127.0.0.1, and runs ``--clients`` concurrent
clients, each sending its next request as soon as the last is answered (one keep-alive
connection each), for ``--seconds``: first requests for one trained user (``{"users": [u]}``),
then for one new user's history (``{"histories": [[...]]}``). It reports requests/s and
p50/p95/p99 latency of each.

Peer: the same item vectors in a FAISS ``IndexFlatIP`` answering the same user queries (their
vectors, computed beforehand) in-process, by as many threads as there are clients: the bound
without HTTP, batching, the backbone or masking. ``ratio`` = our requests/s / FAISS's.

``--prefilter`` sets ``serve.prefilter`` (recommend's bf16 first pass; auto: where the CPU has
AVX512-BF16); the header says whether it is on.

Last line: ``serve qps X p50 Y ms p99 Z ms`` (user requests at the largest catalog).
Full size: ``python -m bench.bench_serve``; CI size: ``--items 2000 --seconds 2``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from bench.harness import load_average, machine_line, peer_ratio
from cllm4rec_dist.api import Recommender
from cllm4rec_dist.config import ModelConfig
from cllm4rec_dist.distributed.spawn import free_port
from cllm4rec_dist.export import ExportMeta, ServingAssets
from cllm4rec_dist.model.loading import TINY_SPECIAL_TOKENS, build_backbone
from cllm4rec_dist.model.prompts import DEFAULT_TEMPLATES
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.topk import prefilter_supported

ROOT = Path(__file__).resolve().parents[1]
# --prefilter -> serve.prefilter (recommend's bf16 first pass; auto: where bf16 runs in hardware)
PREFILTER = {"auto": "null", "on": "true", "off": "false"}


def tokenizer() -> PreTrainedTokenizerFast:
    """A small word-level tokenizer of the prompt templates' words (what the prompts need)."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words = " ".join(DEFAULT_TEMPLATES.values()).replace("{user}", "").replace("{item}", "")
    tok.train_from_iterator(
        [words], trainers.WordLevelTrainer(special_tokens=list(TINY_SPECIAL_TOKENS.values()))
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **TINY_SPECIAL_TOKENS)


def synthetic_export(out: Path, users: int, items: int, dim: int, history: int) -> Path:
    """A servable export of random rows: ``users`` trained users with ``history`` random items
    each, ``items`` items, the tiny backbone (one layer) of width ``dim``."""
    gen = torch.Generator().manual_seed(0)
    tok = tokenizer()
    model = ModelConfig(hidden_size=dim, num_layers=1, num_heads=1, intermediate_size=2 * dim)
    backbone = build_backbone(model, vocab_size=len(tok))
    tables = {}
    for name, rows in (("user_collab", users), ("item_collab", items)):
        tables[name] = DenseTable(rows, dim)
        with torch.no_grad():
            tables[name].weight.copy_(torch.randn(rows, dim, generator=gen) / dim**0.5)
    seen = torch.randint(0, items, (users * history,), generator=gen)
    offsets = torch.arange(0, users * history + 1, history)
    assets = ServingAssets(
        tok, dict(DEFAULT_TEMPLATES), None, 64,
        pa.array([f"u{i}" for i in range(users)]), pa.array([f"i{i}" for i in range(items)]),
        (offsets, seen), (torch.zeros(users + 1, dtype=torch.int64), seen[:0]), seen[:0],
    )  # fmt: skip
    meta = ExportMeta(
        num_users=users, num_items=items, hidden_size=dim, vocab_size=len(tok),
        model=OmegaConf.to_container(OmegaConf.structured(model), resolve=True),
        backbone_state=True,
    )  # fmt: skip
    return Recommender(backbone, tables, assets, meta).save_pretrained(out)


def run_clients(client, clients: int) -> None:
    """``client(i)`` for i < ``clients``, each on its own thread, until all have returned."""
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float) -> list[float]:
    """Latencies (s) of every request answered in ``seconds`` by ``clients`` closed-loop
    clients, each cycling through its share of ``bodies``; any answer but 200 fails the bench."""
    latencies: list[float] = []
    lock, stop = threading.Lock(), time.perf_counter() + seconds
    errors: list[str] = []

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, n = [], index
        while time.perf_counter() < stop and not errors:
            body = bodies[n % len(bodies)]
            n += clients
            start = time.perf_counter()
            conn.request("POST", "/recommend", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
            mine.append(time.perf_counter() - start)
            if reply.status != 200:
                errors.append(f"{reply.status} {data[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    run_clients(client, clients)
    if errors:
        raise RuntimeError(f"the server answered {errors[0]}")
    return latencies


def faiss_loop(index: faiss.Index, queries: np.ndarray, k: int, clients: int, seconds: float):
    """The peer's latencies: ``clients`` threads each searching one query at a time."""
    latencies: list[float] = []
    lock, stop = threading.Lock(), time.perf_counter() + seconds

    def client(i: int) -> None:
        mine, n = [], i
        while time.perf_counter() < stop:
            start = time.perf_counter()
            index.search(queries[n % len(queries)][None], k)
            mine.append(time.perf_counter() - start)
            n += clients
        with lock:
            latencies.extend(mine)

    run_clients(client, clients)
    return latencies


def figures(latencies: list[float], seconds: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"qps": len(latencies) / seconds, "p50": q[49] * 1e3, "p95": q[94] * 1e3,
            "p99": q[98] * 1e3}  # fmt: skip


def line(name: str, f: dict[str, float]) -> str:
    return (
        f"  {name:<22} {f['qps']:8.1f} req/s   p50 {f['p50']:7.1f} ms   p95 {f['p95']:7.1f} ms"
        f"   p99 {f['p99']:7.1f} ms"
    )


def serve(export: Path, port: int, backend: str, args: argparse.Namespace) -> subprocess.Popen:
    """launchers/serve.py on ``export``, once /healthz answers."""
    cmd = [
        sys.executable, str(ROOT / "launchers" / "serve.py"), f"init_from={export}",
        f"serve.port={port}", f"serve.backend={backend}", f"serve.max_batch_size={args.max_batch}",
        f"serve.prefilter={PREFILTER[args.prefilter]}",
    ]  # fmt: skip
    if backend == "ray":
        cmd += [
            f"serve.replicas={args.replicas}", f"ray.num_cpus={args.ray_cpus}",
            f"serve.cpus_per_replica={args.ray_cpus / args.replicas}",
        ]  # fmt: skip
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 900  # a busy machine: minutes
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve.py exited {proc.returncode}: {proc.stdout.read()[-3000:]!r}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(1)
    proc.terminate()
    raise RuntimeError("serve.py did not answer /healthz within 900 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: the command stops Serve and Ray itself
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_size(items: int, args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    """Figures at ``items``: per backend ``<backend>/users`` and ``<backend>/histories``, and
    ``faiss``."""
    export = synthetic_export(work / f"export-{items}", args.users, items, args.dim, args.history)
    rng = np.random.default_rng(1)
    users = [f"u{u}" for u in rng.integers(0, args.users, 4096)]
    histories = [[f"i{i}" for i in rng.integers(0, items, args.history)] for _ in range(4096)]
    user_bodies = [json.dumps({"users": [u], "k": args.k}).encode() for u in users]
    history_bodies = [json.dumps({"histories": [h], "k": args.k}).encode() for h in histories]
    out = {}
    for backend in args.backends:
        port = free_port()
        proc = serve(export, port, backend, args)
        try:
            closed_loop(port, user_bodies, args.clients, min(2.0, args.seconds))  # warm-up
            for kind, bodies in (("users", user_bodies), ("histories", history_bodies)):
                latencies = closed_loop(port, bodies, args.clients, args.seconds)
                out[f"{backend}/{kind}"] = figures(latencies, args.seconds)
        finally:
            stop(proc)
    rec = Recommender.from_pretrained(export)
    index = faiss.IndexFlatIP(args.dim)
    index.add(rec.item_vectors().numpy())
    queries = rec.user_vectors(users=users[:512]).numpy()
    out["faiss"] = figures(
        faiss_loop(index, queries, args.k, args.clients, args.seconds), args.seconds
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="100000,1000000", help="catalog sizes, comma-separated")
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=20, help="items per user's history")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--backends", default=["local"], type=lambda v: v.split(","),
        help="serve.backend values, comma-separated; the last line is the first one's",
    )  # fmt: skip
    parser.add_argument("--replicas", type=int, default=1, help="backend ray")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="where the exports go (a tmp dir)")
    parser.add_argument(
        "--prefilter", choices=sorted(PREFILTER), default="auto",
        help="serve.prefilter: the bf16 first pass of recommend's top-K",
    )  # fmt: skip
    args = parser.parse_args()
    prefilter = {"on": True, "off": False}.get(args.prefilter, prefilter_supported())
    print(machine_line())
    print(
        f"{args.clients} closed-loop clients x {args.seconds:g} s per phase over loopback, "
        f"k={args.k}, d={args.dim}, {args.users} trained users, histories of {args.history}; "
        f"backends {','.join(args.backends)} (ray: {args.replicas} replica(s)), "
        f"max batch {args.max_batch}; bf16 prefilter {'on' if prefilter else 'off'} "
        f"(--prefilter {args.prefilter})"
    )
    sizes = [int(s) for s in args.items.split(",")]
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)  # the temporary exports go in a child of it
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for items in sizes:
            out = run_size(items, args, Path(tmp))
            print(f"{items} items (load average {load_average()}):")
            for backend in args.backends:
                print(line(f"{backend}: user requests", out[f"{backend}/users"]))
                print(line(f"{backend}: history requests", out[f"{backend}/histories"]))
            print(line("FAISS IndexFlatIP", out["faiss"]))
            for backend in args.backends:
                ratio = peer_ratio(1 / out["faiss"]["qps"], 1 / out[f"{backend}/users"]["qps"])
                print(f"  ratio {ratio:.2f} {backend} (ours / FAISS requests/s, user requests; "
                      "> 1: ours is faster)")  # fmt: skip
    u = out[f"{args.backends[0]}/users"]
    print(f"serve qps {u['qps']:.1f} p50 {u['p50']:.1f} ms p99 {u['p99']:.1f} ms")


if __name__ == "__main__":
    main()
