"""Table checkpoints: save on 2 ranks -> load on 1, save on 1 -> load on 2, export for serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import run_ranks_serialized
from safetensors.torch import load_file

from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.distributed.table_checkpoint import load_tables, save_tables, table_blocks
from cllm4rec_dist.export import ExportMeta, ExportWriter, table_path
from cllm4rec_dist.model.tables import DenseTable

SHAPES = {"user": (7, 3), "item": (5, 2)}


def _trained(make):
    """Tables from ``make(num_rows, dim, seed)`` after one optimizer step on a fixed batch."""
    tables = {name: make(n, d, seed) for seed, (name, (n, d)) in enumerate(SHAPES.items())}
    opt = RowWiseAdagrad([t.weight for t in tables.values()], lr=0.1)
    loss = tables["user"](torch.tensor([0, 6, 6])).sum() + tables["item"](torch.tensor([4])).sum()
    loss.backward()
    opt.step()
    return tables, opt


def _snapshot(tables, opt) -> dict:
    return {
        n: (t.weight.detach().clone(), opt.state[t.weight]["sum"].clone())
        for n, t in tables.items()
    }


def _save_two_ranks(directory):
    def fn(rank, world_size):
        tables, opt = _trained(PartitionedTable)
        save_tables(directory, tables, opt, rank, world_size)
        dist.barrier()
        return _snapshot(tables, opt)

    return run_ranks_serialized(fn, 2)


@pytest.mark.distributed
def test_save_two_ranks_load_one_and_export(tmp_path):
    ranks = _save_two_ranks(tmp_path / "ckpt")
    tables = {n: PartitionedTable(r, d, seed=42) for n, (r, d) in SHAPES.items()}
    opt = RowWiseAdagrad([t.weight for t in tables.values()])
    load_tables(tmp_path / "ckpt", tables, opt)
    for name, table in tables.items():
        full_w = torch.cat([r[name][0] for r in ranks])
        full_s = torch.cat([r[name][1] for r in ranks])
        assert torch.equal(table.weight.detach(), full_w)
        assert torch.equal(opt.state[table.weight]["sum"], full_s)
    # one process training on the same data reaches the same tables
    reference, ref_opt = _trained(DenseTable)
    for name, (w, s) in _snapshot(reference, ref_opt).items():
        torch.testing.assert_close(tables[name].weight.detach(), w)
        torch.testing.assert_close(opt.state[tables[name].weight]["sum"], s)
    files = _export(tmp_path / "ckpt", tmp_path / "export")
    for name, table in tables.items():
        assert torch.equal(load_file(files[name])["weight"], table.weight.detach())
    index = json.loads((tmp_path / "ckpt" / "index.json").read_text())
    assert index["tables"]["user"]["files"][1]["row_range"] == [4, 7]


@pytest.mark.distributed
def test_save_one_load_two_ranks(tmp_path):
    tables, opt = _trained(DenseTable)
    expected = _snapshot(tables, opt)
    save_tables(tmp_path, tables, opt, rank=0, world_size=1)

    def fn(rank, world_size):
        shards = {n: PartitionedTable(r, d, seed=9) for n, (r, d) in SHAPES.items()}
        shard_opt = RowWiseAdagrad([t.weight for t in shards.values()])
        load_tables(tmp_path, shards, shard_opt)
        return {n: (t.row_range, *_snapshot(shards, shard_opt)[n]) for n, t in shards.items()}

    for rank_result in run_ranks_serialized(fn, 2):
        for name, ((lo, hi), w, s) in rank_result.items():
            assert torch.equal(w, expected[name][0][lo:hi])
            assert torch.equal(s, expected[name][1][lo:hi])


def test_load_rejects_mismatched_shapes_and_missing_state(tmp_path):
    table = DenseTable(4, 2)
    save_tables(tmp_path, {"user": table}, None, rank=0, world_size=1)
    with pytest.raises(ValueError, match="checkpoint has 4x2, model has 4x3"):
        load_tables(tmp_path, {"user": DenseTable(4, 3)})
    other = DenseTable(4, 2, seed=5)
    with pytest.raises(KeyError, match="lacks optimizer state"):
        load_tables(tmp_path, {"user": other}, RowWiseAdagrad(other.parameters()))
    with pytest.raises(KeyError, match="not in checkpoint"):
        load_tables(tmp_path, {"item": other})
    load_tables(tmp_path, {"user": other})
    assert torch.equal(other.weight, table.weight)
    assert F.embedding(torch.tensor([1]), other.weight).shape == (1, 2)


def _export(checkpoint: Path, out: Path) -> dict[str, Path]:
    """The tables of ``checkpoint`` written as an export's (train/checkpoint.export_checkpoint's
    way): name -> file."""
    writer = ExportWriter(out, "pretrain")
    for name, shape, blocks in table_blocks(checkpoint):
        writer.write_table_blocks(name, shape, blocks)
    writer.commit(ExportMeta(num_users=0, num_items=0))
    return {name: table_path(out, name) for name in SHAPES}


@pytest.mark.distributed
def test_export_streams_blocks_across_pieces(tmp_path, monkeypatch):
    """Export in blocks smaller than a checkpoint piece, and blocks spanning the two ranks'
    pieces: the file safetensors reads back equals the table and passes the reader's checks."""
    import cllm4rec_dist.distributed.table_checkpoint as tc

    ranks = _save_two_ranks(tmp_path / "ckpt")
    monkeypatch.setattr(tc, "EXPORT_BLOCK_ROWS", 3)
    files = _export(tmp_path / "ckpt", tmp_path / "export")
    for name in SHAPES:
        full = torch.cat([r[name][0] for r in ranks])
        assert tc.safetensors_problem(files[name]) is None
        assert torch.equal(load_file(files[name])["weight"], full)
    writer = ExportWriter(tmp_path / "short", "pretrain")
    with pytest.raises(ValueError, match="bytes of rows"):
        writer.write_table_blocks("w", (2, 3), [torch.zeros(1, 3)])
    assert not table_path(writer.directory, "w").exists()
