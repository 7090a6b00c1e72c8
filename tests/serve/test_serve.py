"""launchers/serve.py on each backend (one process with uvicorn; Ray Serve), answering a real
HTTP client on 127.0.0.1: recommendations equal the in-process Recommender's, bad requests get
their JSON status and leave the server serving, concurrent requests are batched and answered,
and SIGTERM stops everything."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.bench_serve import synthetic_export
from cllm4rec_dist import Recommender
from cllm4rec_dist.distributed.spawn import free_port

REPO = Path(__file__).resolve().parents[2]


def _ask(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    conn.request(method, path, data, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    status, payload = reply.status, reply.read()
    conn.close()
    # Until the application is deployed, Serve's proxy answers 404 in plain text.
    return status, json.loads(payload) if reply.getheader(
        "content-type"
    ) == "application/json" else payload


@pytest.fixture(scope="module", params=["local", "ray"])
def server(tmp_path_factory, request):
    export = synthetic_export(tmp_path_factory.mktemp("serve") / "model", 50, 300, 16, 5)
    port = free_port()
    cmd = [
        sys.executable, str(REPO / "launchers" / "serve.py"), f"init_from={export}",
        f"serve.port={port}", "serve.max_body_bytes=4000", f"serve.backend={request.param}",
    ]  # fmt: skip
    if request.param == "ray":
        cmd.append("ray.num_cpus=1")
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 400  # minutes when the machine is busy; ~30 s idle
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            if _ask(port, "GET", "/healthz")[0] == 200:
                break
        except OSError:
            assert time.time() < deadline, "no /healthz within 400 s"
            time.sleep(1)
    yield export, port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_answers_as_the_api_does(server):
    export, port, _ = server
    rec = Recommender.from_pretrained(export)
    status, body = _ask(port, "POST", "/recommend", {"users": ["u1", "u7"], "k": 5})
    assert status == 200
    for entry, (items, scores) in zip(body["results"], rec.recommend(users=["u1", "u7"], k=5)):
        assert entry["items"] == items and entry["scores"] == pytest.approx(scores, rel=1e-5)
    assert [e["user"] for e in body["results"]] == ["u1", "u7"]
    history = ["i3", "i4", "i5"]
    status, body = _ask(port, "POST", "/recommend", {"histories": [history], "k": 4})
    assert (
        status == 200
        and body["results"][0]["items"] == rec.recommend(histories=[history], k=4)[0][0]
    )
    status, body = _ask(port, "POST", "/similar", {"items": ["i3"], "k": 3})
    assert status == 200 and body["results"][0]["items"] == rec.similar_items(["i3"], k=3)[0][0]
    # Concurrent requests of different k share batches and each gets its own answer.
    asks = [{"users": [f"u{i}"], "k": 1 + i % 6} for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda a: _ask(port, "POST", "/recommend", a), asks))
    for ask, (status, body) in zip(asks, replies):
        want = rec.recommend(users=ask["users"], k=ask["k"])[0][0]
        assert status == 200 and body["results"][0]["items"] == want


def test_bad_requests_get_json_errors_and_the_replica_stays(server):
    _, port, _ = server
    cases = [
        ({"users": ["nobody"]}, 404),
        ({"histories": [["i1", "no-such-item"]]}, 404),
        ({"users": ["u1"], "k": 0}, 422),
        (b"{not json", 422),
        ({"users": ["u1"], "histories": [["i1"]]}, 422),
        ({"users": ["u1"] * 2000}, 413),
    ]
    for body, status in cases:
        got, payload = _ask(port, "POST", "/recommend", body)
        assert (got, set(payload)) == (status, {"error"}), (body, payload)
    assert _ask(port, "GET", "/recommend")[0] == 405
    assert _ask(port, "GET", "/healthz") == (200, {"status": "ok", "users": 50, "items": 300})


def test_sigterm_stops_everything(server):
    _, port, proc = server
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped" in out, out[-3000:]
    with pytest.raises(OSError):
        _ask(port, "GET", "/healthz")
