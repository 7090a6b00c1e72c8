"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

A user's L2-normalised multi-hot training row x_u goes through dropout and an MLP encoder to
q(z|x_u) = N(μ, diag σ²); a mirrored MLP decoder gives logits over all items, trained with the
multinomial log-likelihood Σ_{i∈x_u} log softmax(logits)_i minus β·KL(q || N(0, I)). β rises
linearly from 0 and reaches ``beta_max`` at the last planned update: the paper's 0.2 at update
40k of its ~47k ML-20M updates (200k-step anneal capped at 0.2), rescaled to epochs × batches.
Scores for ranking are the logits at z = μ without dropout.

The input layer is an EmbeddingBag over the row's items (a sparse-times-dense product: dropout
and normalisation act on the nnz values only). Validation NDCG picks the epoch (early stopping
on ``patience``); the test split is scored once, by the parameters of the best epoch.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from cllm4rec_dist.baselines.config import MultVAEConfig
from cllm4rec_dist.baselines.ranking import RowScorer, evaluate_rows, train_matrix
from cllm4rec_dist.ops.topk import csr_rows

log = logging.getLogger(__name__)


class MultVAE(nn.Module):
    """[I → dims[0] → … → dims[-1]] encoder (μ and log σ² of size dims[-1]) and the mirrored
    decoder [dims[-1] → … → I], tanh between layers."""

    def __init__(self, num_items: int, dims: list[int], dropout: float, generator: torch.Generator):
        super().__init__()
        if not dims or min(dims) < 1:
            raise ValueError(f"dims must be a non-empty list of positive sizes, got {dims}")
        self.dropout, self.latent = dropout, dims[-1]
        enc = [*dims[:-1], 2 * dims[-1]]
        self.input = nn.EmbeddingBag(num_items, enc[0], mode="sum")  # the first Linear's weight
        self.input_bias = nn.Parameter(torch.empty(enc[0]))
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc, enc[1:]))
        dec = [*reversed(dims), num_items]
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec, dec[1:]))
        # The paper's init: Xavier-uniform weights, N(0, 0.001²) biases.
        for weight in [self.input.weight, *(m.weight for m in [*self.encoder, *self.decoder])]:
            # EmbeddingBag keeps the weight as [I, out]: same fan sum as Linear's [out, I].
            nn.init.xavier_uniform_(weight, generator=generator)
        for bias in [self.input_bias, *(m.bias for m in [*self.encoder, *self.decoder])]:
            nn.init.normal_(bias, std=0.001, generator=generator)

    def forward(self, items: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One user per CSR row (offsets [B+1], items [nnz]) -> (logits [B, I], μ, log σ² [B, d])."""
        counts = (offsets[1:] - offsets[:-1]).clamp(min=1)
        values = torch.repeat_interleave(counts.float().rsqrt(), offsets.diff())
        values = F.dropout(values, self.dropout, self.training)
        h = self.input(items, offsets[:-1], per_sample_weights=values) + self.input_bias
        for layer in self.encoder:
            h = layer(torch.tanh(h))
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        for i, layer in enumerate(self.decoder):
            z = layer(z if i == 0 else torch.tanh(z))
        return z, mu, logvar


def vae_loss(
    logits: Tensor, mu: Tensor, logvar: Tensor, offsets: Tensor, items: Tensor, beta: float
) -> Tensor:
    """Batch mean of −Σ_{i∈x_u} log softmax(logits_u)_i + β·KL(N(μ, σ²) || N(0, I))."""
    log_probs = torch.log_softmax(logits, dim=-1)
    nll = -log_probs[csr_rows(offsets), items].sum() / logits.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
    return nll + beta * kl


def _rows(x: sp.csr_matrix, users: np.ndarray) -> tuple[Tensor, Tensor]:
    sub = x[users]
    return torch.from_numpy(sub.indptr.astype(np.int64)), torch.from_numpy(
        sub.indices.astype(np.int64)
    )


def _scorer(model: MultVAE, x: sp.csr_matrix) -> RowScorer:
    def score_rows(users: Tensor) -> Tensor:
        offsets, items = _rows(x, users.numpy())
        return model(items, offsets)[0]

    return RowScorer(score_rows)


def evaluate_multvae(
    data_dir: str,
    manifest: Any,
    ks: list[int],
    cfg: MultVAEConfig,
    select: str | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Train on the training rows, pick the epoch on validation ``select`` (default NDCG at the
    largest k); returns {"val", "test", "epoch", "beta", "epochs_run", "history"} (beta: the KL
    weight reached at the end of the picked epoch; history: validation ``select`` per evaluated
    epoch). ``progress``: a bar over the epochs (each epoch's line is logged at DEBUG)."""
    select = select or f"ndcg@{max(ks)}"
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.eval_every < 1:
        raise ValueError("multvae epochs, batch_size and eval_every must be >= 1")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    x = train_matrix(data_dir, manifest.num_users, manifest.num_items)
    train_users = np.flatnonzero(np.diff(x.indptr))
    if len(train_users) == 0:
        raise ValueError(f"{data_dir}: no user has train items; Mult-VAE has nothing to fit")
    steps_per_epoch = math.ceil(len(train_users) / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    # Own RNG state (init, shuffling, dropout, sampling): seeded runs are reproducible and the
    # caller's global torch RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = MultVAE(manifest.num_items, list(cfg.dims), cfg.dropout, gen)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, history, step, epoch = None, [], 0, 0
        bar = tqdm(
            range(1, cfg.epochs + 1), desc="Mult-VAE epochs", disable=not progress, leave=False
        )
        for epoch in bar:
            model.train()
            order = train_users[torch.randperm(len(train_users), generator=gen).numpy()]
            for lo in range(0, len(order), cfg.batch_size):
                offsets, items = _rows(x, order[lo : lo + cfg.batch_size])
                beta = cfg.beta_max * min(1.0, step / total_steps)
                loss = vae_loss(*model(items, offsets), offsets, items, beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            if epoch % cfg.eval_every and epoch != cfg.epochs:
                continue
            model.eval()
            val = evaluate_rows(data_dir, manifest, "val", ks, batch_size, _scorer(model, x))
            history.append([epoch, val[select]])
            bar.set_postfix({select: f"{val[select]:.4f}"})
            log.debug(
                "Mult-VAE epoch %d: loss %.4f, validation %s=%.4f",
                epoch,
                loss.item(),
                select,
                val[select],
            )
            if best is None or val[select] > best[1][select]:
                best = (epoch, val, copy.deepcopy(model.state_dict()))
            elif epoch - best[0] >= cfg.patience:
                break
        bar.close()
        best_epoch, val, state = best
        model.load_state_dict(state)
        model.eval()
        test = evaluate_rows(data_dir, manifest, "test", ks, batch_size, _scorer(model, x))
    beta = cfg.beta_max * min(1.0, best_epoch * steps_per_epoch / total_steps)
    return {
        "val": val,
        "test": test,
        "epoch": best_epoch,
        "beta": beta,
        "epochs_run": epoch,
        "history": history,
    }
