"""Exact top-K with seen masking on one device: the library's ``masked_topk`` against
``torch.topk`` over the full score rows, same data, same device, timed in the same run.

The peer (``bench/peers.torch_topk``, the CPU bench's too) scores a block of 1,024 users against
every item ([users, items] fp32), writes -inf at the seen items and calls ``torch.topk``; ours runs its tiled threshold kernel twice: with the library's
default tiles (what evaluation uses today: 256 users x 4096 items) and with GPU-sized tiles (all
users x 131072 items). Both are fp32 (TF32 off, torch's default), so the results must agree.
"""

from __future__ import annotations

import torch

from bench.harness import best, interleaved
from bench.peers import torch_topk
from cllm4rec_dist.ops.topk import masked_topk


def bench_topk(
    device: torch.device,
    num_items: int,
    dim: int,
    users: list[int],
    k: int = 20,
    seen_per_user: int = 50,
    repeats: int = 3,
) -> list[dict]:
    """One row per batch size: users/s of each method, ratios, and whether the results agree."""
    gen = torch.Generator(device=device).manual_seed(0)
    items = torch.randn(num_items, dim, device=device, generator=gen)
    rows = []
    for n in users:
        q = torch.randn(n, dim, device=device, generator=gen)
        seen = torch.randint(0, num_items, (n * seen_per_user,), device=device, generator=gen)
        offsets = torch.arange(n + 1, device=device) * seen_per_user
        wide = dict(user_chunk=n, item_chunk=min(num_items, 131072))
        fns = {
            "ours": lambda q=q, s=seen, o=offsets: masked_topk(q, items, k, o, s),
            "ours_wide": lambda q=q, s=seen, o=offsets, w=wide: masked_topk(q, items, k, o, s, **w),
            "torch_topk": lambda q=q, s=seen, o=offsets: torch_topk(q, items, k, o, s, 1024),
        }
        # Interleaved rounds (bench/harness.py); the device is synchronised around each call.
        sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        seconds = best(interleaved(fns, repeats, sync=sync))
        ours_s, ours_i = fns["ours"]()
        wide_s, wide_i = fns["ours_wide"]()
        ref_s, ref_i = fns["torch_topk"]()
        # Same fp32 scores up to the matmul's summation order; item sets compared per user.
        same = [
            torch.allclose(s, ref_s, rtol=1e-4, atol=1e-3)
            and bool((i.sort(1).values == ref_i.sort(1).values).all())
            for s, i in ((ours_s, ours_i), (wide_s, wide_i))
        ]
        rows.append(
            dict(
                users=n,
                ours_users_s=n / seconds["ours"],
                ours_wide_users_s=n / seconds["ours_wide"],
                torch_topk_users_s=n / seconds["torch_topk"],
                ratio=seconds["torch_topk"] / seconds["ours"],
                ratio_wide=seconds["torch_topk"] / seconds["ours_wide"],
                agree=all(same),
            )
        )
        del q, seen, offsets
    return rows
