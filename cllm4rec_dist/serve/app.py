"""The Ray Serve deployment: one ``Recommender`` per replica behind the HTTP contract of
``requests.py``. Concurrent requests are batched (``@serve.batch``): a batch's users share one
pass of the top-K kernel over the items, which at a million items costs about as much for 32
users as for one. A bad request is answered with its status and never reaches the model; an
unexpected error answers 500 and leaves the replica serving."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from cllm4rec_dist.api import Recommender
from cllm4rec_dist.serve.config import ServeOptions
from cllm4rec_dist.serve.requests import ROUTES, HttpError, Query, Result, parse, response

log = logging.getLogger(__name__)


def answer_batch(rec: Recommender, queries: list[Query]) -> list[list[Result]]:
    """Each query's results, computed per (kind, exclude_seen) group at the group's largest k
    (an exact top-k list cut to k' is the exact top-k')."""
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        groups[(q.kind, q.exclude_seen)].append(i)
    out: list[list[Result]] = [[] for _ in queries]
    for (kind, exclude_seen), members in groups.items():
        ids = [x for i in members for x in queries[i].ids]
        k = max(queries[i].k for i in members)
        if kind == "items":
            results = rec.similar_items(ids, k)
        elif kind == "users":
            results = rec.recommend(users=ids, k=k, exclude_seen=exclude_seen)
        else:
            results = rec.recommend(
                histories=[list(h) for h in ids], k=k, exclude_seen=exclude_seen
            )
        at = 0
        for i in members:
            n, kq = len(queries[i].ids), queries[i].k
            out[i] = [(items[:kq], scores[:kq]) for items, scores in results[at : at + n]]
            at += n
    return out


def check_known(rec: Recommender, query: Query) -> None:
    """HttpError 404 naming the first raw id the export does not hold."""
    if query.kind == "users":
        unknown = next((u for u in query.ids if not rec.has_user(u)), None)
    else:
        flat = query.ids if query.kind == "items" else [i for h in query.ids for i in h]
        unknown = next((i for i in flat if not rec.has_item(i)), None)
    if unknown is not None:
        what = "user" if query.kind == "users" else "item"
        raise HttpError(404, f"unknown {what} id {unknown!r}")


async def _body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` + 1 bytes (413 above the limit)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment
class RecommenderServer:
    """``GET /healthz``, ``POST /recommend``, ``POST /similar`` (requests.py)."""

    def __init__(self, export: str, options: dict[str, Any]):
        self.opts = ServeOptions(**options)
        self.rec = Recommender.from_pretrained(export)
        self.answer.set_max_batch_size(self.opts.max_batch_size)
        self.answer.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def answer(self, queries: list[Query]) -> list[list[Result]]:
        # In a thread: the event loop keeps accepting requests (the next batch) meanwhile.
        return await asyncio.to_thread(answer_batch, self.rec, queries)

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/") or "/"
        try:
            if path == "/healthz" and request.method == "GET":
                rec = self.rec
                return JSONResponse(
                    {"status": "ok", "users": rec.num_users, "items": rec.num_items}
                )
            if path in ROUTES and request.method != "POST":
                raise HttpError(405, f"{path} takes POST")
            query = parse(path, await _body(request, self.opts.max_body_bytes), self.opts)
            check_known(self.rec, query)
            return JSONResponse(response(query, await self.answer(query)))
        except HttpError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        except Exception as err:  # the replica answers and keeps serving
            log.exception("request to %s failed", path)
            return JSONResponse({"error": f"internal error: {type(err).__name__}"}, status_code=500)


__all__ = ["RecommenderServer", "answer_batch", "check_known"]
