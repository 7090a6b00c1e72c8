"""Full-ranking metrics exactly as in CLLM4Rec (and Multi-VAE / EASE papers).

For a user with held-out set T and ranked list r_1, r_2, ... (training items already masked):
- Recall@k = |{r_1..r_k} ∩ T| / min(k, |T|)
- NDCG@k   = DCG@k / IDCG@k, DCG@k = Σ_{i≤k} [r_i ∈ T] / log2(i + 1),
             IDCG@k = Σ_{i≤min(k,|T|)} 1 / log2(i + 1)
Users with an empty held-out set are not evaluated. Per-user values are summed here and divided
by the number of evaluated users once all ranks' sums are combined (``MetricSums``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


def hits_matrix(topk_items: Tensor, target_offsets: Tensor, target_items: Tensor) -> Tensor:
    """topk_items [B, K] (item index or -1 padding), targets CSR -> bool [B, K]: item is a target."""
    b, k = topk_items.shape
    if b == 0:
        return torch.zeros(0, k, dtype=torch.bool)
    counts = (target_offsets[1:] - target_offsets[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(b), counts)
    # Encode (row, item) pairs as one int64 key and test membership with a sorted search.
    num = (
        int(max(int(topk_items.max()), int(target_items.max()) if target_items.numel() else 0)) + 2
    )
    target_keys = torch.sort(rows * num + target_items.long()).values
    cand = torch.arange(b).unsqueeze(1) * num + topk_items.long()
    pos = torch.searchsorted(target_keys, cand).clamp(max=max(target_keys.numel() - 1, 0))
    found = (
        target_keys[pos] == cand
        if target_keys.numel()
        else torch.zeros_like(cand, dtype=torch.bool)
    )
    return found & (topk_items >= 0)


def recall_ndcg(hits: Tensor, num_targets: Tensor, ks: list[int]) -> dict[str, Tensor]:
    """hits [B, K] bool, num_targets [B] -> per-user {"recall@k": [B], "ndcg@k": [B]} for k in ks."""
    out: dict[str, Tensor] = {}
    hits_f = hits.double()
    n = num_targets.double()
    discounts = 1.0 / torch.log2(torch.arange(hits.shape[1], dtype=torch.float64) + 2.0)
    ideal_cum = torch.cumsum(discounts, 0)
    for k in ks:
        if k > hits.shape[1]:
            raise ValueError(f"metric cut-off k={k} exceeds the ranked list length {hits.shape[1]}")
        denom = torch.clamp(torch.minimum(n, torch.tensor(float(k))), min=1.0)
        out[f"recall@{k}"] = hits_f[:, :k].sum(1) / denom
        dcg = (hits_f[:, :k] * discounts[:k]).sum(1)
        idcg = ideal_cum[(denom.long() - 1).clamp(min=0)]
        out[f"ndcg@{k}"] = dcg / idcg
    return out


@dataclass
class MetricSums:
    """Running sums of per-user metrics; ``means()`` after all ranks' sums were added together."""

    ks: list[int]
    sums: dict[str, float] = field(default_factory=dict)
    users: int = 0

    def add(self, topk_items: Tensor, target_offsets: Tensor, target_items: Tensor) -> None:
        if topk_items.shape[0] == 0:
            return
        hits = hits_matrix(topk_items, target_offsets, target_items)
        per_user = recall_ndcg(hits, target_offsets[1:] - target_offsets[:-1], self.ks)
        for name, values in per_user.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.users += topk_items.shape[0]

    def names(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in ("recall", "ndcg")]

    def as_tensor(self) -> Tensor:
        """[users, sum_1, sum_2, ...] in ``names()`` order, float64, for an all-reduce."""
        return torch.tensor(
            [self.users] + [self.sums.get(n, 0.0) for n in self.names()], dtype=torch.float64
        )

    @staticmethod
    def means_from(ks: list[int], reduced: Tensor) -> dict[str, float]:
        probe = MetricSums(ks)
        users = float(reduced[0])
        means = {
            n: float(v) / users if users else float("nan")
            for n, v in zip(probe.names(), reduced[1:].tolist())
        }
        means["users"] = users
        return means
