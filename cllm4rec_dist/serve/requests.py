"""The HTTP contract of the server, in plain Python (no Ray): a request body becomes a
``Query`` or an ``HttpError`` with its status, and results become the response's JSON.

- ``POST /recommend`` ``{"users": [raw ids], "k": 20, "exclude_seen": true}`` or
  ``{"histories": [[raw item ids], ...], "k": 20}`` -> ``{"results": [{"user": id | "history":
  i, "items": [...], "scores": [...]}]}``;
- ``POST /similar`` ``{"items": [raw ids], "k": 20}`` -> ``{"results": [{"item": id, ...}]}``;
- errors: ``{"error": "<one line>"}`` with 404 (unknown id), 405 (method), 413 (body over
  ``max_body_bytes``), 422 (not JSON, a bad field or ``k``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cllm4rec_dist.serve.config import ServeOptions

Result = tuple[list[str], list[float]]


class HttpError(Exception):
    """An answer other than 200: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Query:
    """One request: ``kind`` users | histories | items, the raw ids, ``k``, and whether seen
    items are masked (recommendations only)."""

    kind: str
    ids: tuple  # raw ids (str), or tuples of raw item ids for histories
    k: int
    exclude_seen: bool = True


ROUTES = {"/recommend": ("users", "histories"), "/similar": ("items",)}


def _raw_ids(value: Any, field: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise HttpError(422, f"`{field}` must be a non-empty list")
    if len(value) > limit:
        raise HttpError(422, f"`{field}` has {len(value)} entries; at most {limit} per request")
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise HttpError(422, f"`{field}` must hold raw ids (strings or integers)")
    return tuple(str(v) for v in value)


def parse(path: str, body: bytes, opts: ServeOptions) -> Query:
    """The Query of a POST to ``path`` with ``body`` (HttpError 404/413/422 otherwise)."""
    if path not in ROUTES:
        raise HttpError(404, f"no route {path}; POST /recommend or /similar, GET /healthz")
    if len(body) > opts.max_body_bytes:
        raise HttpError(413, f"request body of {len(body)} bytes; at most {opts.max_body_bytes}")
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HttpError(422, f"body is not JSON ({err})") from None
    if not isinstance(request, dict):
        raise HttpError(422, "body must be a JSON object")
    kinds = [kind for kind in ROUTES[path] if kind in request]
    allowed = {*ROUTES[path], "k", "exclude_seen"} if path == "/recommend" else {"items", "k"}
    unknown = sorted(set(request) - allowed)
    if unknown or len(kinds) != 1:
        fields = " or ".join(f"`{k}`" for k in ROUTES[path])
        raise HttpError(
            422, f"give exactly one of {fields}" + (f"; unknown {unknown}" if unknown else "")
        )
    kind = kinds[0]
    k = request.get("k", 20)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= opts.max_k:
        raise HttpError(422, f"`k` must be an integer in [1, {opts.max_k}], got {k!r}")
    exclude_seen = request.get("exclude_seen", True)
    if not isinstance(exclude_seen, bool):
        raise HttpError(422, "`exclude_seen` must be true or false")
    if kind == "histories":
        lists = request[kind]
        if not isinstance(lists, list) or not lists or len(lists) > opts.max_queries:
            raise HttpError(422, f"`histories` must be a list of 1 to {opts.max_queries} lists")
        ids = tuple(_raw_ids(h, "histories[]", opts.max_queries) for h in lists)
    else:
        ids = _raw_ids(request[kind], kind, opts.max_queries)
    return Query(kind, ids, k, exclude_seen)


def response(query: Query, results: list[Result]) -> dict[str, Any]:
    """The JSON answer of ``query``: one entry per user, history or item, in request order."""
    key = {"users": "user", "items": "item"}.get(query.kind)
    out = []
    for i, (items, scores) in enumerate(results):
        who = {key: query.ids[i]} if key else {"history": i}
        out.append({**who, "items": items, "scores": scores})
    return {"results": out}


__all__ = ["ROUTES", "HttpError", "Query", "parse", "response"]
