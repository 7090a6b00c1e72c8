"""Export a trained model to plain files, and start a later stage from such an export.

``<export>/``::

    tables/                 one plain tensor per ID table (see distributed/table_checkpoint.py)
    backbone/hf/            a Hugging Face directory (full model, or the PEFT adapter for LoRA),
                            written when the backbone is not partitioned by ZeRO-3
    backbone/state.pt       the Backbone module's state dict (all modes; ZeRO-3 consolidated)
    meta.json               sizes, backbone config, source dataset and its fingerprint

``meta.json["dataset"]`` is the fingerprint of the dataset the model was trained on (manifest
sha256, num_users, num_items, schema version; ``Manifest.fingerprint``). ``load_export`` refuses
an export whose counts do not match the tables it fills, or whose fingerprint is not the current
dataset's, unless ``allow_other_dataset`` is set (then only the counts must match).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from torch import nn

from cllm4rec_dist.cli.outputs import begin_staged, publish
from cllm4rec_dist.distributed import env
from cllm4rec_dist.distributed.table_checkpoint import export_tables, safetensors_problem

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig
    from cllm4rec_dist.train.builder import TrainingParts

log = logging.getLogger(__name__)


def _backbone_state(engine: Any, backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """Full backbone state dict on rank 0 (None elsewhere); collective under ZeRO-3."""
    if engine is not None and engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
        return state if env.rank() == 0 else None
    module = engine.module if engine is not None else backbone
    return module.state_dict() if env.rank() == 0 else None


def is_training_export(path: Path) -> bool:
    """An export a training stage wrote before exports were marked (``cli/outputs.py``): a
    meta.json without the record of inferred rows that infer/ adds."""
    try:
        return "inferred" not in json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _save_hf(lm: nn.Module, path: Path) -> None:
    """``save_pretrained`` without its "Writing model shards" bar, one per export (every
    validation gain writes one)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        lm.save_pretrained(path)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def export_model(built: TrainingParts, cfg: TrainConfig, out_dir: Path, checkpoint: Path) -> None:
    """Collective. Writes tables (from the saved checkpoint), backbone and meta.json to out_dir
    (built in a temporary sibling, then renamed: out_dir is always a whole export)."""
    engine = built.engine
    backbone = engine.module if engine is not None else built.model.backbone
    trainable = engine is not None
    state = _backbone_state(engine, backbone) if trainable or cfg.model.source == "tiny" else None
    if env.rank() == 0:
        tmp = begin_staged(out_dir, cfg.stage.name, is_training_export)
        (tmp / "backbone").mkdir(parents=True)
        export_tables(checkpoint / "tables", tmp / "tables")
        if state is not None:
            torch.save(state, tmp / "backbone" / "state.pt")
            if engine is None or not engine.zero_optimization_partition_weights():
                _save_hf(backbone.lm, tmp / "backbone" / "hf")
        meta = {
            "num_users": built.manifest.num_users,
            "num_items": built.manifest.num_items,
            "hidden_size": backbone.hidden_size,
            "vocab_size": backbone.vocab_size,
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "data_dir": str(Path(cfg.data.dir).resolve()),
            "dataset": built.manifest.fingerprint,
            "backbone_state": state is not None,
            "checkpoint": str(checkpoint.resolve()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        publish(tmp, out_dir, cfg.stage.name, is_training_export)
        log.info("exported model to %s", out_dir)
    env.barrier()


def read_exported_rows(tables_dir: Path, name: str, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of an exported table (``<tables_dir>/<name>.safetensors``, tensor
    ``weight``), read without loading the rest of the table."""
    path = Path(tables_dir) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (exported table {name!r})")
    with _opened(path) as f:
        return f.get_slice("weight")[lo:hi]


class ExportMismatchError(ValueError):
    """The export belongs to another dataset than the tables it would initialise."""


class ExportFileError(ValueError):
    """A file of the export is truncated, corrupt or not what its name says."""


def _opened(path: Path) -> Any:
    """``safe_open`` of an exported table, ExportFileError naming it when it is not whole."""
    problem = safetensors_problem(path)
    if problem:
        raise ExportFileError(problem)
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises its own SafetensorError for a bad header
        raise ExportFileError(f"{path}: unreadable safetensors file ({err})") from None


def _exported_rows(path: Path) -> int:
    with _opened(path) as f:
        try:
            return f.get_slice("weight").get_shape()[0]
        except Exception as err:  # no tensor "weight": not a table this project exported
            raise ExportFileError(f"{path}: no table `weight` ({err})") from None


def _table_rows(tables: dict[str, nn.Module], kind: str) -> int | None:
    rows = {t.num_rows for name, t in tables.items() if name.startswith(kind + "_")}
    return rows.pop() if len(rows) == 1 else None


def check_export_dataset(
    export_dir: Path,
    meta: dict[str, Any],
    tables: dict[str, nn.Module],
    manifest: Any = None,
    allow_other_dataset: bool = False,
) -> None:
    """Raise ExportMismatchError (one line) when the export's users/items (from meta.json and
    from the exported table files themselves) differ from ``tables``, or its dataset fingerprint
    differs from ``manifest.fingerprint`` (skipped with ``allow_other_dataset``)."""
    here = {"num_users": _table_rows(tables, "user"), "num_items": _table_rows(tables, "item")}
    for name, table in tables.items():
        path = export_dir / "tables" / f"{name}.safetensors"
        if path.exists():
            rows = _exported_rows(path)
            if rows != table.num_rows:
                raise ExportMismatchError(
                    f"{path}: {rows} rows, but this dataset has {table.num_rows} for table "
                    f"{name} (the export was made from another dataset; sizes must match)"
                )
    for key, value in here.items():
        if value is not None and key in meta and meta[key] != value:
            raise ExportMismatchError(
                f"{export_dir / 'meta.json'}: {key}={meta[key]} (dataset {meta.get('data_dir')}) "
                f"but this dataset has {key}={value}; an export only loads into a dataset of the "
                "same size"
            )
    theirs = (meta.get("dataset") or {}).get("manifest_sha256")
    ours = None if manifest is None else manifest.fingerprint["manifest_sha256"]
    if theirs and ours and theirs != ours:
        message = (
            f"{export_dir / 'meta.json'}: made from dataset {meta.get('data_dir')} (fingerprint "
            f"{theirs[:12]}), not from {manifest.data_dir} ({ours[:12]})"
        )
        if not allow_other_dataset:
            raise ExportMismatchError(
                message + "; allow it explicitly (allow_other_dataset) to load it anyway"
            )
        log.warning("%s; loading it anyway (allow_other_dataset)", message)


def _grown_prefix(
    export_dir: Path, meta: dict[str, Any], tables: dict[str, nn.Module], manifest: Any
) -> dict[str, int] | None:
    """{"user": U_old, "item": I_old} when this dataset grew from the export's (its manifest's
    ``grown_from`` names the export's dataset fingerprint), else None (sizes must then match)."""
    grown = getattr(manifest, "grown_from", None)
    theirs = (meta.get("dataset") or {}).get("manifest_sha256")
    if grown is None or not theirs or theirs != grown.manifest_sha256:
        return None
    prefix = {"user": grown.num_users, "item": grown.num_items}
    for name in tables:
        path = export_dir / "tables" / f"{name}.safetensors"
        if path.exists():
            rows = _exported_rows(path)
            if rows != prefix[name.split("_")[0]]:
                raise ExportMismatchError(
                    f"{path}: {rows} rows, but {manifest.data_dir} grew from a dataset with "
                    f"{prefix[name.split('_')[0]]} (manifest grown_from)"
                )
    log.info(
        "export %s: this dataset grew from its dataset (users %d -> %d, items %d -> %d); new "
        "rows keep their init",
        export_dir, grown.num_users, manifest.num_users, grown.num_items, manifest.num_items,
    )  # fmt: skip
    return prefix


def load_export(
    export_dir: Path,
    backbone: nn.Module,
    tables: dict[str, nn.Module],
    *,
    allow_other_dataset: bool = False,
    manifest: Any = None,
) -> None:
    """Initialise ``tables`` (each rank reads only its row range) and, when the export has one,
    the backbone's state from ``export_dir``. Call before the backbone is handed to DeepSpeed.

    The export must match the tables' sizes (num_users / num_items); given the current dataset's
    ``manifest`` it must also carry its fingerprint, unless ``allow_other_dataset``
    (ExportMismatchError otherwise, naming the file). A dataset prepared with
    ``id_maps_from`` the export's dataset (a grown catalog) loads the export into its first
    rows instead.
    """
    export_dir = Path(export_dir)
    meta_path = export_dir / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: stage.init_from must be an export dir")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportMismatchError(f"{meta_path}: not valid JSON ({err})") from None
    prefix = _grown_prefix(export_dir, meta, tables, manifest)
    if prefix is None:
        check_export_dataset(export_dir, meta, tables, manifest, allow_other_dataset)
    for name, table in tables.items():
        lo, hi = table.row_range
        # A grown catalog: the export's rows are the first ones; the new ids keep their init.
        end = hi if prefix is None else min(hi, prefix[name.split("_")[0]])
        if end <= lo:
            continue
        rows = read_exported_rows(export_dir / "tables", name, lo, end)
        want = (end - lo, table.weight.shape[1])
        if tuple(rows.shape) != want:
            raise ExportMismatchError(
                f"{export_dir}: table {name} rows [{lo}, {end}) have shape "
                f"{tuple(rows.shape)}, expected {want}"
            )
        with torch.no_grad():
            table.weight[: end - lo].copy_(rows)
    state_path = export_dir / "backbone" / "state.pt"
    if meta.get("backbone_state") and state_path.exists():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, refused pickle, ...: torch raises several types
            first = str(err).splitlines()[0] if str(err) else ""
            raise ExportFileError(
                f"{state_path}: truncated, corrupt or refused backbone state "
                f"({type(err).__name__}: {first})"
            ) from None
        try:
            missing, unexpected = backbone.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a tensor of another shape: another backbone size
            raise ExportMismatchError(
                f"{state_path} does not match this backbone ({str(err).splitlines()[-1].strip()})"
                " (model.* must match the export's meta.json)"
            ) from None
        if unexpected or [m for m in missing if "lora_" not in m]:
            raise ExportMismatchError(
                f"{state_path} does not match this backbone: missing={missing[:5]} "
                f"unexpected={unexpected[:5]} (model.source/mode must match the export)"
            )
