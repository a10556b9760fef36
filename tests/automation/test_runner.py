"""The job runner's policy against a real job store, in one process: items claimed only into free
per-service slots (a crash strands nothing that was merely waiting), an outage pauses items without
spending their attempts, an input's own failures spend them, a
refusal fails at once, a stopping runner hands its items back. The analysis is a stand-in whose
outcome each test sets; the gateway's own analysis is exercised through real processes in
test_outages.py."""

from __future__ import annotations

import asyncio

import pytest

from nanolens_gateway.jobs.store import open_store
from nanolens_gateway.jobs.worker import JobRunner
from nanolens_runtime.errors import InvalidArgument, Unavailable

DOMAINS = {1: "spectra", 2: "tem", 3: "lpem", 4: "sem"}


class Analysis:
    """Each call waits for ``release`` and then raises ``error`` (or answers)."""

    def __init__(self):
        self.release = asyncio.Event()
        self.error: Exception | None = None
        self.calls: list[str] = []

    async def __call__(self, request, deadline_s=None):
        self.calls.append(request.input.key)
        await self.release.wait()
        if self.error is not None:
            raise self.error

        class Response:
            class result:
                bucket, key = "results", f"r/{request.input.key}"
            cached = False
        return Response()


async def until(condition, limit: float = 20.0) -> None:
    """Poll ``condition`` (a database read) until it holds; ``limit`` s is a failure."""
    async with asyncio.timeout(limit):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def counts(store, job: str) -> dict[str, int]:
    return store.get(job).counts


@pytest.fixture
def store(store_location):
    return open_store(store_location)


async def test_only_items_with_a_free_slot_are_claimed_and_a_stop_hands_them_back(store):
    job = store.create(1, {}, [("raw", f"a/{i}.txt", "") for i in range(8)])
    analysis = Analysis()
    runner = JobRunner(store, analysis, DOMAINS, per_service=2, poll_seconds=0.05)
    task = asyncio.get_running_loop().create_task(runner.run())
    await until(lambda: len(analysis.calls) == 2)
    await asyncio.sleep(0.3)  # several polls: nothing more is claimed while both slots are busy
    assert counts(store, job)["running"] == 2 and counts(store, job)["pending"] == 6
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = store.get(job, items=True)
    assert record.counts["pending"] == 8 and all(i.attempts == 0 for i in record.items)


async def test_an_outage_pauses_without_spending_attempts(store):
    job = store.create(1, {}, [("raw", "a/0.txt", "")])
    analysis = Analysis()
    analysis.error = Unavailable("spectra service unavailable: connection refused")
    analysis.release.set()
    up = asyncio.Event()

    async def healthy(domain: str) -> bool:
        assert domain == "spectra"
        return up.is_set()

    runner = JobRunner(store, analysis, DOMAINS, per_service=1, poll_seconds=0.05, max_attempts=2,
                       backoff_max_seconds=3600, healthy=healthy)
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        await until(lambda: len(analysis.calls) >= 1 and counts(store, job)["pending"] == 1)
        (item,) = store.get(job, items=True).items
        assert item.attempts == 0 and item.outage_since > 0 and item.error.startswith("UNAVAILABLE")
        analysis.error = None
        up.set()  # the service is back
        await until(lambda: counts(store, job)["done"] == 1)
        (item,) = store.get(job, items=True).items
        assert item.attempts == 1
    finally:
        task.cancel()


async def test_an_outage_longer_than_its_limit_fails_the_item_saying_so(store):
    job = store.create(1, {}, [("raw", "a/0.txt", "")])
    analysis = Analysis()
    analysis.error = Unavailable("spectra service unavailable")
    analysis.release.set()
    runner = JobRunner(store, analysis, DOMAINS, poll_seconds=0.05, outage_seconds=0.5, backoff_max_seconds=0.2)
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        await until(lambda: counts(store, job)["failed"] == 1)
    finally:
        task.cancel()
    (item,) = store.get(job, items=True).items
    assert "NANOLENS_JOB_OUTAGE_SECONDS" in item.error and len(analysis.calls) >= 2


async def test_an_inputs_own_failures_spend_attempts_and_a_refusal_fails_at_once(store):
    flaky = store.create(1, {}, [("raw", "flaky.txt", "")])
    analysis = Analysis()
    analysis.error = RuntimeError("the decoder tripped")
    analysis.release.set()
    runner = JobRunner(store, analysis, DOMAINS, poll_seconds=0.05, max_attempts=2, backoff_max_seconds=0.1)
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        await until(lambda: counts(store, flaky)["failed"] == 1)
        (item,) = store.get(flaky, items=True).items
        assert item.attempts == 2 and item.error.startswith("INTERNAL: RuntimeError")
        analysis.error = InvalidArgument("not a spectrum", field="input")
        refused = store.create(1, {}, [("raw", "refused.txt", "")])
        await until(lambda: counts(store, refused)["failed"] == 1)
        (item,) = store.get(refused, items=True).items
        assert item.attempts == 1 and item.error.startswith("INVALID_ARGUMENT")
    finally:
        task.cancel()


async def test_an_item_whose_task_ended_without_an_outcome_is_not_held_forever(store):
    job = store.create(1, {}, [("raw", "a/0.txt", "")])

    async def broken(request, deadline_s=None):  # an answer the runner cannot record: a bug past every except
        return object()

    runner = JobRunner(store, broken, DOMAINS, poll_seconds=0.05, lease_seconds=0.6)
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        await until(lambda: store.get(job, items=True).items[0].attempts == 1 and not runner.running)
        # the heartbeat renews only what still runs: the lease runs out and the item is taken over
        # (as a suspect: a crash counted), where before it was held for as long as the gateway lived
        await until(lambda: store.get(job, items=True).items[0].crashes >= 1)
    finally:
        task.cancel()


@pytest.mark.parametrize("service_answers", [True, False])
async def test_an_item_past_its_deadline_spends_attempts_or_waits_out_a_frozen_service(store, service_answers):
    """The analysis never answers (a service that took the call and froze): past ``item_seconds`` the
    item is stopped. Its service still answering health checks: the item's own failure, failed after
    its attempts saying so; not answering either: an outage, paused without spending attempts."""
    job = store.create(1, {}, [("raw", "frozen.txt", "")])
    analysis = Analysis()  # never released
    checks: list[str] = []

    async def healthy(domain: str) -> bool:
        checks.append(domain)
        return service_answers

    runner = JobRunner(store, analysis, DOMAINS, poll_seconds=0.05, max_attempts=2, backoff_max_seconds=0.1,
                       item_seconds=0.2, healthy=healthy)
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        if service_answers:
            await until(lambda: counts(store, job)["failed"] == 1)
            (item,) = store.get(job, items=True).items
            assert item.attempts == 2 and len(analysis.calls) == 2
            assert item.error.startswith("DEADLINE_EXCEEDED") and "NANOLENS_JOB_ITEM_SECONDS=0.2" in item.error
        else:
            await until(lambda: store.get(job, items=True).items[0].outage_since > 0)
            (item,) = store.get(job, items=True).items
            assert item.state == "pending" and item.attempts == 0 and item.error.startswith("UNAVAILABLE")
            assert "stopped answering" in item.error
        assert checks and set(checks) == {"spectra"}
    finally:
        task.cancel()
