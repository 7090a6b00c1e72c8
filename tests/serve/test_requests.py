"""The server's HTTP contract without a server (serve/requests.py, serve/handler.answer_batch):
what each bad body gets, a batch of mixed requests answers each as alone, and the one-process
backend's micro-batcher batches what arrives together and fails only the batch that failed."""

from __future__ import annotations

import asyncio
import json

import pytest
from omegaconf import OmegaConf

from cllm4rec_dist.cli.errors import UserError
from cllm4rec_dist.export import ExportError
from cllm4rec_dist.serve.config import ServeConfig, ServeOptions
from cllm4rec_dist.serve.entry import check
from cllm4rec_dist.serve.local import MicroBatcher
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
    cfg.serve.max_ongoing_requests = None
    cfg.serve.replicas = 2  # replicas need Ray
    with pytest.raises(UserError, match="serve.backend=ray"):
        check(cfg)


def test_micro_batcher_batches_concurrent_queries_and_isolates_a_failure():
    calls = []

    def run(queries):
        calls.append(len(queries))
        if any(q.ids == ("boom",) for q in queries):
            raise RuntimeError("boom")
        return [[([q.ids[0]], [float(q.k)])] for q in queries]

    async def main():
        batcher = MicroBatcher(run, max_batch=4, wait_s=0.01)
        await batcher.start()
        try:
            queries = [Query("users", (f"u{i}",), i + 1) for i in range(6)]
            got = await asyncio.gather(*(batcher(q) for q in queries))
            assert got == [[([f"u{i}"], [float(i + 1)])] for i in range(6)]
            assert calls == [4, 2]  # six at once: a full batch, then the rest
            with pytest.raises(RuntimeError, match="boom"):
                await batcher(Query("users", ("boom",), 1))
            assert await batcher(Query("users", ("u9",), 3)) == [(["u9"], [3.0])]  # still serving
        finally:
            await batcher.stop()

    asyncio.run(main())
