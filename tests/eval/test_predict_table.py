"""predict's per-batch result table: raw ids, padding dropped, the file schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from cllm4rec_dist.eval.predict import SCHEMA, _result_table


def test_result_table_maps_raw_ids_and_drops_padding():
    user_ids = pa.array(["u0", "u1", "u2"])
    item_ids = pa.array(["a", "b", "c", "d"])
    items = torch.tensor([[3, 1, -1], [-1, -1, -1]])
    scores = torch.tensor([[2.0, 1.0, float("-inf")], [float("-inf")] * 3])
    table = _result_table(np.array([2, 0]), items, scores, user_ids, item_ids)
    assert table.schema == SCHEMA
    assert table.to_pylist() == [
        {"user": "u2", "items": ["d", "b"], "scores": [2.0, 1.0]},
        {"user": "u0", "items": [], "scores": []},
    ]
