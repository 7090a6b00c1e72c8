"""One request, whichever server runs it: read the body (bounded), parse it (``requests.py``),
check its ids, have it answered by a batcher, and reply JSON. A bad request is answered with its
status and never reaches the model; an unexpected error answers 500 and leaves the server
serving. ``answer_batch`` is the model's side of a batch: the same ``Recommender`` calls (and so
the same masked top-K kernel) as the Python API."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from cllm4rec_dist.api import Recommender
from cllm4rec_dist.serve.config import ServeOptions
from cllm4rec_dist.serve.requests import ROUTES, HttpError, Query, Result, parse, response

log = logging.getLogger(__name__)

# answer(query) -> its results, once the batch holding it has run
Answer = Callable[[Query], Awaitable[list[Result]]]


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


async def read_body(request: Request, limit: int) -> bytes:
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


async def handle(request: Request, rec: Recommender, opts: ServeOptions, answer: Answer):
    """``GET /healthz``, ``POST /recommend``, ``POST /similar`` (requests.py) -> JSONResponse."""
    path = request.url.path.rstrip("/") or "/"
    try:
        if path == "/healthz" and request.method == "GET":
            return JSONResponse({"status": "ok", "users": rec.num_users, "items": rec.num_items})
        if path in ROUTES and request.method != "POST":
            raise HttpError(405, f"{path} takes POST")
        query = parse(path, await read_body(request, opts.max_body_bytes), opts)
        check_known(rec, query)
        return JSONResponse(response(query, await answer(query)))
    except HttpError as err:
        return JSONResponse({"error": err.message}, status_code=err.status)
    except Exception as err:  # the server answers and keeps serving
        log.exception("request to %s failed", path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}"}, status_code=500)


__all__ = ["Answer", "answer_batch", "check_known", "handle", "read_body"]
