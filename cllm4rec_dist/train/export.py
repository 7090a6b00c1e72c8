"""Export a trained model to plain files, and start a later stage from such an export.

``<export>/``::

    tables/                 one plain tensor per ID table (see distributed/table_checkpoint.py)
    backbone/hf/            a Hugging Face directory (full model, or the PEFT adapter for LoRA),
                            written when the backbone is not partitioned by ZeRO-3
    backbone/state.pt       the Backbone module's state dict (all modes; ZeRO-3 consolidated)
    meta.json               sizes, backbone config, source dataset
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from torch import nn

from cllm4rec_dist.distributed.table_checkpoint import export_tables
from cllm4rec_dist.train import dist_env

log = logging.getLogger(__name__)


def _backbone_state(engine: Any, backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """Full backbone state dict on rank 0 (None elsewhere); collective under ZeRO-3."""
    if engine is not None and engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
        return state if dist_env.rank() == 0 else None
    module = engine.module if engine is not None else backbone
    return module.state_dict() if dist_env.rank() == 0 else None


def export_model(built: Any, cfg: Any, out_dir: Path, checkpoint: Path) -> None:
    """Collective. Writes tables (from the saved checkpoint), backbone and meta.json to out_dir."""
    engine = built.engine
    backbone = engine.module if engine is not None else built.model.backbone
    trainable = engine is not None
    state = _backbone_state(engine, backbone) if trainable or cfg.model.source == "debug" else None
    if dist_env.rank() == 0:
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "backbone").mkdir(parents=True)
        export_tables(checkpoint / "tables", tmp / "tables")
        if state is not None:
            torch.save(state, tmp / "backbone" / "state.pt")
            if engine is None or not engine.zero_optimization_partition_weights():
                backbone.lm.save_pretrained(tmp / "backbone" / "hf")
        meta = {
            "num_users": built.manifest.num_users,
            "num_items": built.manifest.num_items,
            "hidden_size": backbone.hidden_size,
            "vocab_size": backbone.vocab_size,
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "data_dir": str(Path(cfg.data.dir).resolve()),
            "backbone_state": state is not None,
            "checkpoint": str(checkpoint.resolve()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
        log.info("exported model to %s", out_dir)
    dist_env.barrier()


def read_exported_rows(tables_dir: Path, name: str, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of an exported table (``<tables_dir>/<name>.safetensors``, tensor
    ``weight``), read without loading the rest of the table."""
    path = Path(tables_dir) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (exported table {name!r})")
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice("weight")[lo:hi]


def load_export(export_dir: Path, backbone: nn.Module, tables: dict[str, nn.Module]) -> None:
    """Initialise ``tables`` (each rank reads only its row range) and, when the export has one,
    the backbone's state from ``export_dir``. Call before the backbone is handed to DeepSpeed."""
    meta_path = export_dir / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: stage.init_from must be an export dir")
    meta = json.loads(meta_path.read_text())
    for name, table in tables.items():
        lo, hi = table.row_range
        rows = read_exported_rows(export_dir / "tables", name, lo, hi)
        if rows.shape != table.weight.shape:
            raise ValueError(
                f"{export_dir}: table {name} rows [{lo}, {hi}) have shape "
                f"{tuple(rows.shape)}, expected {tuple(table.weight.shape)}"
            )
        with torch.no_grad():
            table.weight.copy_(rows)
    state_path = export_dir / "backbone" / "state.pt"
    if meta.get("backbone_state") and state_path.exists():
        missing, unexpected = backbone.load_state_dict(
            torch.load(state_path, map_location="cpu", weights_only=True), strict=False
        )
        if unexpected or [m for m in missing if "lora_" not in m]:
            raise ValueError(
                f"{state_path} does not match this backbone: missing={missing[:5]} "
                f"unexpected={unexpected[:5]} (model.source/mode must match the export)"
            )
