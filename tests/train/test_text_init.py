"""tables.init=text on one process: item rows follow their text, users follow their items."""

from __future__ import annotations

import torch

from cllm4rec_dist.data.format import prompt_builder_templates
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.model.collab_rows import reference_factors
from cllm4rec_dist.model.loading import load_tokenizer
from cllm4rec_dist.model.prompts import PromptBuilder
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.train.text_init import descriptions, init_from_text
from tests.helpers import compose_train


def _parts(data_dir):
    cfg = compose_train("pretrain", [f"data.dir={data_dir}"])
    manifest = load_manifest(str(data_dir))
    tokenizer = load_tokenizer(cfg.model, tokenizer_json=manifest.tokenizer_json())
    prompts = PromptBuilder(
        tokenizer,
        prompt_builder_templates(manifest.prompts),
        manifest.num_users,
        manifest.num_items,
    )
    dim = 16
    tables = {
        name: DenseTable(n, dim, seed=i, std=0.0)
        for i, (name, n) in enumerate(
            [
                ("user_collab", manifest.num_users),
                ("item_collab", manifest.num_items),
                ("user_content", manifest.num_users),
                ("item_content", manifest.num_items),
            ]
        )
    }
    embedding = torch.randn(len(tokenizer), dim, generator=torch.Generator().manual_seed(0))
    return manifest, prompts, tables, embedding


def test_text_init_places_items_by_text_and_users_by_items(tiny_dataset):
    manifest, prompts, tables, embedding = _parts(tiny_dataset)
    counts = init_from_text(tables, embedding, prompts, str(tiny_dataset), max_tokens=24)
    texts = descriptions(str(tiny_dataset), "item", 0, manifest.num_items)
    assert counts["items_with_text"] == len(texts) > 0

    items = tables["item_collab"].weight.detach()
    # Both copies get the same rows (their random init is zero here).
    torch.testing.assert_close(items, tables["item_content"].weight.detach())
    # Every row sits at a token's typical distance from the catalog's mean token.
    with_text = torch.tensor(sorted(texts))
    spread = (items[with_text] - items[with_text].mean(0)).norm(dim=1)
    assert torch.isfinite(items).all() and (spread > 0).all()
    # Items without text share the one mean row.
    without = [i for i in range(manifest.num_items) if i not in texts]
    if without:
        assert torch.allclose(items[without], items[without[0]].expand(len(without), -1))
    # Two items with the same text start at the same row.
    by_text: dict[str, int] = {}
    for index, text in texts.items():
        if text in by_text:
            torch.testing.assert_close(items[index], items[by_text[text]])
        by_text[text] = index

    users = tables["user_collab"].weight.detach()
    history = {
        int(row["user"]): list(row["train"])
        for row in iter_rows(str(tiny_dataset), "recommendation", shuffle=False)
    }
    assert counts["users_from_items"] == sum(1 for h in history.values() if h)
    # A user's row points the same way as the mean of its items' deviations from the mean token.
    user, train = next((u, h) for u, h in history.items() if len(h) > 1)
    assert torch.isfinite(users).all()
    cos = torch.nn.functional.cosine_similarity(
        users[user] - users.mean(0), items[list(train)].mean(0) - users.mean(0), dim=0
    )
    assert cos > 0.5, cos


def test_text_init_without_descriptions_keeps_random_rows(tmp_path, tiny_dataset, monkeypatch):
    manifest, prompts, tables, embedding = _parts(tiny_dataset)
    before = {k: t.weight.detach().clone() for k, t in tables.items()}
    monkeypatch.setattr("cllm4rec_dist.train.text_init.descriptions", lambda *a: {})
    assert init_from_text(tables, embedding, prompts, str(tiny_dataset), 24) == {
        "items_with_text": 0
    }
    for name, table in tables.items():
        torch.testing.assert_close(table.weight.detach(), before[name])


def test_collab_dims_add_the_interactions_factors_to_the_item_rows(tiny_dataset):
    manifest, prompts, plain, embedding = _parts(tiny_dataset)
    init_from_text(plain, embedding, prompts, str(tiny_dataset), max_tokens=24)
    _, _, tables, _ = _parts(tiny_dataset)
    init_from_text(
        tables, embedding, prompts, str(tiny_dataset), 24, collab_dims=4, collab_norm=1.5
    )
    added = tables["item_collab"].weight.detach() - plain["item_collab"].weight.detach()
    x = torch.zeros(manifest.num_users, manifest.num_items)
    for row in iter_rows(str(tiny_dataset), "recommendation", shuffle=False):
        x[int(row["user"]), list(row["train"])] = 1.0
    factors = reference_factors(x, 4)
    taken = factors.norm(dim=1) > 0
    # What was added holds the SVD factors' cosines, each row at the norm asked.
    torch.testing.assert_close(added[taken].norm(dim=1), torch.full((int(taken.sum()),), 1.5))
    unit = torch.nn.functional.normalize(factors[taken], dim=1)
    torch.testing.assert_close(added[taken] @ added[taken].T / 1.5**2, unit @ unit.T,
                               atol=2e-3, rtol=0)  # fmt: skip
    torch.testing.assert_close(tables["item_content"].weight, tables["item_collab"].weight)
