"""The data-prep job: source -> staging -> dedupe/k-core -> id maps -> finalize -> shards.

Phases (each a set of Ray tasks over buckets or shards, see the modules named):
1. ingest (``ingest``): the source's records, cleaned and hash-partitioned by user;
2. reduce (``reduce``): per-bucket dedupe, iterated k-core -> final user and item sets;
3. id maps (``idmaps``): contiguous indices by sorted raw id, ``id_maps/*.parquet``;
4. finalize (``finalize``): split, ``splits/*``, per-bucket CSR and content inputs;
5. shards (``shards``): the three WebDataset corpora in a balanced layout (``layout``);
6. tokenizer, manifest, run log, summary.

Intermediate files live in ``<output_dir>/.prep_work`` and are removed after success; the shard
journal in it lets a rerun after a crash skip finished shards.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import ray
from omegaconf import DictConfig, OmegaConf

from cllm4rec_dist.cli.outputs import check_output_dir, claim_output_dir
from cllm4rec_dist.data import location
from cllm4rec_dist.data.cold import COLD_ITEM_TEXTS, COLD_USER_PAIRS, cold_ids
from cllm4rec_dist.data.format import CORPORA, MANIFEST_NAME, SCHEMA_VERSION, SPLITS, sha256_file
from cllm4rec_dist.data.id_maps import raw_ids_by_index
from cllm4rec_dist.data.manifest import ManifestError, load_manifest
from data_prep import synthetic
from data_prep.config import OUTPUT_SECTIONS, check_config
from data_prep.pipeline import idmaps, ingest, layout, reduce, report, shards
from data_prep.pipeline.finalize import (
    BucketSummary,
    FinalizeJob,
    ItemMap,
    finalize_bucket,
    tokenizer_sample_per_bucket,
)
from data_prep.pipeline.manifest import created_by, file_info, read_manifest, write_manifest
from data_prep.pipeline.raytools import ray_session, run_all
from data_prep.pipeline.split import SPLIT_RULE
from data_prep.pipeline.staging import StagingArea
from data_prep.pipeline.tokenizer import train_tokenizer

log = logging.getLogger(__name__)
WORK_DIR = ".prep_work"
HYDRA_DIR = ".hydra"
COMMAND = "prepare"


class EmptyDatasetError(ValueError):
    """No interaction is left after reading and filtering (and ``allow_empty`` is false)."""


TOKENIZER = "tokenizer/tokenizer.json"


class Timer:
    """Wall time and CPU time per named phase, in order. CPU seconds are those of this process
    and every descendant alive at the phase's ends (Ray's GCS, raylet and workers, which live
    for the whole session): wall x CPUs minus them is the capacity a phase leaves idle."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), tree_cpu_seconds()
        log.info("phase %s ...", name)
        yield
        self.seconds[name] = time.perf_counter() - start
        self.cpu[name] = max(0.0, tree_cpu_seconds() - cpu)


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants."""
    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _check_not_empty(
    cfg: DictConfig, source: dict[str, Any], reduced: reduce.ReduceResult, rejected: Any
) -> None:
    users = sum(len(u) for u in reduced.bucket_users)
    if (users and len(reduced.items)) or cfg.allow_empty:
        return
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])[:5])
    where = source.get("path") or source.get("name")
    raise EmptyDatasetError(
        f"{where}: no interactions left ({users} users, {len(reduced.items)} items after reading "
        f"and filtering; rejected: {reasons or 'none'}); set allow_empty=true to write an empty "
        "dataset anyway"
    )


def _record_hydra_config(cfg: DictConfig, output: Path) -> None:
    """``<output>/.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them (when run under
    Hydra); written only after the checks passed (config.yaml sets hydra.output_subdir: null)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = output / HYDRA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), folder / "overrides.yaml")


def _reset_work(work: Path) -> None:
    """Clear intermediate files of an earlier attempt, keeping its shard journal."""
    for name in ("staging", "reduce", "final"):
        shutil.rmtree(work / name, ignore_errors=True)
    (work / "journal").mkdir(parents=True, exist_ok=True)


def _open_source(source: dict[str, Any]) -> Any:
    """The source's reader after its schema check (None for synthetic, whose config is checked
    instead): raises before any work if a file, column or key is wrong."""
    if source["name"] == "synthetic":
        synthetic.check_source_config(source)
        return None
    from data_prep.readers.base import build_reader

    reader = build_reader(source)
    reader.check_schema()
    return reader


def _ingest(cfg: DictConfig, source: dict[str, Any], reader: Any, area: StagingArea):
    min_rating = cfg.filter.min_rating
    if reader is None:
        return ingest.ingest_synthetic(source, area, min_rating, cfg.progress)
    return ingest.ingest_reader(reader, area, cfg.staging.chunk_rows, min_rating, cfg.progress)


def _id_maps(
    output: Path, reduced: reduce.ReduceResult, grown_from: Path | None
) -> tuple[list[np.ndarray], ItemMap, int]:
    """Write both id maps; returns (each bucket's users' global indices, the item map, number
    of users). With ``grown_from`` the old maps' indices are kept and new ids appended."""
    users, bucket_index = idmaps.assign_user_indices(reduced.bucket_users)
    if grown_from is None:
        idmaps.write_id_map(output / "id_maps" / "users.parquet", users)
        idmaps.write_id_map(output / "id_maps" / "items.parquet", reduced.items)
        return bucket_index, ItemMap.sorted_order(reduced.items), len(users)
    old_users = raw_ids_by_index(grown_from, "users")
    old_items = raw_ids_by_index(grown_from, "items")
    u_sorted, u_index, u_by_index = idmaps.grow_map(old_users, users)
    # The present users' grown index, by their rank among the present users (bucket_index).
    remap = u_index[pc.index_in(users.cast(pa.string()), value_set=u_sorted).to_numpy()]
    i_sorted, i_index, i_by_index = idmaps.grow_map(old_items, reduced.items)
    idmaps.write_grown_map(output / "id_maps" / "users.parquet", u_by_index)
    idmaps.write_grown_map(output / "id_maps" / "items.parquet", i_by_index)
    log.info(
        "id maps grown from %s: users %d -> %d, items %d -> %d",
        grown_from, len(old_users), len(u_by_index), len(old_items), len(i_by_index),
    )  # fmt: skip
    item_map = ItemMap(i_sorted, i_index, len(i_by_index))
    return [remap[b] for b in bucket_index], item_map, len(u_by_index)


def is_dataset(path: Path) -> bool:
    """A directory prepare wrote before output directories were marked: a manifest of this
    format, or the work folder of an interrupted run."""
    if (path / WORK_DIR).is_dir():
        return True
    try:
        return "schema_version" in read_manifest(path)
    except (OSError, ValueError):
        return False


# The files of the old dataset that a grown one reuses: checked against its manifest, since a
# changed map would hand out duplicate or shifted indices.
_REUSED = ("id_maps/users.parquet", "id_maps/items.parquet", TOKENIZER)


def _grown_from(cfg: DictConfig) -> tuple[Path | None, dict[str, Any] | None]:
    """(old dataset dir, the manifest's ``grown_from`` record) for ``id_maps_from``; ValueError
    naming the file when the old dataset's id maps or tokenizer differ from its manifest."""
    if not cfg.id_maps_from:
        return None, None
    # Growing reads the old id maps with Ray tasks and copies its tokenizer: local files.
    old = location.local_dir(cfg.id_maps_from, "id_maps_from (growing a catalog)")
    if old == Path(cfg.output_dir).expanduser().resolve():
        raise ValueError(
            f"id_maps_from={cfg.id_maps_from} is output_dir: a grown dataset goes to a new output_dir"
        )
    try:
        manifest = load_manifest(old)
    except (ManifestError, FileNotFoundError) as err:
        raise ValueError(
            f"id_maps_from={cfg.id_maps_from}: not a prepared dataset: {err}"
        ) from None
    if manifest.tokenizer is None or not (old / manifest.tokenizer).exists():
        raise ValueError(f"id_maps_from={cfg.id_maps_from}: the dataset has no tokenizer file")
    listed = read_manifest(old).get("files", {})
    for relative in _REUSED:
        path = old / relative
        if relative not in listed or not path.is_file():
            raise ValueError(f"id_maps_from: {path} is missing or not listed in {MANIFEST_NAME}")
        if sha256_file(path) != listed[relative].get("sha256"):
            raise ValueError(
                f"id_maps_from: {path}: sha256 differs from {old / MANIFEST_NAME} (changed after "
                "it was prepared); growing from it would give ids other indices"
            )
    record = {
        "dir": str(old),
        "manifest_sha256": manifest.sha256,
        "num_users": manifest.num_users,
        "num_items": manifest.num_items,
    }
    return old, record


def _finalize(
    cfg: DictConfig,
    area: StagingArea,
    work: Path,
    output: Path,
    reduced: reduce.ReduceResult,
    bucket_index: list[np.ndarray],
    item_map: ItemMap,
    num_users: int,
) -> list[BucketSummary]:
    items_ref = ray.put(item_map)
    per_bucket = tokenizer_sample_per_bucket(cfg.tokenizer.max_documents, area.buckets)
    split_cfg = OmegaConf.to_container(cfg.split)
    refs = [
        finalize_bucket.remote(
            area,
            FinalizeJob(
                bucket=b,
                reduce_dir=reduce.bucket_folder(work, b),
                final_dir=work / "final" / f"bucket-{b:05d}",
                output_dir=output,
                users=reduced.bucket_users[b],
                user_index=bucket_index[b],
                seed=cfg.seed,
                split=split_cfg,
                num_users=num_users,
                min_user=cfg.filter.k_core_user,
                tokenizer_sample=per_bucket,
            ),
            items_ref,
        )
        for b in range(area.buckets)
    ]
    return run_all(refs, "finalize (split, content)", cfg.progress)


def _shard_jobs(cfg: DictConfig, work: Path, output: Path, buckets: list[BucketSummary]):
    digests = [b.digest for b in buckets]
    jobs = []
    for corpus in CORPORA:
        if corpus == "content":
            rows = [b.documents for b in buckets]
            per_sample = cfg.layout.docs_per_sample
        else:
            rows = [b.users for b in buckets]
            per_sample = cfg.layout.users_per_sample
        total = sum(rows)
        plans = layout.plan_shards(
            total, per_sample, cfg.layout.samples_per_shard, cfg.layout.shard_multiple
        )
        for plan in plans:
            slices = layout.bucket_slices(plan.start, plan.stop, rows)
            jobs.append(
                shards.ShardJob(
                    corpus=corpus,
                    plan=plan,
                    slices=slices,
                    bucket_dirs=[work / "final" / f"bucket-{b:05d}" for b, _, _ in slices],
                    relative=f"{corpus}/shard-{plan.index:06d}.tar",
                    output_dir=output,
                    journal=work / "journal" / f"{corpus}-{plan.index:06d}.json",
                    identity=shards.shard_identity(corpus, plan, slices, digests),
                )
            )
    fail_after = cfg.debug.fail_after_shards
    for ordinal, job in enumerate(jobs):
        job.fail = fail_after is not None and ordinal >= fail_after
    return jobs


def _remove_stale(output: Path, manifest: dict[str, Any], buckets: int) -> None:
    """Delete shard files / split parts of earlier runs with another layout, and temp files."""
    for corpus, info in manifest["corpora"].items():
        keep = {Path(e["path"]).name for e in info["shards"]}
        for path in (output / corpus).glob("*"):
            if path.name not in keep and (path.name.startswith("shard-") or path.suffix == ".tmp"):
                path.unlink()
    for split in SPLITS:
        for path in (output / "splits" / split).glob("part-*"):
            part = re.fullmatch(r"part-(\d+)\.parquet", path.name)
            if path.suffix == ".tmp" or (part is not None and int(part.group(1)) >= buckets):
                path.unlink()
    # Cold parts exist only for buckets that held something out: keep exactly the listed ones.
    for folder in (COLD_ITEM_TEXTS, COLD_USER_PAIRS):
        for path in (output / folder).glob("*"):
            if f"{folder}/{path.name}" not in manifest["files"]:
                path.unlink()


def _counts(buckets: list[BucketSummary], users: int, items: int) -> dict[str, Any]:
    """users / items: the id maps' sizes (a grown catalog keeps old ids with no rows here)."""

    def total(attr: str, key: str) -> int:
        return sum(getattr(b, attr)[key] for b in buckets)

    return {
        "users": users,
        "items": items,
        "interactions": {s: total("interactions", s) for s in SPLITS},
        "evaluated_users": {s: total("evaluated", s) for s in ("val", "test")},
        "documents": {k: total("doc_kinds", k) for k in ("review", "item", "user")},
    }


def _cold_summary(
    cfg: DictConfig, buckets: list[BucketSummary], num_users: int, num_items: int
) -> dict[str, Any]:
    """The manifest's ``cold`` record: how many ids and pairs the cold split held out."""
    held = collections.Counter()
    for b in buckets:
        held.update(b.cold)
    return {
        "item_fraction": cfg.split.cold_item_fraction,
        "user_fraction": cfg.split.cold_user_fraction,
        "items": len(cold_ids(cfg.seed, num_items, cfg.split.cold_item_fraction, "items")),
        "users": len(cold_ids(cfg.seed, num_users, cfg.split.cold_user_fraction, "users")),
        "user_pairs": held["user_pairs"],
        "item_train_pairs_dropped": held["item_train_pairs"],
        "item_texts": held["item_texts"],
        "texts_dropped": held["texts_dropped"],
        "pairs_held_out": held["user_pairs"] + held["item_train_pairs"],
    }


def output_config(cfg: DictConfig) -> dict[str, Any]:
    """The config keys that decide the output (manifest ``config``); see config.OUTPUT_SECTIONS."""
    config = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in OUTPUT_SECTIONS
    }
    # chunk_rows only sets the granularity of staging tasks, never the output.
    config["staging"] = {"buckets": cfg.staging.buckets}
    return config


def _manifest(
    cfg: DictConfig,
    source: dict[str, Any],
    output: Path,
    reduced: reduce.ReduceResult,
    buckets: list[BucketSummary],
    jobs: list[shards.ShardJob],
    results: list[tuple[dict[str, Any], bool]],
    rejected: collections.Counter[str],
    num_users: int,
    num_items: int,
    grown_from: dict[str, Any] | None,
) -> dict[str, Any]:
    """Assemble the manifest (docs/data_prep.md lists every field) from the phases' results."""
    rejected = collections.Counter(rejected)
    if reduced.duplicates:
        rejected["duplicate_interaction"] += reduced.duplicates
    counts = _counts(buckets, num_users, num_items)
    cold = _cold_summary(cfg, buckets, num_users, num_items)
    filtered = reduced.pairs - sum(counts["interactions"].values()) - cold["pairs_held_out"]
    if filtered:
        rejected["k_core_filtered"] += filtered
    for b in buckets:
        rejected.update(b.rejected)
    corpora: dict[str, Any] = {}
    for job, (record, _) in zip(jobs, results):
        corpus = corpora.setdefault(job.corpus, {"shards": [], "num_shards": 0})
        corpus["shards"].append(record)
        corpus["num_shards"] += 1
    files = {rel: info for b in buckets for rel, info in b.split_files.items()}
    for relative, rows in (("id_maps/users.parquet", counts["users"]),
                           ("id_maps/items.parquet", counts["items"]), (TOKENIZER, None)):  # fmt: skip
        files[relative] = file_info(output / relative, rows)
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "config": output_config(cfg),
        "seed": cfg.seed,
        "counts": counts,
        "prompts": OmegaConf.to_container(cfg.prompts),
        "split_rule": SPLIT_RULE,
        "corpora": corpora,
        "rejected": dict(sorted(rejected.items())),
        "tokenizer": TOKENIZER,
        **({"grown_from": grown_from} if grown_from else {}),
        **({"cold": cold} if cold["users"] or cold["items"] else {}),
        "files": dict(sorted(files.items())),
        "created_by": created_by(),
    }


def run_prepare(cfg: DictConfig) -> dict[str, Any]:
    """Prepare ``cfg.output_dir`` from ``cfg.source``; returns the manifest written there.
    output_dir must be absent, empty or prepare's own earlier output (``cli/outputs.py``)."""
    check_config(cfg)
    output = Path(cfg.output_dir).expanduser().resolve()
    check_output_dir(output, COMMAND, is_dataset)
    grown_dir, grown = _grown_from(cfg)
    timer = Timer()
    start = time.perf_counter()
    source = OmegaConf.to_container(cfg.source, resolve=True, throw_on_missing=True)
    reader = _open_source(source)
    work = output / WORK_DIR
    claim_output_dir(output, COMMAND, is_dataset)
    _record_hydra_config(cfg, output)
    _reset_work(work)
    area = StagingArea(work / "staging", cfg.staging.buckets)
    rejected: collections.Counter[str] = collections.Counter()
    with contextlib.ExitStack() as ray_scope:
        with timer.phase("ray start"):
            ray_scope.enter_context(ray_session(cfg.ray))
        with timer.phase("ingest"):
            _, ingest_rejected = _ingest(cfg, source, reader, area)
            rejected.update(ingest_rejected)
        with timer.phase("dedupe + k-core"):
            reduced = reduce.run_reduce(
                area, work, cfg.filter.k_core_user, cfg.filter.k_core_item, cfg.progress
            )
        try:
            _check_not_empty(cfg, source, reduced, rejected)
        except EmptyDatasetError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        with timer.phase("id maps"):
            bucket_index, item_map, num_users = _id_maps(output, reduced, grown_dir)
        with timer.phase("finalize"):
            buckets = _finalize(cfg, area, work, output, reduced, bucket_index, item_map, num_users)
        with timer.phase("shards"):
            jobs = _shard_jobs(cfg, work, output, buckets)
            # No fail-fast: when one shard fails the others still finish, so a rerun skips them.
            refs = [shards.write_shard.remote(j) for j in jobs]
            results = run_all(refs, "shards", cfg.progress, fail_fast=False)
    with timer.phase("tokenizer"):
        if grown_dir is not None:  # the exported backbone's vocabulary must not change
            (output / TOKENIZER).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(grown_dir / TOKENIZER, output / TOKENIZER)
        else:
            sample = [text for b in buckets for text in b.text_sample]
            templates = list(OmegaConf.to_container(cfg.prompts).values())
            train_tokenizer(
                sample, templates, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency,
                output / TOKENIZER,
            )  # fmt: skip

    manifest = _manifest(
        cfg, source, output, reduced, buckets, jobs, results, rejected,
        num_users, item_map.size, grown,
    )  # fmt: skip
    write_manifest(output, manifest)
    _remove_stale(output, manifest, area.buckets)
    skipped = sum(1 for _, was_skipped in results if was_skipped)
    timer.seconds["total"] = time.perf_counter() - start
    report.write_run_log(
        output / "run_log.json",
        timer.seconds,
        {"cpu_s": {k: round(v, 3) for k, v in timer.cpu.items()},
         "shards_written": len(results) - skipped, "shards_reused": skipped,
         "k_core_rounds": reduced.rounds, "num_cpus": cfg.ray.num_cpus},
    )  # fmt: skip
    if not cfg.keep_staging:
        shutil.rmtree(work, ignore_errors=True)
    table = report.summary_table(manifest, timer.seconds, skipped, timer.cpu)
    log.info("prepared %s\n%s", output, table)
    return manifest
