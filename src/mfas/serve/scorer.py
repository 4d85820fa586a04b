"""The model behind a bounded queue: one thread runs the backend, optionally on micro-batches of requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mfas.inference.predictor import Predictor
from mfas.serve.metrics import Metrics


class Scorer:
    """Scores prepared captures (:meth:`Predictor.prepare`) in one model thread.

    Requests are queued; the loop takes the first, and with ``max_batch > 1`` waits up to ``max_wait_ms`` for more,
    then scores them as one batch (a capture's score does not depend on its batch, so batching changes only the
    throughput). Requests whose caller gave up (timeout, disconnect) are dropped before scoring."""

    def __init__(self, predictor: Predictor, metrics: Metrics, max_batch: int = 1, max_wait_ms: float = 2.0):
        self.predictor, self.metrics = predictor, metrics
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mfas-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=True)

    async def score(self, items: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """(len(items),) P(bona fide)."""
        assert self._queue is not None, "Scorer.start() was not awaited"
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((list(items), fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        q = self._queue
        while True:
            batch = [await q.get()]
            n = len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                left = deadline - loop.time()
                if left <= 0 and q.empty():
                    break
                try:
                    nxt = q.get_nowait() if not q.empty() else await asyncio.wait_for(q.get(), left)
                except TimeoutError:
                    break
                batch.append(nxt)
                n += len(nxt[0])
            batch = [(items, fut) for items, fut in batch if not fut.done()]
            if not batch:
                continue
            flat = [x for items, _ in batch for x in items]
            try:
                scores = await loop.run_in_executor(self._pool, self.predictor.score_inputs, flat)
            except Exception as e:  # the callers answer 500; the loop goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.metrics.batch(len(batch))
            at = 0
            for items, fut in batch:
                if not fut.done():
                    fut.set_result(scores[at:at + len(items)])
                at += len(items)
