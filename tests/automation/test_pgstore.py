"""The job store interface, run against both backends for real: SQLite (WAL) in a file and
PostgreSQL on loopback (FOR UPDATE SKIP LOCKED): concurrent claims never overlap, an expired lease is
taken over, cancel, retry, pages, and a restart finds everything where it was."""

from __future__ import annotations

import threading
import time

import pytest

from nanolens_gateway.automation.pgstore import PostgresJobStore, open_store
from nanolens_gateway.jobs.store import JobStore


def objects(n: int) -> list[tuple[str, str, str]]:
    return [("raw", f"batch/{i}.txt", "") for i in range(n)]


def test_open_store_picks_the_backend_from_the_location(store_location):
    store = open_store(store_location)
    expected = PostgresJobStore if store_location.startswith("postgresql://") else JobStore
    assert type(store) is expected


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_workers_never_hold_the_same_item_and_share_the_work(store_location, workers):
    job = open_store(store_location).create(1, {"k": "v"}, objects(240))
    claimed: dict[str, list] = {f"w{i}": [] for i in range(workers)}
    start = threading.Barrier(workers)

    def work(owner: str) -> None:
        store = open_store(store_location)  # its own connection, as another replica would have
        start.wait()
        while batch := store.claim(owner, 5, lease_seconds=60):
            time.sleep(0.003)  # the work: long enough that the workers race for the next batch
            claimed[owner] += [(i.job_id, i.idx) for i in batch]
            for item in batch:
                assert store.done(item, owner, "results", f"r/{item.idx}")

    threads = [threading.Thread(target=work, args=(o,)) for o in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [c for owned in claimed.values() for c in owned]
    assert len(every) == len(set(every)) == 240
    assert all(claimed.values()), {o: len(c) for o, c in claimed.items()}  # every worker got some
    record = open_store(store_location).get(job, items=True)
    assert record.state == "done" and record.counts["done"] == 240 and record.options == {"k": "v"}
    assert {i.result_key for i in record.items} == {f"r/{i}" for i in range(240)}
    assert all(i.attempts == 1 for i in record.items)


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(store_location):
    store = open_store(store_location)
    job = store.create(1, {}, objects(1))
    (mine,) = store.claim("dead", 5, lease_seconds=10, now=1000.0)
    assert store.claim("other", 5, lease_seconds=10, now=1005.0) == []  # still leased
    (theirs,) = store.claim("other", 5, lease_seconds=10, now=1011.0)
    assert theirs.attempts == 2
    assert not store.done(mine, "dead", "results", "x")  # lost its lease
    assert store.done(theirs, "other", "results", "y")
    (item,) = store.get(job, items=True).items
    assert item.result_key == "y" and item.state == "done"


def test_a_heartbeat_keeps_the_lease(store_location):
    store = open_store(store_location)
    store.create(1, {}, objects(2))
    held = store.claim("alive", 2, lease_seconds=0.5)
    assert len(held) == 2
    time.sleep(0.3)
    assert store.heartbeat("alive", lease_seconds=60) == 2
    time.sleep(0.4)  # past the first lease, within the renewed one
    assert store.claim("thief", 5, lease_seconds=60) == []
    assert all(store.done(i, "alive", "results", "r") for i in held)


def test_failures_back_off_cancel_retry_and_pages(store_location):
    store = open_store(store_location)
    first = store.create(1, {}, objects(3))
    (a, b, c) = store.claim("w", 3, 60)
    assert store.failed(a, "w", "INVALID_ARGUMENT: broken")
    assert store.done(b, "w", "results", "k")
    assert store.later(c, "w", "UNAVAILABLE: service down", delay=3600)
    assert store.claim("w", 3, 60) == []  # not due before its backoff
    assert store.get(first).state == "running"  # one pending (later), some finished
    second = store.create(1, {}, objects(4))
    assert store.cancel(second) == 4 and store.get(second).state == "cancelled"
    assert store.is_cancelled(second) and not store.is_cancelled(first)
    assert store.retry(first) == 1
    items = store.get(first, items=True).items
    assert [i.state for i in items] == ["pending", "done", "pending"] and items[0].error == ""
    page = store.list(limit=1)
    assert [r.id for r in page] == [second]
    assert [r.id for r in store.list(limit=1, before=(page[0].created, page[0].id))] == [first]
    assert [r.id for r in store.list(state="cancelled")] == [second]
    assert store.get("no-such-job") is None


def test_state_survives_a_new_store_on_the_same_database(store_location):
    store = open_store(store_location)
    job = store.create(5, {"a": "1"}, objects(3), model_name="m", model_version="2", submitted_by="lab")
    (item, *_) = store.claim("w", 1, 60)
    store.done(item, "w", "results", "r/0")
    again = open_store(store_location).get(job, items=True)  # the schema is created once, not twice
    assert (again.analysis, again.model_name, again.model_version, again.submitted_by) == (5, "m", "2", "lab")
    assert [i.state for i in again.items] == ["done", "pending", "pending"]
