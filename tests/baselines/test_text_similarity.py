"""The TF-IDF text-similarity baseline against a direct computation."""

import numpy as np

from cllm4rec_dist.baselines.text_similarity import text_similarity_scores, tfidf_matrix


def test_tfidf_rows_and_scores_match_the_formula():
    texts = ["red apple", "green apple apple", "blue sky", None]
    x = tfidf_matrix(texts).toarray()
    # vocabulary in first-seen order: red, apple, green, blue, sky; n = 4 texts
    idf = np.log(5 / (1 + np.array([1, 2, 1, 1, 1]))) + 1
    counts = np.array([[1, 1, 0, 0, 0], [0, 2, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    want = counts * idf
    want /= np.maximum(np.linalg.norm(want, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(x, want)
    scores = text_similarity_scores(tfidf_matrix(texts), [np.array([0]), np.array([0, 2])])
    profile = want[[0]].sum(0), want[[0, 2]].sum(0)
    for row, p in zip(scores, profile):
        np.testing.assert_allclose(row, want @ (p / np.linalg.norm(p)))
    assert scores[0, 1] > scores[0, 2] == 0.0  # shares "apple", shares nothing
