"""The server's HTTP contract without Ray (serve/requests.py, serve/app.answer_batch): what each
bad body gets, and a batch of mixed requests answers each as alone."""

from __future__ import annotations

import json

import pytest

from cllm4rec_dist.serve.config import ServeOptions
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
