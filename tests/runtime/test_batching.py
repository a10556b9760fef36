"""Dynamic batching: concurrent requests share runs, results go back to the right caller."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from nanolens_runtime.batching import DynamicBatcher


def recording_batch_fn(calls: list[int], delay: float = 0.0):
    async def run(items: np.ndarray) -> list[np.ndarray]:
        calls.append(len(items))
        await asyncio.sleep(delay)
        return [items * 2, items.sum(axis=1, keepdims=True)]

    return run


async def test_concurrent_requests_are_batched_and_split_back():
    calls: list[int] = []
    batcher = DynamicBatcher(recording_batch_fn(calls, 0.01), max_batch_size=64, max_delay=0.05, model="m")
    inputs = [np.full((1, 3), i, dtype=np.float32) for i in range(40)]
    outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    for x, (doubled, summed) in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(summed, x.sum(axis=1, keepdims=True))
    assert sum(calls) == 40
    assert max(calls) > 1, f"no batching happened: {calls}"
    assert len(calls) < 40


async def test_batches_never_exceed_the_maximum():
    calls: list[int] = []
    batcher = DynamicBatcher(recording_batch_fn(calls), max_batch_size=8, max_delay=0.05, model="m")
    await asyncio.gather(*(batcher.submit(np.ones((3, 2))) for _ in range(10)))
    assert max(calls) <= 8 and sum(calls) == 30


async def test_batch_size_one_disables_batching():
    calls: list[int] = []
    batcher = DynamicBatcher(recording_batch_fn(calls), max_batch_size=1, max_delay=0.05, model="m")
    await asyncio.gather(*(batcher.submit(np.ones((1, 2))) for _ in range(5)))
    assert calls == [1] * 5


async def test_a_failing_batch_fails_each_of_its_callers():
    async def broken(items):
        raise ValueError("bad batch")

    batcher = DynamicBatcher(broken, max_batch_size=16, max_delay=0.02, model="m")
    results = await asyncio.gather(*(batcher.submit(np.ones((1, 2))) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)


async def test_cancelled_requests_are_dropped_from_the_batch():
    calls: list[int] = []
    batcher = DynamicBatcher(recording_batch_fn(calls, delay=0.05), max_batch_size=16, max_delay=0.1, model="m",
                             max_concurrent_batches=1)
    first = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))  # runs at once, for 50 ms
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(batcher.submit(np.ones((5, 2))))  # these two queue behind it
    kept = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))
    await asyncio.sleep(0.01)
    gone.cancel()
    (doubled, _) = await kept
    await first
    assert doubled.shape == (1, 2)
    assert calls == [1, 1]
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_an_idle_batcher_does_not_wait_for_company():
    calls: list[int] = []
    batcher = DynamicBatcher(recording_batch_fn(calls), max_batch_size=64, max_delay=10.0, model="m")
    task = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))
    await asyncio.sleep(0.05)
    assert calls == [1], "a lone request waited for the batch delay"
    await task
