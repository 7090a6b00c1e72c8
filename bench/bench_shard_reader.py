"""Shard reading: our reader against webdataset's on the same shards, local and over HTTP.

    python bench/bench_shard_reader.py --data DATA [--repeats 5] [--corpus all]

Readers, each decoding every sample of the chosen corpora to numpy arrays / JSON:

- ``ours``: ``cllm4rec_dist.data.samples.read_blocks`` (webdataset's tar iterators and I/O, the
  manifest's sha256 computed as the bytes stream, npy never unpickled);
- ``hand-written``: the reader it replaced (the whole file read, hashed, then walked with
  ``tarfile``), kept here as the peer;
- ``webdataset``: ``wds.WebDataset(urls, shardshuffle=False).decode()``, the library's own
  pipeline with its default decoders (no digest check).

Each is timed over every non-empty shard, ``--repeats`` times (median; the files stay in the page
cache after the first pass). Then ``ours`` and ``webdataset`` read the same shards from
``python -m http.server`` on 127.0.0.1 (curl under gopen). Prints MB/s per reader and the ratios;
the last line is ``ratio ours/hand-written X.XX webdataset/ours Y.YY``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds

from bench.harness import serve_directory
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


def timed(read, shards: list[tuple[str, str]], repeats: int) -> tuple[float, int]:
    """(median seconds per pass, samples per pass)."""
    times, samples = [], 0
    for _ in range(repeats):
        start, samples = time.perf_counter(), 0
        samples = read(shards)
        times.append(time.perf_counter() - start)
    return statistics.median(times), samples


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
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{len(entries)} shards, {megabytes:.1f} MB ({', '.join(corpora)}); load: {load}")

    local = [(manifest.shard_path(s), s.sha256) for s in entries]
    results = {}
    for name, read in (("ours", ours), ("hand-written", previous), ("webdataset", library)):
        seconds, samples = timed(read, local, args.repeats)
        results[name] = seconds
        rate = megabytes / seconds
        print(f"local  {name:<13}{seconds:8.3f} s {rate:8.1f} MB/s {samples} samples")

    with serve_directory(manifest.data_dir) as base:
        remote = [(location.join(base, s.path), s.sha256) for s in entries]
        for name, read in (("ours", ours), ("webdataset", library)):
            seconds, samples = timed(read, remote, args.repeats)
            results[f"http {name}"] = seconds
            rate = megabytes / seconds
            print(f"http   {name:<13}{seconds:8.3f} s {rate:8.1f} MB/s {samples} samples")
    print(f"http ours/webdataset {results['http webdataset'] / results['http ours']:.2f}")
    print(
        f"ratio ours/hand-written {results['hand-written'] / results['ours']:.2f} "
        f"webdataset/ours {results['ours'] / results['webdataset']:.2f}"
    )


if __name__ == "__main__":
    main()
