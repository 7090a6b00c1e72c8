"""Every shipped data-prep config composes against the typed schema; bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from data_prep.config import check_config
from data_prep.pipeline.runner import output_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "data_prep"
SOURCES = sorted(p.stem for p in (CONFIG_DIR / "source").glob("*.yaml"))


def test_every_source_has_a_config() -> None:
    assert SOURCES == [
        "amazon_reviews",
        "lcrec_json",
        "movielens",
        "sequences",
        "synthetic",
        "table",
    ]


@pytest.mark.parametrize("source", SOURCES)
def test_source_configs_compose(source: str, compose_cfg, tmp_path: Path) -> None:
    path = [] if source == "synthetic" else [f"source.path={tmp_path}"]
    cfg = compose_cfg([f"source={source}", *path])
    assert cfg.source.name == source
    assert cfg.output_dir.endswith(f"/{source}")
    check_config(cfg)
    resolved = OmegaConf.to_container(cfg.source, resolve=True)
    assert resolved["name"] == source
    if source == "synthetic":
        assert resolved["seed"] == cfg.seed and isinstance(resolved["num_users"], int)
    else:
        assert resolved["path"] == str(tmp_path)


def test_values_are_typed(compose_cfg) -> None:
    with pytest.raises((ValidationError, ConfigCompositionException), match="num_users"):
        compose_cfg(["source.num_users=many"])
    with pytest.raises((ValidationError, ConfigCompositionException), match="users_per_sample"):
        compose_cfg(["layout.users_per_sample=1.5"])
    cfg = compose_cfg(["filter.min_rating=3"])
    assert cfg.filter.min_rating == 3.0 and isinstance(cfg.layout.shard_multiple, int)


def test_check_config_names_bad_keys(compose_cfg) -> None:
    cfg = compose_cfg(
        ["split.val_fraction=0.6", "split.test_fraction=0.5", "layout.shard_multiple=0"]
    )
    with pytest.raises(ValueError, match="split.val_fraction") as err:
        check_config(cfg)
    assert "layout.shard_multiple" in str(err.value)


def test_manifest_config_leaves_out_run_only_keys(compose_cfg, tmp_path: Path) -> None:
    a = compose_cfg([f"output_dir={tmp_path}/a", "ray.num_cpus=1", "staging.chunk_rows=10"])
    b = compose_cfg([f"output_dir={tmp_path}/b", "progress=false", "debug.fail_after_shards=3"])
    assert output_config(a) == output_config(b)
    assert set(output_config(a)) == {"seed", "filter", "split", "layout", "staging", "tokenizer",
                                     "prompts"}  # fmt: skip
