"""The one-process server (``serve.backend=local``, the default): uvicorn runs a Starlette app in
this process and a micro-batcher hands the requests that arrived meanwhile (up to
``serve.max_batch_size``, after waiting ``serve.batch_wait_timeout_s`` for company) to one
``Recommender`` call in a worker thread, so a batch's users share one pass over the items.

Why not Ray Serve for one machine: every request crosses Ray Serve's HTTP proxy, a Ray actor call
and the replica's event loop, and on the 2-core machine that hop, not the model, set the rate:
59–76 requests/s at 100k items, where the top-K kernel alone allows several hundred
(docs/benchmarks.md, "Online serving", has both servers' figures). Ray Serve stays for
replicas and clusters (``serve.backend=ray``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from functools import partial

from cllm4rec_dist.api import Recommender
from cllm4rec_dist.serve.config import ServeOptions
from cllm4rec_dist.serve.handler import answer_batch, handle
from cllm4rec_dist.serve.requests import Query, Result


class MicroBatcher:
    """``await batcher(query)`` -> its results; queries are answered in batches by ``run``
    (one at a time, in a thread: the event loop keeps reading requests meanwhile)."""

    def __init__(
        self, run: Callable[[list[Query]], list[list[Result]]], max_batch: int, wait_s: float
    ):
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __call__(self, query: Query) -> list[Result]:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((query, future))
        return await future

    def _drain(self, batch: list) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._drain(batch)
            if len(batch) < self.max_batch and self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
                self._drain(batch)
            try:
                results = await asyncio.to_thread(self.run, [q for q, _ in batch])
            except Exception as err:  # each waiting request answers 500 (handler.handle)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(result)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises the signal it caught once it has shut down, so the process dies of
        it; a stop asked for by SIGTERM or Ctrl-C here ends in exit 0, as on the Ray backend."""

        @contextlib.contextmanager
        def capture_signals(self):
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve_local(export: str, opts: ServeOptions) -> None:
    """Serve ``export`` on ``opts.host``:``opts.port`` until SIGTERM or SIGINT (uvicorn's own
    handlers: it finishes the requests in flight, then returns)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    rec = Recommender.from_pretrained(export, prefilter=opts.prefilter)
    batcher = MicroBatcher(
        partial(answer_batch, rec), opts.max_batch_size, opts.batch_wait_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    async def endpoint(request):
        return await handle(request, rec, opts, batcher)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)], lifespan=lifespan)
    config = uvicorn.Config(
        app, host=opts.host, port=opts.port, log_level="warning", access_log=False
    )
    _server_class()(config).run()


__all__ = ["MicroBatcher", "serve_local"]
