"""The synthetic source: determinism, block independence, shape of the data, learnable signal."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from data_prep import synthetic
from data_prep.config import SyntheticSourceConfig
from data_prep.pipeline.split import TEST, TRAIN, assign_splits

SMALL = SyntheticSourceConfig(num_users=600, num_items=200, users_per_block=256)


def generate_all(cfg: SyntheticSourceConfig) -> dict[str, pa.Table]:
    settings = asdict(cfg)
    catalog = synthetic.make_catalog(settings)
    blocks = [
        synthetic.generate_block(catalog, settings, b)
        for b in range(synthetic.num_blocks(settings))
    ]
    return {name: pa.concat_tables([b[name] for b in blocks]) for name in blocks[0]}


def test_same_seed_same_data_whatever_the_block_size() -> None:
    reference = generate_all(SMALL)
    assert generate_all(SMALL) == reference
    assert generate_all(replace(SMALL, users_per_block=512)) == reference
    other = generate_all(replace(SMALL, seed=1))
    assert other["interactions"] != reference["interactions"]


def test_shape_of_the_data() -> None:
    data = generate_all(SMALL)
    inter = data["interactions"].to_pandas()
    per_user = inter.groupby("user").size()
    assert len(per_user) == SMALL.num_users and per_user.min() >= SMALL.min_interactions
    assert abs(per_user.mean() - SMALL.mean_interactions) < 2
    assert not inter.duplicated(["user", "item"]).any()
    assert inter["rating"].between(1, 5).all() and inter["rating"].nunique() >= 4
    review_share = data["reviews"].num_rows / len(inter)
    assert abs(review_share - SMALL.review_fraction) < 0.03
    assert data["user_texts"].num_rows == SMALL.num_users  # user_text_fraction = 1
    words = pa.compute.utf8_split_whitespace(data["reviews"]["text"])
    lengths = pa.compute.list_value_length(words).to_numpy()
    assert lengths.min() >= SMALL.text_min_words and lengths.max() <= SMALL.text_max_words
    # Popularity is skewed: the top 10% of items take well over 10% of the interactions.
    item_counts = inter.groupby("item").size().sort_values(ascending=False)
    assert item_counts.iloc[: SMALL.num_items // 10].sum() > 0.18 * len(inter)
    catalog = synthetic.make_catalog(asdict(SMALL))
    assert len(catalog.item_texts) == SMALL.num_items and catalog.item_texts.null_count == 0


def test_a_learning_model_beats_popularity() -> None:
    demo = SyntheticSourceConfig()  # the default (demo) size
    inter = generate_all(demo)["interactions"].to_pandas()
    users = inter["user"].str[1:].astype(np.int64).to_numpy()
    items = inter["item"].str[1:].astype(np.int64).to_numpy()
    split = assign_splits(users, items, 0, 0.1, 0.1, 3)
    shape = (demo.num_users, demo.num_items)
    train = split == TRAIN
    x = sp.csr_matrix((np.ones(train.sum()), (users[train], items[train])), shape=shape)
    test = sp.csr_matrix(
        (np.ones((split == TEST).sum()), (users[split == TEST], items[split == TEST])), shape=shape
    )
    popularity = np.tile(np.asarray(x.sum(axis=0)), (shape[0], 1))
    # Item-item cosine kNN: a plain collaborative model that can only win through user taste.
    norms = np.sqrt(np.asarray(x.sum(axis=0))).ravel() + 1e-9
    similarity = (x.T @ x).toarray() / np.outer(norms, norms)
    np.fill_diagonal(similarity, 0)
    knn = x @ similarity

    def recall_at_20(scores: np.ndarray) -> float:
        scores = np.where(x.toarray() > 0, -np.inf, scores)
        top = np.argsort(-scores, axis=1)[:, :20]
        hits = np.take_along_axis(test.toarray(), top, axis=1).sum(axis=1)
        held = np.asarray(test.sum(axis=1)).ravel()
        return float(np.mean(hits[held > 0] / np.minimum(20, held[held > 0])))

    pop, learned = recall_at_20(popularity), recall_at_20(np.asarray(knn))
    assert learned > 1.5 * pop, (learned, pop)


def test_bad_config_names_the_keys() -> None:
    bad = asdict(replace(SMALL, users_per_block=300, review_fraction=1.5))
    with pytest.raises(ValueError, match="users_per_block") as err:
        synthetic.check_source_config(bad)
    assert "review_fraction" in str(err.value)
