"""The job store interface, run against both backends for real: SQLite (WAL) in a file and
PostgreSQL on loopback (FOR UPDATE SKIP LOCKED): concurrent claims never overlap, an expired lease is
taken over as a suspect and counted as a crash, poison after too many, outages give the attempt back,
claims by analysis, cancel, retry, pages, a restart finds everything where it was, and a database
made before the newer columns gets them."""

from __future__ import annotations

import threading
import time

import pytest

from nanolens_gateway.jobs.postgres import PostgresJobStore
from nanolens_gateway.jobs.store import JobStore, open_store


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
    assert store.claim("other", 5, lease_seconds=10, now=1005.0, suspects=True) == []  # still leased
    assert store.claim("other", 5, lease_seconds=10, now=1011.0) == []  # a dead worker's item is a suspect
    (theirs,) = store.claim("other", 5, lease_seconds=10, now=1011.0, suspects=True)
    assert (theirs.attempts, theirs.crashes) == (2, 1)
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


def test_an_item_that_kills_its_worker_is_failed_as_poison_after_max_crashes(store_location):
    store = open_store(store_location)
    job = store.create(1, {}, objects(2))
    now = 1000.0
    (poison, innocent) = store.claim("w0", 2, lease_seconds=10, now=now)
    assert poison.attempts == 1  # counted at the claim: a worker that dies has spent it
    for crash in (1, 2):  # each worker dies holding it: the lease expires, the next worker takes it alone
        now += 11
        (suspect,) = store.claim(f"w{crash}", 1, lease_seconds=10, suspects=True, max_crashes=3, now=now)
        assert (suspect.idx, suspect.crashes, suspect.attempts) == (poison.idx, crash, crash + 1)
        if crash == 1:  # the other item crashed beside it once, then succeeds alone
            (other,) = store.claim("w1b", 1, lease_seconds=10, suspects=True, max_crashes=3, now=now)
            assert store.done(other, "w1b", "results", "r")
    now += 11
    assert store.claim("w3", 1, lease_seconds=10, suspects=True, max_crashes=3, now=now) == []
    items = store.get(job, items=True).items
    assert items[poison.idx].state == "failed" and items[poison.idx].error.startswith("poison:")
    assert "3 times" in items[poison.idx].error and items[poison.idx].crashes == 3
    assert items[innocent.idx].state == "done"
    assert store.retry(job) == 1
    (again,) = store.claim("w4", 1, lease_seconds=10, now=now)  # retried: no longer a suspect
    assert (again.idx, again.attempts, again.crashes) == (poison.idx, 1, 0)


def test_an_outage_gives_the_attempt_back_and_keeps_its_start(store_location):
    store = open_store(store_location)
    job = store.create(1, {}, objects(1))
    (item,) = store.claim("w", 1, 60)
    assert store.later(item, "w", "UNAVAILABLE: down", delay=0, outage=True)
    (item,) = store.claim("w", 1, 60)
    assert item.attempts == 1 and item.outage_since > 0
    first = item.outage_since
    assert store.later(item, "w", "UNAVAILABLE: still down", delay=0, outage=True)
    (item,) = store.claim("w", 1, 60)
    assert item.attempts == 1 and item.outage_since == first  # the outage's start, not the last failure
    assert store.later(item, "w", "INTERNAL: broken input", delay=0)  # the input's own failure: spent
    (item,) = store.claim("w", 1, 60)
    assert item.attempts == 2 and item.outage_since == 0
    assert store.later(item, "w", "UNAVAILABLE: down", delay=3600, outage=True)
    assert store.claim("w", 1, 60) == []
    assert store.resume([2]) == 0 and store.resume([1]) == 1  # its service is back: due now
    (item,) = store.claim("w", 1, 60)
    assert store.release("w") == 1  # a worker stopping hands its items back unspent
    (item,) = store.claim("w", 1, 60)
    assert item.attempts == 2 and item.crashes == 0
    assert store.get(job).counts["running"] == 1


def test_claims_take_only_the_analyses_asked_for(store_location):
    store = open_store(store_location)
    spectra = store.create(1, {}, objects(3))
    tem = store.create(2, {}, objects(3))
    got = store.claim("w", 10, 60, analyses=[2])
    assert {i.job_id for i in got} == {tem} and len(got) == 3
    assert store.claim("w", 10, 60, analyses=[]) == []
    assert {i.job_id for i in store.claim("w", 10, 60, analyses=[1, 3])} == {spectra}


def test_a_database_made_before_the_newer_columns_gets_them(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the items table as the first release made it
        db.execute("CREATE TABLE items (job_id TEXT NOT NULL, idx INTEGER NOT NULL, bucket TEXT NOT NULL, "
                   "key TEXT NOT NULL, version_id TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL "
                   "DEFAULT 0, not_before REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', result_bucket "
                   "TEXT NOT NULL DEFAULT '', result_key TEXT NOT NULL DEFAULT '', lease_owner TEXT NOT NULL "
                   "DEFAULT '', lease_expires REAL NOT NULL DEFAULT 0, PRIMARY KEY (job_id, idx))")
    store = open_store(str(path))
    store.create(1, {}, objects(1))
    (item,) = store.claim("w", 1, 60)
    assert (item.crashes, item.outage_since) == (0, 0)
