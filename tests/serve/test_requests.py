"""The server's HTTP contract without Ray (serve/requests.py, serve/app.answer_batch): what each
bad body gets, and a batch of mixed requests answers each as alone."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from cllm4rec_dist.cli.errors import UserError
from cllm4rec_dist.export import ExportError
from cllm4rec_dist.serve.config import ServeConfig, ServeOptions
from cllm4rec_dist.serve.entry import check
from cllm4rec_dist.serve.requests import HttpError, Query, parse, response

OPTS = ServeOptions(max_body_bytes=200, max_queries=3, max_k=50)


def _status(path: str, body: bytes) -> int:
    with pytest.raises(HttpError) as err:
        parse(path, body, OPTS)
    assert "\n" not in err.value.message
    return err.value.status


def test_good_requests_parse():
    q = parse("/recommend", b'{"users": ["a", 7], "k": 5}', OPTS)
    assert q == Query("users", ("a", "7"), 5, True)
    q = parse("/recommend", b'{"histories": [["x", "y"]], "exclude_seen": false}', OPTS)
    assert q == Query("histories", (("x", "y"),), 20, False)
    assert parse("/similar", b'{"items": ["x"], "k": 2}', OPTS).kind == "items"


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/recommend", b"not json", 422),
        ("/recommend", b"[1, 2]", 422),
        ("/recommend", b'{"users": ["a"], "histories": [["x"]]}', 422),
        ("/recommend", b'{"users": []}', 422),
        ("/recommend", b'{"users": "a"}', 422),
        ("/recommend", b'{"users": ["a"], "k": 0}', 422),
        ("/recommend", b'{"users": ["a"], "k": 51}', 422),
        ("/recommend", b'{"users": ["a"], "k": "5"}', 422),
        ("/recommend", b'{"users": ["a"], "k": true}', 422),
        ("/recommend", b'{"users": ["a", "b", "c", "d"]}', 422),
        ("/recommend", b'{"users": [null]}', 422),
        ("/recommend", b'{"users": ["a"], "extra": 1}', 422),
        ("/recommend", b'{"histories": [[]]}', 422),
        ("/similar", b'{"users": ["a"]}', 422),
        ("/recommend", json.dumps({"users": ["a" * 300]}).encode(), 413),
        ("/nowhere", b"{}", 404),
    ],
)
def test_bad_requests_get_their_status(path, body, status):
    assert _status(path, body) == status


def test_response_names_each_query():
    results = [(["i1"], [0.5]), (["i2"], [0.25])]
    assert response(Query("users", ("a", "b"), 1), results)["results"][1] == {
        "user": "b",
        "items": ["i2"],
        "scores": [0.25],
    }
    assert response(Query("histories", (("x",), ("y",)), 1), results)["results"][0]["history"] == 0


def test_the_command_checks_its_config_before_ray_starts(tmp_path):
    cfg = OmegaConf.structured(ServeConfig)
    with pytest.raises(UserError, match="`init_from`"):
        check(cfg)
    cfg.init_from = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="not an export directory"):
        check(cfg)
    (tmp_path / "meta.json").write_text(json.dumps({"num_users": 1, "num_items": 1}))
    cfg.init_from = str(tmp_path)
    with pytest.raises(ExportError, match="format_version 1 has no serving files"):
        check(cfg)
    cfg.serve.replicas = 0
    with pytest.raises(UserError, match="serve.replicas"):
        check(cfg)
    cfg.serve.replicas = 1
    cfg.serve.max_ongoing_requests = 0
    with pytest.raises(UserError, match="serve.max_ongoing_requests"):
        check(cfg)
