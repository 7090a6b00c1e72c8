"""Sampled softmax on the item-parallel head == the plain reference on all rows, 1 and 2 ranks.

Every rank computes the collaborative (one target per row) and recommendation (CSR targets)
losses through ``SampledSoftmaxScorer(ItemParallelScorer)``; the parent concatenates the ranks'
rows and targets in rank order, which is the order the ranks gather them in, so the sampler
draws the same negatives for the reference (``sampled_nll_reference`` on the whole table).
"""

from __future__ import annotations

import pytest
import torch
from helpers import csr, run_ranks_serialized

from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.model.sampling import ItemSampler, SampledSoftmaxScorer, sampled_nll_reference
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.topk import csr_rows

# (items, dim, rows per rank, kind, samples): uneven shards, a rank with no rows, one item.
CASES = [
    dict(num_items=7, dim=3, rows=[4, 0], kind="popularity", samples=5, seed=1),
    dict(num_items=9, dim=2, rows=[3, 5], kind="in_batch", samples=1, seed=2),
    dict(num_items=12, dim=4, rows=[2, 3], kind="popularity", samples=40, seed=3),
    dict(num_items=1, dim=2, rows=[1, 2], kind="popularity", samples=3, seed=4),
    dict(num_items=6, dim=3, rows=[0, 0], kind="in_batch", samples=1, seed=5),
]


def make_data(case: dict, world_size: int) -> tuple[torch.Tensor, list[dict]]:
    """(item counts [I], every rank's inputs), from the case's seed."""
    gen = torch.Generator().manual_seed(case["seed"])
    n_items = case["num_items"]
    counts = torch.randint(0, 5, (n_items,), generator=gen)
    rows = case["rows"] if world_size == 2 else [sum(case["rows"])]
    data = []
    for n in rows:
        multi = [
            torch.randint(0, n_items, (int(c),), generator=gen).tolist()
            for c in torch.randint(0, 4, (n,), generator=gen)
        ]
        data.append(
            dict(
                hidden=torch.randn(n, case["dim"], generator=gen),
                targets=torch.randint(0, n_items, (n,), generator=gen),
                multi=csr(multi),
                coef=torch.randn(2, n, generator=gen),
            )
        )
    return counts, data


def sampler_for(case: dict, counts: torch.Tensor) -> ItemSampler:
    return ItemSampler(counts, case["kind"], num_samples=case["samples"], seed=case["seed"])


def run_case(rank: int, world_size: int, case: dict) -> dict:
    counts, data = make_data(case, world_size)
    mine = data[rank]
    table = PartitionedTable(case["num_items"], case["dim"], seed=case["seed"], std=1.0)
    scorer = SampledSoftmaxScorer(ItemParallelScorer(table), sampler_for(case, counts))
    out = {}
    for name, which in (("ce", 0), ("nll", 1)):
        hidden = mine["hidden"].clone().requires_grad_()
        if name == "ce":
            loss = scorer.cross_entropy(hidden, mine["targets"])
        else:
            loss = scorer.multinomial_nll(hidden, *mine["multi"])
        (loss * mine["coef"][which]).sum().backward()
        grad = table.weight.grad
        out[name] = (loss.detach(), hidden.grad, grad.is_sparse, grad.to_dense())
        table.weight.grad = None
    return out


def _all_cases(rank: int, world_size: int) -> list:
    return [run_case(rank, world_size, case) for case in CASES]


def check_against_reference(ranks: list[list]) -> None:
    world_size = len(ranks)
    for i, case in enumerate(CASES):
        counts, data = make_data(case, world_size)
        items = DenseTable(case["num_items"], case["dim"], seed=case["seed"], std=1.0).weight
        sampler = sampler_for(case, counts)
        for name, which in (("ce", 0), ("nll", 1)):
            hiddens = [d["hidden"].clone().requires_grad_() for d in data]
            rows, pair_items, start = [], [], 0
            for d in data:
                n = d["hidden"].shape[0]
                if name == "ce":
                    rows.append(torch.arange(n) + start)
                    pair_items.append(d["targets"])
                else:
                    rows.append(csr_rows(d["multi"][0]) + start)
                    pair_items.append(d["multi"][1])
                start += n
            pair_items = torch.cat(pair_items)
            negatives = sampler.negatives(pair_items)
            loss = sampled_nll_reference(
                torch.cat(hiddens), items, torch.cat(rows), pair_items, negatives
            )
            losses = loss.split([d["hidden"].shape[0] for d in data])
            totals = [(x * d["coef"][which]).sum() for x, d in zip(losses, data)]
            grad_items = torch.autograd.grad(sum(totals) / world_size, items, retain_graph=True)[0]
            shards = []
            for r in range(world_size):
                got_loss, grad_hidden, sparse, grad_shard = ranks[r][i][name]
                torch.testing.assert_close(got_loss, losses[r].detach(), msg=f"{name} {case}")
                assert bool((got_loss >= -1e-6).all())
                if hiddens[r].numel():
                    want = torch.autograd.grad(totals[r], hiddens[r], retain_graph=True)[0]
                    torch.testing.assert_close(grad_hidden, want, msg=f"{name} dh {case}")
                if world_size > 1:
                    assert sparse, "the sharded head's item gradient must stay sparse"
                shards.append(grad_shard)
            torch.testing.assert_close(torch.cat(shards), grad_items, msg=f"{name} dW {case}")


@pytest.mark.distributed
def test_two_rank_sampled_softmax_matches_reference():
    check_against_reference(run_ranks_serialized(_all_cases, 2))


def test_single_process_sampled_softmax_matches_reference():
    check_against_reference([_all_cases(0, 1)])


@pytest.mark.distributed
def test_sampled_softmax_in_blocks_of_rows_matches_reference(monkeypatch):
    """Blocks of one or a few rows (the hits of a row split from the others', rows without
    candidates on a shard) give the reference's losses and gradients on 1 and 2 ranks."""
    from cllm4rec_dist.distributed import item_parallel

    for block in (1, 7):  # one row per block; a few rows, uneven last block
        monkeypatch.setattr(item_parallel, "BLOCK_ELEMENTS", block)
        check_against_reference([_all_cases(0, 1)])
        check_against_reference(run_ranks_serialized(_all_cases, 2))


def _together(rank: int, world_size: int) -> list[str]:
    """Both losses taken before one backward (the second gets its own kept buffer), and a loss
    under no_grad (keeps nothing), against the losses taken one at a time (run_case)."""
    problems = []
    for case in CASES:
        apart = run_case(rank, world_size, case)
        counts, data = make_data(case, world_size)
        mine = data[rank]
        table = PartitionedTable(case["num_items"], case["dim"], seed=case["seed"], std=1.0)
        scorer = SampledSoftmaxScorer(ItemParallelScorer(table), sampler_for(case, counts))
        h_ce, h_nll = (mine["hidden"].clone().requires_grad_() for _ in range(2))
        ce = scorer.cross_entropy(h_ce, mine["targets"])
        nll = scorer.multinomial_nll(h_nll, *mine["multi"])
        ((ce * mine["coef"][0]).sum() + (nll * mine["coef"][1]).sum()).backward()
        with torch.no_grad():
            quiet = scorer.cross_entropy(mine["hidden"], mine["targets"])
        checks = [
            (ce, apart["ce"][0]), (nll, apart["nll"][0]), (quiet, apart["ce"][0]),
            (h_ce.grad, apart["ce"][1]), (h_nll.grad, apart["nll"][1]),
            (table.weight.grad.to_dense(), apart["ce"][3] + apart["nll"][3]),
        ]  # fmt: skip
        for i, (got, want) in enumerate(checks):
            if got is not None and not torch.allclose(got.detach(), want, atol=1e-6):
                problems.append(f"{case} check {i}")
    return problems


@pytest.mark.distributed
def test_two_losses_before_one_backward_and_no_grad_match_one_at_a_time():
    assert run_ranks_serialized(_together, 2) == [[], []]
