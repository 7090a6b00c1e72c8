"""What the LM adds to the ID rows' own scores (docs/results.md, "SmolLM2-135M", third round).

A user's vector splits into the LM's last hidden state h (``model.id_skip=false``) and the skip
s, the mean of the ID rows its prompt reads (``model/cllm4rec.causal_id_mean`` at the last
position). This scores validation with ``a * h + s`` against the export's item head for each
``--scales`` a: ``a = 0`` is the rows alone, ``a = lm_scale`` the model as trained (for an
export trained with the skip), and ``--lm-only`` adds the LM alone. Validation metrics use the
shared split rule and evaluation (``baselines/ranking.py``).

    python experiments/lm_share.py --export FT/best --data DATA --scales 0 0.1 0.25 1
"""

from __future__ import annotations

import argparse

import torch

from cllm4rec_dist.api.recommender import Recommender
from cllm4rec_dist.baselines.ranking import RowScorer, evaluate_rows
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.shards import iter_rows


def vectors(rec: Recommender, data: str, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, s) [U, H] each for every user with validation items (zero rows for the others)."""
    rows = [r for r in iter_rows(data, "recommendation", shuffle=False) if len(r["val"])]
    hidden = rec.model.backbone.hidden_size
    lm, skip = (torch.zeros(rec.num_users, hidden) for _ in range(2))
    model, trained = rec.model, (rec.model.id_skip, rec.model.lm_scale)
    try:
        with torch.no_grad():
            for lo in range(0, len(rows), batch):
                b = rec.collator.collate_rec_eval(rows[lo : lo + batch], "val")
                model.id_skip, model.lm_scale = False, 1.0
                h = model.user_vectors(b)
                model.id_skip = True
                lm[b.users], skip[b.users] = h, model.user_vectors(b) - h
    finally:
        model.id_skip, model.lm_scale = trained
    return lm, skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True, help="an export directory (FT/best)")
    ap.add_argument("--data", required=True, help="its prepared dataset directory")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5, 1.0])
    ap.add_argument("--lm-only", action="store_true", help="also score with the LM alone")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = Recommender.from_pretrained(args.export, prefilter=False)
    man = load_manifest(args.data)
    lm, skip = vectors(rec, args.data)
    items = rec.item_vectors()
    print(
        f"{args.export}: trained with id_skip={rec.model.id_skip} lm_scale={rec.model.lm_scale}; "
        f"mean norms: LM {lm.norm(dim=1)[lm.norm(dim=1) > 0].mean():.2f}, "
        f"skip {skip.norm(dim=1)[skip.norm(dim=1) > 0].mean():.2f}"
    )
    cases = [(f"a = {a:g}", a * lm + skip) for a in args.scales]
    if args.lm_only:
        cases.append(("LM alone", lm))
    for name, vec in cases:
        scorer = RowScorer(lambda users, vec=vec: vec[users] @ items.T)
        val = evaluate_rows(args.data, man, "val", [20, 100], 512, scorer)
        print(f"{name:>10}: val recall@20 {val['recall@20']:.4f} ndcg@100 {val['ndcg@100']:.4f}")


if __name__ == "__main__":
    main()
