"""The Ray Serve deployment (``serve.backend=ray``): one ``Recommender`` per replica behind
``handler.handle``. Concurrent requests are batched by ``@serve.batch``: a batch's users share
one pass of the top-K kernel over the items."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from cllm4rec_dist.api import Recommender
from cllm4rec_dist.serve.config import ServeOptions
from cllm4rec_dist.serve.handler import answer_batch, handle
from cllm4rec_dist.serve.requests import Query, Result


@serve.deployment
class RecommenderServer:
    """``GET /healthz``, ``POST /recommend``, ``POST /similar`` (requests.py)."""

    def __init__(self, export: str, options: dict[str, Any]):
        self.opts = ServeOptions(**options)
        self.rec = Recommender.from_pretrained(export, prefilter=self.opts.prefilter)
        self.answer.set_max_batch_size(self.opts.max_batch_size)
        self.answer.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def answer(self, queries: list[Query]) -> list[list[Result]]:
        # In a thread: the event loop keeps accepting requests (the next batch) meanwhile.
        return await asyncio.to_thread(answer_batch, self.rec, queries)

    async def __call__(self, request: Request) -> JSONResponse:
        return await handle(request, self.rec, self.opts, self.answer)


__all__ = ["RecommenderServer"]
