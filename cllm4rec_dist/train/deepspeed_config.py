"""Assemble the DeepSpeed JSON config from the typed training config.

Only the backbone goes through DeepSpeed; the ID tables have their own row-wise optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_deepspeed_config(cfg: TrainConfig, micro_batch_size: int) -> dict[str, Any]:
    """DeepSpeed config dict for the backbone engine: ZeRO stage, precision, AdamW, clipping."""
    ds, optim = cfg.deepspeed, cfg.optim
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage == 3:
        # Small buckets/thresholds keep tiny test backbones partitioned like big ones.
        zero.update(stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=5e7)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.model.dtype == "bf16"},
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW: no 60 s JIT build of DeepSpeed's fused op on CPU.
            "params": {"lr": optim.lr, "weight_decay": optim.weight_decay, "torch_adam": True},
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    extra = (
        OmegaConf.to_container(ds.extra, resolve=True)
        if not isinstance(ds.extra, dict)
        else ds.extra
    )
    return merge(config, extra or {})
