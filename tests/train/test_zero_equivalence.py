"""2-rank DeepSpeed ZeRO 1/2/3 training with partitioned tables == 1-rank dense training.

Both runs see the same rows: at step i rank r trains on block (i, r); the 1-rank reference trains
on the mean of the losses of blocks (i, 0) and (i, 1). DeepSpeed averages backbone gradients
over ranks and the partitioned tables average theirs, so the two must agree step by step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compose_train

from cllm4rec_dist.data.phases import PHASES
from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.distributed.spawn import run_ranks

STEPS = 2
BATCH = 4
# The phases that run the backbone (what ZeRO partitions); collaborative_rows bypasses it.
TRAINED = [name for name, phase in PHASES.items() if phase.backbone]

pytestmark = pytest.mark.distributed


def _blocks(data_dir: str) -> dict[str, list[dict]]:
    corpora = {phase.corpus for phase in PHASES.values()}
    return {c: list(iter_rows(data_dir, c, rank=0, world_size=1, shuffle=False)) for c in corpora}


def _rows(blocks, phase, step, part):
    start = (step * 2 + part) * BATCH
    return blocks[PHASES[phase].corpus][start : start + BATCH]


def _overrides(data_dir: str, zero: int) -> list[str]:
    return [
        f"data.dir={data_dir}",
        "model.mode=full",
        f"deepspeed=zero{zero}",
        "optim.lr=1e-3",
        "optim.grad_clip=1.0",
        "tables.lr=0.05",
        "stage.lambda_v=0.5",
    ]


def _gather_tables(built) -> dict[str, tuple[tuple[int, int], np.ndarray]]:
    return {n: (t.row_range, t.weight.detach().numpy().copy()) for n, t in built.tables.items()}


def _distributed_run(rank, world, data_dir, zero):
    torch.set_num_threads(1)
    from cllm4rec_dist.train.builder import build
    from cllm4rec_dist.train.trainer import train_step

    built = build(compose_train("pretrain", _overrides(data_dir, zero)))
    blocks = _blocks(data_dir)
    losses = []
    for step in range(STEPS):
        for phase in TRAINED:
            rng = np.random.default_rng([step, rank])
            batch = built.collate(PHASES[phase], _rows(blocks, phase, step, rank), rng)
            losses.append(train_step(built, PHASES[phase], batch).mean_loss)
    return losses, _gather_tables(built)


def _reference_run(rank, world, data_dir):
    torch.set_num_threads(1)
    from cllm4rec_dist.train.builder import build

    built = build(compose_train("pretrain", _overrides(data_dir, 0) + ["tables.partitioned=false"]))
    blocks = _blocks(data_dir)
    losses = []
    for step in range(STEPS):
        for phase in TRAINED:
            parts = [
                built.loss(
                    PHASES[phase],
                    built.collate(
                        PHASES[phase],
                        _rows(blocks, phase, step, part),
                        np.random.default_rng([step, part]),
                    ),
                )
                for part in (0, 1)
            ]
            loss = (parts[0].loss + parts[1].loss) / 2
            losses.append(float(loss))
            built.engine.backward(loss)
            built.engine.step()
            built.table_optimizer.step()
            built.table_optimizer.zero_grad()
    return losses, _gather_tables(built)


@pytest.fixture(scope="module")
def reference(tiny_dataset):
    return run_ranks(_reference_run, 1, str(tiny_dataset))[0]


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_two_ranks_match_one(zero, tiny_dataset, reference):
    ref_losses, ref_tables = reference
    results = run_ranks(_distributed_run, 2, str(tiny_dataset), zero)
    losses = results[0][0]
    assert results[1][0] == losses  # every rank reports the same (all-reduced) loss
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, atol=1e-6)
    for name, (_, dense) in ref_tables.items():
        shards = [r[1][name] for r in results]
        assert [s[0] for s in shards][0][0] == 0 and shards[0][0][1] == shards[1][0][0]
        merged = np.concatenate([s[1] for s in shards])
        np.testing.assert_allclose(merged, dense, rtol=1e-4, atol=1e-6, err_msg=name)
