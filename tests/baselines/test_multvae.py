"""Mult-VAE: the sparse input layer and loss against dense formulas; training on the tiny dataset
is seeded, deterministic and ranks better than popularity on validation (all of seeds 0-4 did:
NDCG@10 0.45-0.47 against 0.33)."""

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from cllm4rec_dist.baselines.config import MultVAEConfig
from cllm4rec_dist.baselines.multvae import MultVAE, evaluate_multvae, vae_loss
from cllm4rec_dist.baselines.popularity import evaluate_popularity
from cllm4rec_dist.data.manifest import load_manifest

KS = [5, 10]
TINY = MultVAEConfig(dims=[32, 16], batch_size=8, epochs=60, patience=20, threads=1)


def _csr(rows):
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(r) for r in rows])]))
    return offsets, torch.tensor(np.concatenate(rows), dtype=torch.int64)


def test_forward_and_loss_match_dense_formulas():
    torch.manual_seed(0)
    model = MultVAE(7, [5, 3], dropout=0.5, generator=torch.Generator().manual_seed(0)).eval()
    rows = [np.array([0, 3, 6]), np.array([2]), np.array([1, 2, 4, 5])]
    offsets, items = _csr(rows)
    x = torch.zeros(3, 7)
    for u, r in enumerate(rows):
        x[u, r] = 1.0
    logits, mu, logvar = model(items, offsets)
    # Dense reference: Linear layers on the L2-normalised multi-hot rows, z = μ in eval.
    h = F.normalize(x) @ model.input.weight + model.input_bias
    h = model.encoder[0](torch.tanh(h))
    assert torch.allclose(mu, h[:, :3], atol=1e-6) and torch.allclose(logvar, h[:, 3:], atol=1e-6)
    want = model.decoder[1](torch.tanh(model.decoder[0](mu)))
    assert torch.allclose(logits, want, atol=1e-6)
    loss = vae_loss(logits, mu, logvar, offsets, items, beta=0.3)
    nll = -(torch.log_softmax(want, 1) * x).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    assert torch.allclose(loss, nll + 0.3 * kl, atol=1e-5)
    assert float(kl.detach()) > 0


def test_multvae_trains_deterministically_and_beats_popularity(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    before = torch.random.get_rng_state()
    a = evaluate_multvae(data, manifest, KS, TINY)
    assert torch.equal(torch.random.get_rng_state(), before)  # caller's RNG untouched
    b = evaluate_multvae(data, manifest, KS, TINY)
    assert a == b
    other = evaluate_multvae(data, manifest, KS, dataclasses.replace(TINY, seed=1))
    assert other["history"] != a["history"]
    for split in ("val", "test"):
        metrics = {f"{m}@{k}" for m in ("recall", "ndcg") for k in KS}
        assert set(a[split]) == metrics | {"users"}
        assert a[split]["users"] > 0
        assert all(0.0 <= a[split][m] <= 1.0 for m in metrics)
    assert 1 <= a["epoch"] <= a["epochs_run"] <= TINY.epochs
    assert 0 < a["beta"] <= TINY.beta_max
    assert a["val"]["ndcg@10"] == max(v for _, v in a["history"])
    popularity = evaluate_popularity(data, manifest, KS)
    assert a["val"]["ndcg@10"] > popularity["val"]["ndcg@10"]
