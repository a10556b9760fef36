"""Dynamic batching: concurrent requests to one model run as one batch.

A request is an array whose first axis counts items. Requests queue up; a batch
closes when it holds ``max_batch_size`` items or when the oldest request has waited
``max_delay`` seconds, is run as one array, and the outputs are split back. Up to
``max_concurrent_batches`` batches run at once, so the next batch fills while one runs.
When nothing is running, a batch starts at once with what is queued: a lone caller is not
made to wait for company, while under load requests pile up behind the running batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from nanolens_runtime import metrics

BatchFn = Callable[[np.ndarray], Awaitable[list[np.ndarray]]]


@dataclass
class _Pending:
    items: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, run_batch: BatchFn, max_batch_size: int, max_delay: float, model: str,
                 max_concurrent_batches: int = 2):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.labels = (metrics.service_name(), model)
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    async def submit(self, items: np.ndarray) -> list[np.ndarray]:
        """Outputs for ``items`` (each output's first axis matches ``len(items)``)."""
        if self.max_batch_size == 1 or len(items) >= self.max_batch_size:
            # Large requests are a batch on their own; queueing them only adds latency.
            metrics.batch_size.labels(*self.labels).observe(len(items))
            metrics.batch_queue_wait.labels(*self.labels).observe(0.0)
            async with self._slots:
                return await self.run_batch(items)
        pending = _Pending(items, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        metrics.batch_queue_depth.labels(*self.labels).set(len(self._queue))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._collect())
        self._wake.set()
        return await pending.future

    async def _collect(self) -> None:
        while self._queue:
            await self._slots.acquire()
            closes_at = self._queue[0].enqueued + self.max_delay
            while self._running and self._rows_queued() < self.max_batch_size:
                remaining = closes_at - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _rows_queued(self) -> int:
        return sum(len(p.items) for p in self._queue if not p.future.done())

    def _take(self) -> list[_Pending]:
        batch, rows = [], 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the caller gave up (deadline, cancel)
                self._queue.popleft()
                continue
            if batch and rows + len(pending.items) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += len(pending.items)
        metrics.batch_queue_depth.labels(*self.labels).set(len(self._queue))
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            start = time.perf_counter()
            for pending in batch:
                metrics.batch_queue_wait.labels(*self.labels).observe(start - pending.enqueued)
            items = np.concatenate([p.items for p in batch], axis=0)
            metrics.batch_size.labels(*self.labels).observe(len(items))
            try:
                outputs = await self.run_batch(items)
            except Exception as exc:  # every caller of the batch sees the failure
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            offset = 0
            for pending in batch:
                n = len(pending.items)
                if not pending.future.done():
                    pending.future.set_result([out[offset:offset + n] for out in outputs])
                offset += n
        finally:
            self._slots.release()
