"""The ``synthetic`` source: a topic model that generates interactions and texts together.

Each item has a topic mixture phi_i (sparse Dirichlet) and a Zipf popularity; each user a topic
mixture theta_u. A user's items are drawn without replacement by first drawing a topic z ~ theta_u
and then an item with probability ~ popularity_i * phi_i[z]. Item descriptions are words of the
item's topics, user descriptions words of the user's topics, reviews words of both. So the
interactions carry signal beyond popularity (theta_u), and the texts carry the same signal.

Users are generated in RNG chunks of ``SYNTHETIC_CHUNK_USERS``; chunk c draws from the stream
seeded by (seed, c), so the data does not depend on ``users_per_block`` (how many chunks one Ray
task generates). Items (the catalog) come from the stream (seed, "catalog") and are small
(num_items rows), so one process builds them and ships them to the block tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.config import SYNTHETIC_CHUNK_USERS

# Share of the words of a text drawn from its topics; the rest are common filler words.
TOPIC_WORD_SHARE = 0.6
FILLER_WORDS = (
    "the", "a", "an", "and", "or", "but", "this", "that", "it", "is", "was", "are", "with", "for",
    "of", "in", "on", "to", "very", "really", "quite", "so", "great", "good", "nice", "fine",
    "bad", "okay", "love", "like", "enjoy", "recommend", "think", "feel", "item", "one", "thing",
    "my", "i", "you", "we", "they", "always", "never", "often", "again", "more", "most", "much",
    "well", "also", "just", "about", "after", "before",
)  # fmt: skip
_CONSONANTS = list("bcdfgklmnprstvz")
_VOWELS = list("aeiou")
# Distinct stream tags of the SeedSequence (seed, tag, ...) of each part of the generator.
_CATALOG_STREAM = 0
_USER_STREAM = 1


@dataclass
class Catalog:
    """Everything item-side, shared (read-only) by all user blocks."""

    item_ids: pa.Array  # string [M]
    item_topics: np.ndarray  # float64 [M, K], rows sum to 1
    topic_item_cdf: np.ndarray  # float64 [K, M]: cumulative p(item | topic)
    vocabulary: pa.Array  # string [K * words_per_topic + len(FILLER_WORDS)]
    item_texts: pa.Array  # string [M]: "Title words. description ..."


def check_source_config(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError naming every key of a synthetic source config with an impossible value."""
    problems = []
    if cfg["num_users"] < 1 or cfg["num_items"] < 2 or cfg["num_topics"] < 1:
        problems.append("num_users >= 1, num_items >= 2 and num_topics >= 1 are required")
    if not 1 <= cfg["min_interactions"] <= cfg["mean_interactions"]:
        problems.append("need 1 <= min_interactions <= mean_interactions")
    if cfg["min_interactions"] > cfg["num_items"] // 2:
        problems.append("min_interactions must be <= num_items / 2")
    for key in ("review_fraction", "user_text_fraction"):
        if not 0.0 <= cfg[key] <= 1.0:
            problems.append(f"{key} must be in [0, 1]")
    if not 1 <= cfg["text_min_words"] <= cfg["text_max_words"]:
        problems.append("need 1 <= text_min_words <= text_max_words")
    if cfg["words_per_topic"] < 1:
        problems.append("words_per_topic must be >= 1")
    if cfg["users_per_block"] < 1 or cfg["users_per_block"] % SYNTHETIC_CHUNK_USERS:
        problems.append(f"users_per_block must be a positive multiple of {SYNTHETIC_CHUNK_USERS}")
    if problems:
        raise ValueError("invalid synthetic source config:\n  " + "\n  ".join(problems))


def num_blocks(cfg: Mapping[str, Any]) -> int:
    """Number of Ray tasks (blocks of ``users_per_block`` users) the source is generated in."""
    return math.ceil(cfg["num_users"] / cfg["users_per_block"])


def _id_strings(prefix: str, start: int, stop: int, total: int) -> pa.Array:
    # Zero-padded so that sorting the raw ids as strings keeps the numeric order.
    width = len(str(max(total - 1, 0)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(start, stop)], pa.string())


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct pronounceable words (2-3 consonant-vowel syllables), none a filler."""
    words: list[str] = []
    seen = set(FILLER_WORDS)
    while len(words) < count:
        syllables = rng.integers(2, 4)
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _draw_from_rows(rng: np.random.Generator, cdf: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One category per draw: draw j uses the cumulative distribution ``cdf[rows[j]]`` [K]."""
    u = rng.random(len(rows))
    return np.minimum((cdf[rows] < u[:, None]).sum(axis=1), cdf.shape[1] - 1)


def compose_texts(
    rng: np.random.Generator,
    mixtures: np.ndarray,
    vocabulary: pa.Array,
    words_per_topic: int,
    min_words: int,
    max_words: int,
    topic_share: float = TOPIC_WORD_SHARE,
) -> pa.Array:
    """One text per row of ``mixtures`` [n, K] (topic distributions) -> string [n].

    Each word is a topic word (topic drawn from the row's mixture) with probability
    ``topic_share``, else a filler word; lengths are uniform in [min_words, max_words].
    """
    n, k = mixtures.shape
    if n == 0:
        return pa.array([], pa.string())
    lengths = rng.integers(min_words, max_words + 1, n)
    doc_of_word = np.repeat(np.arange(n), lengths)
    cdf = np.cumsum(mixtures, axis=1)
    topics = _draw_from_rows(rng, cdf, doc_of_word)
    in_topic = rng.integers(0, words_per_topic, len(doc_of_word))
    filler = rng.integers(0, len(FILLER_WORDS), len(doc_of_word))
    use_topic = rng.random(len(doc_of_word)) < topic_share
    index = np.where(use_topic, topics * words_per_topic + in_topic, k * words_per_topic + filler)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    words = pa.ListArray.from_arrays(pa.array(offsets), vocabulary.take(pa.array(index)))
    return pc.binary_join(words, " ")


def make_catalog(cfg: Mapping[str, Any]) -> Catalog:
    """Items of the synthetic source: ids, topic mixtures, popularity, texts (deterministic)."""
    m, k, w = cfg["num_items"], cfg["num_topics"], cfg["words_per_topic"]
    rng = np.random.default_rng(np.random.SeedSequence([cfg["seed"], _CATALOG_STREAM]))
    item_topics = rng.dirichlet(np.full(k, cfg["item_topic_concentration"]), m)
    popularity = (rng.permutation(m) + 1.0) ** -cfg["popularity_exponent"]
    weights = (popularity[:, None] * item_topics).T  # [K, M]
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    vocabulary = pa.array(_pseudo_words(rng, k * w) + list(FILLER_WORDS), pa.string())
    main_topic = np.eye(k)[item_topics.argmax(axis=1)]
    titles = pc.utf8_capitalize(compose_texts(rng, main_topic, vocabulary, w, 2, 3, 1.0))
    descriptions = compose_texts(
        rng, item_topics, vocabulary, w, cfg["text_min_words"], cfg["text_max_words"]
    )
    texts = pc.binary_join_element_wise(titles, descriptions, ". ")
    return Catalog(_id_strings("i", 0, m, m), item_topics, cdf, vocabulary, texts)


def item_text_table(catalog: Catalog) -> pa.Table:
    """ITEM_TEXT rows (item, text), one description per item."""
    return pa.table({"item": catalog.item_ids, "text": catalog.item_texts})


def _sample_items(
    rng: np.random.Generator, catalog: Catalog, theta: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[u]`` distinct items for each user u -> (owner [nnz], item [nnz]) in draw order.

    Oversamples topic-then-item draws and keeps each user's first distinct ones; the rare user
    still short (very concentrated tastes) is topped up uniformly from the items it lacks.
    """
    m = catalog.item_ids.__len__()
    draws = 3 * counts + 10
    owner = np.repeat(np.arange(len(counts)), draws)
    topics = _draw_from_rows(rng, np.cumsum(theta, axis=1), owner)
    items = np.empty(len(owner), dtype=np.int64)
    u = rng.random(len(owner))
    for z in range(catalog.topic_item_cdf.shape[0]):
        sel = topics == z
        items[sel] = np.searchsorted(catalog.topic_item_cdf[z], u[sel], side="right")
    np.minimum(items, m - 1, out=items)
    _, first = np.unique(owner * m + items, return_index=True)
    first.sort()  # back to draw order (owners are contiguous, so still grouped by owner)
    owner, items = owner[first], items[first]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)
    keep = rank < counts[owner]
    owner, items = owner[keep], items[keep]
    have = np.bincount(owner, minlength=len(counts))
    for user in np.flatnonzero(have < counts):
        missing = np.setdiff1d(np.arange(m), items[owner == user])
        extra = rng.choice(missing, counts[user] - have[user], replace=False)
        owner = np.concatenate([owner, np.full(len(extra), user)])
        items = np.concatenate([items, extra])
    order = np.argsort(owner, kind="stable")
    return owner[order], items[order]


def generate_chunk(catalog: Catalog, cfg: Mapping[str, Any], chunk: int) -> dict[str, pa.Table]:
    """Users [chunk*C, (chunk+1)*C) of the source -> {stream: table} with the reader schemas:
    ``interactions`` (user, item, rating, timestamp), ``reviews`` (user, item, text),
    ``user_texts`` (user, text)."""
    n_users = cfg["num_users"]
    lo = chunk * SYNTHETIC_CHUNK_USERS
    hi = min(n_users, lo + SYNTHETIC_CHUNK_USERS)
    n, m = hi - lo, len(catalog.item_ids)
    k, w = catalog.item_topics.shape[1], cfg["words_per_topic"]
    rng = np.random.default_rng(np.random.SeedSequence([cfg["seed"], _USER_STREAM, chunk]))
    theta = rng.dirichlet(np.full(k, cfg["user_topic_concentration"]), n)
    extra_mean = cfg["mean_interactions"] - cfg["min_interactions"]
    counts = cfg["min_interactions"] + rng.geometric(1.0 / (extra_mean + 1.0), n) - 1
    counts = np.minimum(counts, m // 2)
    owner, items = _sample_items(rng, catalog, theta, counts)

    affinity = (theta[owner] * catalog.item_topics[items]).sum(axis=1)
    noise = rng.normal(0.0, 0.75, len(owner))
    rating = np.clip(np.rint(1.0 + 4.0 * np.sqrt(affinity) + noise), 1, 5)
    gaps = rng.exponential(86_400.0, len(owner)).cumsum()
    first = np.searchsorted(owner, np.arange(n))
    start = 1_500_000_000 + rng.integers(0, 100_000_000, n)
    timestamp = (start[owner] + gaps - np.concatenate([[0.0], gaps])[first][owner]).astype(np.int64)

    user_ids = _id_strings("u", lo, hi, n_users)
    reviewed = np.flatnonzero(rng.random(len(owner)) < cfg["review_fraction"])
    mix = 0.5 * theta[owner[reviewed]] + 0.5 * catalog.item_topics[items[reviewed]]
    lo_w, hi_w = cfg["text_min_words"], cfg["text_max_words"]
    reviews = compose_texts(rng, mix, catalog.vocabulary, w, lo_w, hi_w)
    described = np.flatnonzero(rng.random(n) < cfg["user_text_fraction"])
    descriptions = compose_texts(rng, theta[described], catalog.vocabulary, w, lo_w, hi_w)
    return {
        "interactions": pa.table(
            {
                "user": user_ids.take(pa.array(owner)),
                "item": catalog.item_ids.take(pa.array(items)),
                "rating": pa.array(rating, pa.float64()),
                "timestamp": pa.array(timestamp, pa.int64()),
            }
        ),
        "reviews": pa.table(
            {
                "user": user_ids.take(pa.array(owner[reviewed])),
                "item": catalog.item_ids.take(pa.array(items[reviewed])),
                "text": reviews,
            }
        ),
        "user_texts": pa.table({"user": user_ids.take(pa.array(described)), "text": descriptions}),
    }


def generate_block(catalog: Catalog, cfg: Mapping[str, Any], block: int) -> dict[str, pa.Table]:
    """All RNG chunks of block ``block`` (``users_per_block`` users), concatenated per stream."""
    per_block = cfg["users_per_block"] // SYNTHETIC_CHUNK_USERS
    last_chunk = math.ceil(cfg["num_users"] / SYNTHETIC_CHUNK_USERS)
    chunks = range(block * per_block, min((block + 1) * per_block, last_chunk))
    parts = [generate_chunk(catalog, cfg, c) for c in chunks]
    return {name: pa.concat_tables([p[name] for p in parts]) for name in parts[0]}
