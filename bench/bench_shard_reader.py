"""Shard reading: our reader against webdataset's on the same shards, local and over HTTP.

    python -m bench.bench_shard_reader --data DATA [--repeats 5] [--corpus all]

Readers, each decoding every sample of the chosen corpora to numpy arrays / JSON:

- ``ours``: ``cllm4rec_dist.data.samples.read_blocks`` (webdataset's tar iterators and I/O, the
  manifest's sha256 computed as the bytes stream, npy never unpickled);
- ``hand-written``: the reader it replaced (the whole file read, hashed, then walked with
  ``tarfile``), kept here as the peer;
- ``webdataset``: ``wds.WebDataset(urls, shardshuffle=False).decode()``, the library's own
  pipeline with its default decoders (no digest check).

Each reads every non-empty shard once per round, in ``--repeats`` interleaved rounds after one
untimed pass that counts the samples (bench/harness.py; median; the files stay in the page
cache). Then ``ours`` and ``webdataset`` read the same shards from ``python -m http.server`` on
127.0.0.1 (curl under gopen). Prints the machine and its load, MB/s per reader and the ratios; the last line is
``ratio X.XX webdataset Y.YY``: the hand-written reader's time over ours, and webdataset's
pipeline's over ours (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import webdataset as wds

from bench.harness import (
    final_line,
    interleaved,
    load_average,
    machine_line,
    median,
    peer_ratio,
    serve_directory,
)
from cllm4rec_dist.data import location
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.samples import read_blocks

KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def hand_written(path: str, sha256: str) -> list[dict]:
    """The previous reader: bytes in memory, hashed, then ``tarfile`` over them."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path}: sha256 differs")
    blocks, sample = [], {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        for member in tar:
            match = KEY_EXT.match(member.name)
            if not member.isfile() or match is None:
                continue
            key, ext = match.groups()
            if sample and sample["__key__"] != key:
                blocks.append(sample)
                sample = {}
            sample["__key__"] = key
            raw = tar.extractfile(member).read()
            if ext.endswith("npy"):
                sample[ext[:-4]] = np.load(io.BytesIO(raw))
            elif ext.endswith("json"):
                sample[ext[:-5]] = json.loads(raw)
            else:
                sample[ext] = raw
    if sample:
        blocks.append(sample)
    return blocks


def ours(shards):
    return sum(1 for address, digest in shards for _ in read_blocks(address, digest))


def previous(shards):
    return sum(len(hand_written(address, digest)) for address, digest in shards)


def library(shards):
    urls = [address for address, _ in shards]
    return sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset directory")
    parser.add_argument("--corpus", default="all", help="collaborative|content|recommendation")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    manifest = load_manifest(args.data)
    corpora = list(manifest.corpora) if args.corpus == "all" else [args.corpus]
    entries = [s for c in corpora for s in manifest.corpus(c).shards if s.bytes > 0]
    megabytes = sum(s.bytes for s in entries) / 1e6
    print(machine_line())
    print(f"{len(entries)} shards, {megabytes:.1f} MB ({', '.join(corpora)})")

    def report(where: str, shards: list[tuple[str, str]], readers: dict) -> dict[str, float]:
        counts = {name: read(shards) for name, read in readers.items()}  # samples per pass
        seconds = median(interleaved({n: lambda r=r: r(shards) for n, r in readers.items()},
                                     args.repeats, warmup=0))  # fmt: skip
        for name, took in seconds.items():
            print(f"{where:<7}{name:<13}{took:8.3f} s {megabytes / took:8.1f} MB/s "
                  f"{counts[name]} samples")  # fmt: skip
        return seconds

    local = [(manifest.shard_path(s), s.sha256) for s in entries]
    here = report("local", local, {"ours": ours, "hand-written": previous, "webdataset": library})
    with serve_directory(manifest.data_dir) as base:
        remote = [(location.join(base, s.path), s.sha256) for s in entries]
        http = report("http", remote, {"ours": ours, "webdataset": library})
    print(f"webdataset/ours over http {peer_ratio(http['webdataset'], http['ours']):.2f}")
    print("load average (1, 5, 15 min) at the end: " + load_average())
    print(final_line(ratio=peer_ratio(here["hand-written"], here["ours"]),
                     webdataset=peer_ratio(here["webdataset"], here["ours"])))  # fmt: skip


if __name__ == "__main__":
    main()
