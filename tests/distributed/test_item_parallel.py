"""Item-parallel CE / multinomial NLL / top-K == dense full-logit references, 1 and 2 ranks.

Hypothesis draws the cases inside the ranks (derandomized, so both ranks draw the same ones) and
each rank returns its results; all comparisons happen here in the parent, against references
computed from the same seeded data. One ``run_ranks`` call executes every example.
"""

from __future__ import annotations

import pytest
import torch
from helpers import csr, run_ranks_serialized
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.reference import (
    cross_entropy_reference,
    masked_topk_reference,
    multinomial_nll_reference,
)

MAX_EXAMPLES = 10
# Always run on 2 ranks: k == #items with 4/3 shards and no rows on rank 1; k == #items == 5.
EXPLICIT = {
    1: [],
    2: [
        dict(num_items=7, dim=3, rows=[4, 0], chunk=2, k=7, seed=11),
        dict(num_items=5, dim=2, rows=[2, 3], chunk=4, k=5, seed=12),
    ],
}


@st.composite
def scorer_cases(draw, world_size: int):
    """Shapes only (data comes from ``make_data``): few items so shards are uneven or empty."""
    num_items = draw(st.integers(1, 9))
    return dict(
        num_items=num_items,
        dim=draw(st.integers(1, 4)),
        rows=[draw(st.integers(0, 4)) for _ in range(world_size)],
        chunk=draw(st.integers(1, 4)),
        k=draw(st.integers(1, num_items + 1)),
        seed=draw(st.integers(0, 10_000)),
    )


def make_data(case: dict) -> list[dict]:
    """Every rank's inputs for ``case``, from its seed (identical in ranks and parent)."""
    gen = torch.Generator().manual_seed(case["seed"])
    num_items, dim = case["num_items"], case["dim"]
    int_items = torch.randint(-2, 3, (num_items, dim), generator=gen).float()
    data = []
    for n in case["rows"]:
        targets = [
            torch.randint(0, num_items, (int(c),), generator=gen).tolist()
            for c in torch.randint(0, 4, (n,), generator=gen)
        ]
        excluded = [
            torch.randperm(num_items, generator=gen)[: int(c)].tolist()
            for c in torch.randint(0, num_items + 1, (n,), generator=gen)
        ]
        data.append(
            dict(
                hidden=torch.randn(n, dim, generator=gen),
                targets=torch.randint(0, num_items, (n,), generator=gen),
                multi=csr(targets),
                coef=torch.randn(2, n, generator=gen),
                int_hidden=torch.randint(-2, 3, (n, dim), generator=gen).float(),
                int_items=int_items,
                exclude=csr(excluded),
            )
        )
    return data


def run_case(rank: int, world_size: int, case: dict) -> dict:
    """This rank's losses, gradients (hidden, local item rows) and top-k for ``case``."""
    mine = make_data(case)[rank]
    table = PartitionedTable(case["num_items"], case["dim"], seed=case["seed"], std=1.0)
    scorer = ItemParallelScorer(table, chunk_items=case["chunk"])
    out = {}
    for name, which in (("ce", 0), ("nll", 1)):
        hidden = mine["hidden"].clone().requires_grad_()
        if name == "ce":
            loss = scorer.cross_entropy(hidden, mine["targets"])
        else:
            loss = scorer.multinomial_nll(hidden, *mine["multi"])
        (loss * mine["coef"][which]).sum().backward()
        out[name] = (loss.detach(), hidden.grad, table.weight.grad)
        table.weight.grad = None
    with torch.no_grad():
        table.weight.copy_(mine["int_items"][slice(*table.row_range)])
    out["topk"] = scorer.topk(mine["int_hidden"], case["k"], *mine["exclude"])
    return out


def _all_cases(rank: int, world_size: int) -> list:
    results = []

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(scorer_cases(world_size))
    def collect(case):
        results.append((case, run_case(rank, world_size, case)))

    for case in EXPLICIT[world_size]:
        collect = example(case)(collect)
    collect()
    try:  # a bad target on the last rank raises on every rank (checked after the gather)
        bad = torch.tensor([5 if rank == world_size - 1 else 0])
        ItemParallelScorer(PartitionedTable(5, 2)).cross_entropy(torch.zeros(1, 2), bad)
        results.append("no error")
    except IndexError as exc:
        results.append(str(exc))
    return results


def check_against_dense(ranks: list[list]) -> None:
    world_size = len(ranks)
    cases = [r[:-1] for r in ranks]
    assert all([c for c, _ in rc] == [c for c, _ in cases[0]] for rc in cases)
    assert len(cases[0]) == MAX_EXAMPLES + len(EXPLICIT[world_size])
    for i, (case, _) in enumerate(cases[0]):
        data = make_data(case)
        items = DenseTable(case["num_items"], case["dim"], seed=case["seed"], std=1.0).weight
        for name, which in (("ce", 0), ("nll", 1)):
            hiddens = [d["hidden"].clone().requires_grad_() for d in data]
            if name == "ce":
                losses = [
                    cross_entropy_reference(h, items, d["targets"]) for h, d in zip(hiddens, data)
                ]
            else:
                losses = [
                    multinomial_nll_reference(h, items, *d["multi"]) for h, d in zip(hiddens, data)
                ]
            totals = [(x * d["coef"][which]).sum() for x, d in zip(losses, data)]
            grad_items = torch.autograd.grad(sum(totals) / world_size, items, retain_graph=True)[0]
            shards = []
            for r in range(world_size):
                loss, grad_hidden, grad_shard = cases[r][i][1][name]
                torch.testing.assert_close(loss, losses[r].detach(), msg=f"{name} loss {case}")
                if hiddens[r].numel():  # each rank gets d(its own loss)/d(its rows), not averaged
                    expected = torch.autograd.grad(totals[r], hiddens[r], retain_graph=True)[0]
                    torch.testing.assert_close(grad_hidden, expected, msg=f"{name} dh {case}")
                shards.append(grad_shard)
            torch.testing.assert_close(torch.cat(shards), grad_items, msg=f"{name} dW {case}")
        for r, d in enumerate(data):
            scores, top = cases[r][i][1]["topk"]
            ref = masked_topk_reference(d["int_hidden"], d["int_items"], case["k"], *d["exclude"])
            assert torch.equal(scores, ref[0]) and torch.equal(top, ref[1]), (case, r, top, ref)
    assert all("item ids out of range [0, 5)" in r[-1] for r in ranks)


@pytest.mark.distributed
def test_two_rank_scorer_matches_dense():
    check_against_dense(run_ranks_serialized(_all_cases, 2))


def test_single_process_scorer_matches_dense():
    check_against_dense([_all_cases(0, 1)])


def test_cpu_blocks_hold_a_cache_sized_share_of_the_columns():
    """On a CPU the logits block narrows with the rows (about CPU_BLOCK_ELEMENTS logits, at least
    CPU_MIN_COLUMNS wide, never wider than chunk_items); on a GPU it is chunk_items wide."""
    from cllm4rec_dist.distributed.item_parallel import (
        CHUNK_ITEMS,
        CPU_BLOCK_ELEMENTS,
        CPU_MIN_COLUMNS,
        block_columns,
    )

    assert block_columns(16, CHUNK_ITEMS, "cpu") == CHUNK_ITEMS
    assert block_columns(128, CHUNK_ITEMS, "cpu") == CPU_BLOCK_ELEMENTS // 128
    assert block_columns(10**6, CHUNK_ITEMS, "cpu") == CPU_MIN_COLUMNS
    assert block_columns(0, CHUNK_ITEMS, "cpu") == CHUNK_ITEMS
    assert block_columns(128, 3, "cpu") == 3  # an explicit small chunk (the parity cases) holds
    assert block_columns(10**6, CHUNK_ITEMS, "cuda") == CHUNK_ITEMS
    scorer = ItemParallelScorer(PartitionedTable(8, 2))
    assert scorer.block_columns(512) == block_columns(512, CHUNK_ITEMS, "cpu")


def _kernel_rows(rank: int, world_size: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Rank 0 ranks 3 rows and rank 1 one: the kernel must see the 4 real rows, not 2 x 3."""
    from cllm4rec_dist.distributed import item_parallel

    seen = []
    kernel = item_parallel.masked_topk

    def counting(queries, *args, **kwargs):
        seen.append(queries.shape[0])
        return kernel(queries, *args, **kwargs)

    item_parallel.masked_topk = counting
    try:
        table = PartitionedTable(10, 4)
        with torch.no_grad():
            lo, hi = table.row_range  # row i of the whole table: 4i .. 4i + 3, over 7
            table.weight.copy_(torch.arange(4 * lo, 4 * hi).reshape(-1, 4).float() / 7)
        n = 3 if rank == 0 else 1
        hidden = torch.ones(n, 4) * (rank + 1)
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        scores, top = ItemParallelScorer(table).topk(hidden, 4, offsets, torch.zeros(0).long())
    finally:
        item_parallel.masked_topk = kernel
    return seen, scores, top


@pytest.mark.distributed
def test_topk_ranks_only_the_real_rows():
    for rank, (seen, scores, top) in enumerate(run_ranks_serialized(_kernel_rows, 2)):
        assert seen == [4], seen
        # Rows of ones (or twos): the item with the largest row sum wins, the last one.
        assert top[:, 0].tolist() == [9] * (3 if rank == 0 else 1)
        assert torch.isfinite(scores).all()
