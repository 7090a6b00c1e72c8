"""Collaborative-LM pretraining throughput: our step against the original CLLM4Rec step.

All variants train on the same synthetic histories with the same backbone (one config,
identically seeded copies) on the same machine in one run; every timed batch goes through all
variants back to back (rotating order):

- ours: ``Collator.collate_collab`` (cached prompt ids + arithmetic ID tokens; documents packed
  several per row, each restarting its position ids) -> one backbone pass -> item logits at the
  target positions only (``DenseItemScorer``) -> mutual regularization over the batch's unique
  ids. ``ours-rows`` is the same step with one document per row (``pack=False``).
- original (re-implemented here after ``src/libs/{tokenizer,data,model}.py`` of the CLLM4Rec
  code): the text ``"user_5 has interacted with"`` / ``"item_3 item_9 ..."`` is re-tokenized
  every batch by a tokenizer with the ID tokens added as strings (regex pre-split, every text
  tokenized twice: once for the batch's max length, once to encode); one document per row; a
  prompt pass whose ``past_key_values`` feed the main-text pass; three masked embedding lookups
  at every position; item logits at every main position ([B, M, I]); the regularizer as
  lambda * MSE(sum) over the full [B, T, H] embeddings. Word pieces use the Rust BPE (the
  original used the Python GPT-2 BPE), which favours the original.

History lengths (``--history beauty``, default) follow Amazon Beauty's train histories under
leave-one-out (min 3, median 4, mean 6.9, p90 12, p99 41): 3 + round(LogNormal(0, 1.65)), capped
at ``--max-history``; ``--history uniform`` draws them uniformly from [--min-history,
--max-history]. Items are drawn by a Zipf-like popularity. User / item counts default to Amazon
Beauty's (22,363 / 12,101).

Each step = collation + forward + backward + Adam step on the ID tables (and on the backbone with
``--mode full``). Tokens = document tokens (prompt + items, no padding), identical for all
variants (ours feeds one token less per document: the last item predicts nothing).

    .venv/bin/python bench/bench_train.py [--layers 4 --batch 32 --history beauty ...]
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cllm4rec_dist.data.collate import Collator
from cllm4rec_dist.model.backbone import Backbone
from cllm4rec_dist.model.cllm4rec import CLLM4Rec, IdTables
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.prompts import DEFAULT_TEMPLATES, PromptBuilder
from cllm4rec_dist.model.tables import DenseTable

WORD_CORPUS = [
    "has interacted with, will interact with",
    "writes the following review for the item: works well, would buy again.",
    "The description of this item is: a small red lamp for the desk.",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=22363)
    p.add_argument("--items", type=int, default=12101)
    p.add_argument("--layers", type=int, default=4, help="of SmolLM2-135M's 30")
    p.add_argument("--batch", type=int, default=32, help="documents (users) per step")
    p.add_argument("--history", choices=["beauty", "uniform"], default="beauty")
    p.add_argument("--min-history", type=int, default=10, help="uniform only")
    p.add_argument("--max-history", type=int, default=64, help="cap (= our data.max_items)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", choices=["frozen", "full"], default="frozen")
    p.add_argument("--lambda-v", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    return p.parse_args()


def smollm2_shaped_lm(layers: int) -> LlamaForCausalLM:
    """SmolLM2-135M's Llama config (hidden 576, 9 heads / 3 KV heads, MLP 1536, vocab 49152,
    tied embeddings) with ``layers`` layers, random init with a fixed seed."""
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(config)


def word_tokenizer() -> Tokenizer:
    """A small byte-level BPE (ids < 49152) shared by both variants; only prompt words use it."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(WORD_CORPUS, trainer)
    return tok


def synthetic_batches(args: argparse.Namespace, num_batches: int) -> list[list[dict]]:
    """Per step ``args.batch`` users with histories of the chosen length distribution; items
    drawn without replacement by a Zipf-like popularity."""
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, args.items + 1) ** 0.8
    popularity /= popularity.sum()
    batches = []
    for _ in range(num_batches):
        rows = []
        for user in rng.choice(args.users, args.batch, replace=False):
            if args.history == "beauty":
                n = min(3 + round(rng.lognormal(0.0, 1.65)), args.max_history)
            else:
                n = rng.integers(args.min_history, args.max_history + 1)
            items = rng.choice(args.items, n, replace=False, p=popularity)
            rows.append({"user": int(user), "items": items.astype(np.int64)})
        batches.append(rows)
    return batches


# ----- the original code's step, re-implemented ---------------------------------------------


class OriginalTokenizer:
    """TokenizerWithUserItemIDTokensBatch: "user_i" / "item_j" are string tokens with ids
    V + i / V + U + j; the rest goes through the word BPE."""

    _ID_PATTERN = r"(user_\d+|item_\d+)"

    def __init__(self, words: Tokenizer, vocab_size: int, num_users: int, num_items: int):
        self.words = words
        self.user_token_encoder = {f"user_{i}": vocab_size + i for i in range(num_users)}
        self.item_token_encoder = {
            f"item_{j}": vocab_size + num_users + j for j in range(num_items)
        }
        self.encoder = {**words.get_vocab(), **self.user_token_encoder, **self.item_token_encoder}
        self.pad_token_id = 0

    def _tokenize(self, text: str) -> list[str]:
        pieces = [p.rstrip() for p in re.split(self._ID_PATTERN, text) if p.rstrip()]
        tokens: list[str] = []
        for piece in pieces:
            if piece in self.user_token_encoder or piece in self.item_token_encoder:
                tokens.append(piece)
            else:
                tokens += self.words.encode(piece).tokens
        return tokens

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        max_length = max(len(self._tokenize(text)) for text in texts)
        ids, masks = [], []
        for text in texts:
            row = [self.encoder[t] for t in self._tokenize(text)]
            pad = max_length - len(row)
            ids.append(row + [self.pad_token_id] * pad)
            masks.append([1] * len(row) + [0] * pad)
        return np.array(ids), np.array(masks)


def original_collate(tok: OriginalTokenizer, rows: list[dict]) -> tuple[Tensor, Tensor, Tensor]:
    """CollaborativeGPTGeneratorBatch.collate_fn -> (prompt_ids, main_ids, attention_mask)."""
    prompts = [f"user_{row['user']} has interacted with" for row in rows]
    mains = [" ".join("item_" + str(i) for i in row["items"]) for row in rows]
    prompt_ids, prompt_mask = tok.encode_batch(prompts)
    main_ids, main_mask = tok.encode_batch(mains)
    mask = torch.cat((torch.tensor(prompt_mask), torch.tensor(main_mask)), dim=1)
    return torch.tensor(prompt_ids), torch.tensor(main_ids), mask


class OriginalBase(nn.Module):
    """GPT4RecommendationBaseModel: user / item nn.Embedding beside the LM's word embedding."""

    def __init__(self, lm: LlamaForCausalLM, num_users: int, num_items: int, seed: int):
        super().__init__()
        self.lm, self.vocab_size = lm, lm.config.vocab_size
        self.num_users, self.num_items = num_users, num_items
        hidden = lm.config.hidden_size
        self.user_embeddings = nn.Embedding(num_users, hidden)
        self.item_embeddings = nn.Embedding(num_items, hidden)
        gen = torch.Generator().manual_seed(seed)
        for table in (self.user_embeddings, self.item_embeddings):
            table.weight.data.normal_(0.0, 0.02, generator=gen)

    def embed(self, input_ids: Tensor) -> Tensor:
        v, u = self.vocab_size, self.num_users
        vocab_mask = (input_ids < v).long()
        user_mask = ((input_ids >= v) & (input_ids < v + u)).long()
        item_mask = (input_ids >= v + u).long()
        vocab_ids = (input_ids * vocab_mask).clamp_(0, v - 1)
        words = self.lm.model.embed_tokens(vocab_ids) * vocab_mask.unsqueeze(-1)
        user_ids = ((input_ids - v) * user_mask).clamp_(0, u - 1)
        users = self.user_embeddings(user_ids) * user_mask.unsqueeze(-1)
        item_ids = ((input_ids - v - u) * item_mask).clamp_(0, self.num_items - 1)
        items = self.item_embeddings(item_ids) * item_mask.unsqueeze(-1)
        return words + users + items

    def forward(self, input_ids: Tensor, **kwargs):
        return self.lm.model(inputs_embeds=self.embed(input_ids), **kwargs)


class OriginalCollaborative(nn.Module):
    """CollaborativeGPTwithItemLMHeadBatch with regularize=True."""

    def __init__(self, base: OriginalBase):
        super().__init__()
        self.base_model = base
        self.vocab_size, self.num_users = base.vocab_size, base.num_users

    def forward(
        self,
        prompt_ids: Tensor,
        main_ids: Tensor,
        attention_mask: Tensor,
        lambda_v: float,
        content_embeds: Tensor,
    ) -> Tensor:
        prompt_out = self.base_model(input_ids=prompt_ids, use_cache=True)
        main_out = self.base_model(
            input_ids=main_ids,
            past_key_values=prompt_out.past_key_values,
            attention_mask=attention_mask,
            use_cache=True,
        )
        item_logits = main_out.last_hidden_state @ self.base_model.item_embeddings.weight.T
        shift_logits = item_logits[..., :-1, :].contiguous()
        shift_labels = main_ids[..., 1:].contiguous() - self.vocab_size - self.num_users
        active = attention_mask[:, prompt_ids.shape[1] + 1 :].reshape(-1) == 1
        loss = nn.functional.cross_entropy(
            shift_logits.view(-1, shift_logits.size(-1))[active], shift_labels.view(-1)[active]
        )
        collab_embeds = torch.cat(
            (self.base_model.embed(prompt_ids), self.base_model.embed(main_ids)), dim=1
        )
        reg = lambda_v * torch.mean(nn.MSELoss(reduction="sum")(collab_embeds, content_embeds))
        return loss + reg


# ----- timing -----------------------------------------------------------------------------


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    words = word_tokenizer()
    hf_words = PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    lm_ours, lm_orig = smollm2_shaped_lm(args.layers), smollm2_shaped_lm(args.layers)
    for lm in (lm_ours, lm_orig):
        lm.requires_grad_(args.mode == "full")
        lm.config.use_cache = False
    backbone = Backbone(lm_ours)
    v = backbone.vocab_size

    tables = IdTables(
        *(DenseTable(n, 576, seed=s) for s, n in enumerate([args.users, args.items] * 2))
    )
    ours = CLLM4Rec(backbone, tables, DenseItemScorer(tables.item_collab), args.lambda_v)
    builder = PromptBuilder(hf_words, DEFAULT_TEMPLATES, args.users, args.items, vocab_size=v)
    collators = {
        pack: Collator(builder, max_items=args.max_history, max_text_tokens=64, pack=pack)
        for pack in (True, False)
    }
    ours_opt = torch.optim.Adam(trainable(ours), lr=1e-3)

    orig_tok = OriginalTokenizer(words, v, args.users, args.items)
    original = OriginalCollaborative(OriginalBase(lm_orig, args.users, args.items, seed=0))
    content_base = OriginalBase(lm_orig, args.users, args.items, seed=1)
    orig_opt = torch.optim.Adam(trainable(original), lr=1e-3)

    num_batches = args.warmup + args.steps
    batches = synthetic_batches(args, num_batches)
    rng = np.random.default_rng(0)

    def our_step(rows: list[dict], pack: bool) -> None:
        batch = collators[pack].collate_collab(rows, rng)
        out = ours.collaborative_loss(batch)
        ours_opt.zero_grad()
        out.loss.backward()
        ours_opt.step()

    def original_step(rows: list[dict]) -> None:
        prompt_ids, main_ids, mask = original_collate(orig_tok, rows)
        with torch.no_grad():
            content = torch.cat((content_base.embed(prompt_ids), content_base.embed(main_ids)), 1)
        loss = original(prompt_ids, main_ids, mask, args.lambda_v, content)
        orig_opt.zero_grad()
        loss.backward()
        orig_opt.step()

    def document_tokens(rows: list[dict]) -> int:
        """Prompt + item tokens of the documents (what the original feeds, padding excluded)."""
        prompt = len(builder.prompt("collaborative", user=0))
        return sum(prompt + len(row["items"]) for row in rows)

    steps = {
        "ours": lambda rows: our_step(rows, pack=True),
        "ours-rows": lambda rows: our_step(rows, pack=False),
        "original": original_step,
    }
    for rows in batches[: args.warmup]:
        for step in steps.values():
            step(rows)
    names = list(steps)
    seconds = {name: [] for name in names}
    for k, rows in enumerate(batches[args.warmup :]):
        # Every timed batch runs through all variants back to back, in a rotating order, so a
        # slow spell on the shared machine hits them alike; per-batch ratios are then robust.
        for name in names[k % len(names) :] + names[: k % len(names)]:
            start = time.perf_counter()
            steps[name](rows)
            seconds[name].append(time.perf_counter() - start)
    tokens = sum(document_tokens(rows) for rows in batches[args.warmup :])

    lengths = np.array([len(r["items"]) for b in batches for r in b])
    print(
        f"backbone: SmolLM2-135M-shaped Llama (hidden 576, 9/3 heads, MLP 1536, vocab 49152), "
        f"{args.layers} layers, random init, fp32, mode={args.mode}; users={args.users} "
        f"items={args.items}; {args.batch} documents per step; history={args.history} "
        f"(mean {lengths.mean():.1f}, max {lengths.max()}); threads={torch.get_num_threads()}; "
        f"{args.steps} timed steps per variant, {tokens} document tokens"
    )
    for name in names:
        total = sum(seconds[name])
        print(f"{name:>10}: {tokens / total:9.1f} tokens/s  ({total / args.steps:.3f} s/step)")
    for name in ("ours", "ours-rows"):
        total = sum(seconds["original"]) / sum(seconds[name])
        per_batch = np.median(np.array(seconds["original"]) / np.array(seconds[name]))
        print(
            f"{name:>10} / original: {total:.2f}x (total time), "
            f"{per_batch:.2f}x (median per-batch ratio)"
        )


if __name__ == "__main__":
    main()
