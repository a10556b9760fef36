"""Durable job state: jobs, their items, and leases on the items being run, in SQLite (WAL, here)
or PostgreSQL (``nanolens_gateway.jobs.postgres``), both with the tables of ``jobs.schema`` and the
SQL below.

A worker claims pending items in one transaction (``BEGIN IMMEDIATE`` in SQLite; ``FOR UPDATE SKIP
LOCKED`` in PostgreSQL), so two workers never hold the same item; it renews its leases while it runs
them (heartbeat) and records each outcome. A claim counts an attempt, so a worker that dies has
spent one; an item whose lease expired (its worker died) is a suspect, claimed apart from the others
and failed as poison once it has taken its worker down too often. Nothing here analyses anything:
the worker (``nanolens_gateway.jobs.worker``) does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nanolens_gateway.jobs.schema import ADDED, TABLES

STATES = ("pending", "running", "done", "failed", "cancelled")

# The job database's calls get threads of their own: analyses waiting on a frozen storage fill the
# event loop's default pool, and GetJob must not queue behind them.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobs-db")


async def db_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a job store method) on the job database's threads."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(fn, *args, **kwargs))

@dataclass(frozen=True)
class Item:
    job_id: str
    idx: int
    bucket: str
    key: str
    version_id: str
    state: str = "pending"
    attempts: int = 0
    error: str = ""
    result_bucket: str = ""
    result_key: str = ""
    crashes: int = 0
    outage_since: float = 0.0


@dataclass
class JobRecord:
    id: str
    created: float
    analysis: int
    options: dict[str, str]
    model_name: str
    model_version: str
    submitted_by: str
    counts: dict[str, int] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def state(self) -> str:
        c = self.counts
        if c.get("running") or (c.get("pending") and (c.get("done") or c.get("failed"))):
            return "running"
        if c.get("pending"):
            return "pending"
        if c.get("failed"):
            return "failed"
        if c.get("cancelled") and not c.get("done"):
            return "cancelled"
        return "done" if c.get("done") else "cancelled"


class JobStore:
    """SQLite job store; one connection per thread (the gateway calls it from worker threads).
    ``PostgresJobStore`` changes only how to connect, begin, lock claimed rows and list columns."""

    _BEGIN = "BEGIN IMMEDIATE"  # takes the write lock now: two claims never read the same rows
    _SKIP_LOCKED = ""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        with self._tx() as db:
            self._lock_schema(db)
            for sql in TABLES:
                db.execute(sql)
            for table, column, definition in ADDED:
                if column not in self._columns(db, table):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, safe against corruption
        db.execute("PRAGMA foreign_keys=ON")
        db.row_factory = sqlite3.Row
        return db

    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None or getattr(db, "closed", False):
            db = self._connect()
            self._local.db = db
        return db

    def _lock_schema(self, db) -> None:
        """Nothing to do: the transaction holds SQLite's write lock."""

    @staticmethod
    def _columns(db, table: str) -> set[str]:
        return {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}

    class _Tx:
        def __init__(self, db, begin: str):
            self.db = db
            self.begin = begin

        def __enter__(self):
            self.db.execute(self.begin)
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> _Tx:
        return self._Tx(self._db(), self._BEGIN)

    # -- jobs -----------------------------------------------------------------------------
    def create(self, analysis: int, options: dict[str, str], objects: list[tuple[str, str, str]],
               model_name: str = "", model_version: str = "", submitted_by: str = "") -> str:
        """A new job over ``objects`` ((bucket, key, version_id) each); returns its id."""
        job_id = uuid.uuid4().hex
        with self._tx() as db:
            db.execute("INSERT INTO jobs (id, created, analysis, options, model_name, model_version, submitted_by) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (job_id, time.time(), analysis, json.dumps(options, sort_keys=True), model_name, model_version,
                        submitted_by))
            db.executemany("INSERT INTO items (job_id, idx, bucket, key, version_id, state) "
                           "VALUES (?, ?, ?, ?, ?, 'pending')",
                           [(job_id, i, b, k, v) for i, (b, k, v) in enumerate(objects)])
        return job_id

    def get(self, job_id: str, items: bool = False) -> JobRecord | None:
        db = self._db()
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        record = self._record(row)
        if items:
            record.items = [self._item(r) for r in db.execute(
                "SELECT * FROM items WHERE job_id = ? ORDER BY idx", (job_id,))]
        return record

    def list(self, state: str = "", limit: int = 50, before: tuple[float, str] | None = None) -> list[JobRecord]:
        """Newest first; ``before`` (created, id) continues a page; ``state`` filters on the job's state."""
        db = self._db()
        query, args = "SELECT * FROM jobs", []
        if before is not None:
            query += " WHERE (created < ? OR (created = ? AND id > ?))"
            args += [before[0], before[0], before[1]]
        query += " ORDER BY created DESC, id"
        out = []
        for row in db.execute(query, args):
            record = self._record(row)
            if not state or record.state == state:
                out.append(record)
                if len(out) == limit:
                    break
        return out

    def cancel(self, job_id: str) -> int:
        """Cancel the job's pending items; returns how many."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET cancelled = 1 WHERE id = ?", (job_id,))
            return db.execute("UPDATE items SET state = 'cancelled' WHERE job_id = ? AND state = 'pending'",
                              (job_id,)).rowcount

    def retry(self, job_id: str) -> int:
        """Failed items of the job back to pending, with their attempts and crashes forgotten; returns how many."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET cancelled = 0 WHERE id = ?", (job_id,))
            return db.execute("UPDATE items SET state = 'pending', error = '', not_before = 0, attempts = 0, "
                              "crashes = 0, outage_since = 0 WHERE job_id = ? AND state = 'failed'",
                              (job_id,)).rowcount

    # -- items ----------------------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease_seconds: float, analyses: list[int] | None = None,
              suspects: bool = False, max_crashes: int = 0, now: float | None = None) -> list[Item]:
        """Up to ``limit`` due pending items for ``owner`` (of jobs with one of ``analyses``, if given),
        each with one attempt more.

        ``suspects``: instead, items whose lease expired (their worker died: one crash more) and pending
        items that crashed before, to be run alone. With ``max_crashes``, an expired item that would
        reach it is failed as poison instead of being claimed again.
        """
        now = time.time() if now is None else now
        if analyses is not None and not analyses:
            return []
        with self._tx() as db:
            if max_crashes > 0:
                db.execute(
                    "UPDATE items SET state = 'failed', crashes = crashes + 1, lease_owner = '', error = ? "
                    "WHERE state = 'running' AND lease_expires < ? AND crashes + 1 >= ?",
                    (f"poison: the gateway analysing it died {max_crashes} times (out of memory?); "
                     "RetryJob tries it again", now, max_crashes))
            if suspects:
                where = "((state = 'running' AND lease_expires < ?) OR (state = 'pending' AND crashes > 0 " \
                        "AND not_before <= ?))"
                args: list = [now, now]
            else:
                where, args = "state = 'pending' AND crashes = 0 AND not_before <= ?", [now]
            if analyses is not None:
                where += f" AND job_id IN (SELECT id FROM jobs WHERE analysis IN ({', '.join('?' * len(analyses))}))"
                args += list(analyses)
            rows = db.execute(f"SELECT job_id, idx FROM items WHERE {where} "  # noqa: S608
                              f"ORDER BY not_before, job_id, idx LIMIT ?{self._SKIP_LOCKED}",
                              (*args, limit)).fetchall()
            return [self._item(db.execute(
                "UPDATE items SET state = 'running', attempts = attempts + 1, "
                "crashes = crashes + CASE WHEN state = 'running' THEN 1 ELSE 0 END, lease_owner = ?, "
                "lease_expires = ? WHERE job_id = ? AND idx = ? RETURNING *",
                (owner, now + lease_seconds, row["job_id"], row["idx"])).fetchone()) for row in rows]

    def heartbeat(self, owner: str, lease_seconds: float, items: list[tuple[str, int]] | None = None) -> int:
        """Renew the leases ``owner`` holds (only on ``items``, (job id, index) each, when given);
        returns how many."""
        expires = time.time() + lease_seconds
        with self._tx() as db:
            if items is None:
                return db.execute("UPDATE items SET lease_expires = ? WHERE lease_owner = ? AND state = 'running'",
                                  (expires, owner)).rowcount
            return sum(db.execute("UPDATE items SET lease_expires = ? WHERE lease_owner = ? AND state = 'running' "
                                  "AND job_id = ? AND idx = ?", (expires, owner, job_id, idx)).rowcount
                       for job_id, idx in items)

    def release(self, owner: str) -> int:
        """Every item ``owner`` holds back to pending, its attempt not spent (the worker is stopping)."""
        with self._tx() as db:
            return db.execute("UPDATE items SET state = 'pending', attempts = attempts - 1, lease_owner = '', "
                              "lease_expires = 0 WHERE lease_owner = ? AND state = 'running'", (owner,)).rowcount

    def _finish(self, item: Item, owner: str, sets: str, args: tuple) -> bool:
        with self._tx() as db:
            return db.execute(f"UPDATE items SET {sets}, lease_owner = '' WHERE job_id = ? AND idx = ? "  # noqa: S608
                              "AND lease_owner = ? AND state = 'running'",
                              (*args, item.job_id, item.idx, owner)).rowcount == 1

    def done(self, item: Item, owner: str, result_bucket: str, result_key: str) -> bool:
        """Record the item's result; False if the lease was lost (another worker has it now)."""
        return self._finish(item, owner, "state = 'done', error = '', result_bucket = ?, result_key = ?",
                            (result_bucket, result_key))

    def failed(self, item: Item, owner: str, error: str) -> bool:
        return self._finish(item, owner, "state = 'failed', error = ?", (error,))

    def cancelled(self, item: Item, owner: str) -> bool:
        return self._finish(item, owner, "state = 'cancelled', error = ?", ("the job was cancelled",))

    def later(self, item: Item, owner: str, error: str, delay: float, outage: bool = False) -> bool:
        """Back to pending, due after ``delay`` s. ``outage``: a service or storage was away, which is
        not the input's fault: the attempt is given back and the outage's start kept (``outage_since``)."""
        now = time.time()
        if outage:
            return self._finish(item, owner, "state = 'pending', error = ?, not_before = ?, attempts = attempts - 1, "
                                "outage_since = CASE WHEN outage_since = 0 THEN ? ELSE outage_since END",
                                (error, now + delay, now))
        return self._finish(item, owner, "state = 'pending', error = ?, not_before = ?, outage_since = 0",
                            (error, now + delay))

    def resume(self, analyses: list[int]) -> int:
        """Items of ``analyses`` paused by an outage due now (their service is back); returns how many."""
        if not analyses:
            return 0
        with self._tx() as db:
            return db.execute("UPDATE items SET not_before = 0 WHERE state = 'pending' AND outage_since > 0 AND "
                              f"job_id IN (SELECT id FROM jobs WHERE analysis IN ({', '.join('?' * len(analyses))}))",
                              tuple(analyses)).rowcount

    def is_cancelled(self, job_id: str) -> bool:
        row = self._db().execute("SELECT cancelled FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancelled"])

    # -- rows -----------------------------------------------------------------------------
    def _record(self, row) -> JobRecord:
        counts = {s: 0 for s in STATES}
        for state, n in self._db().execute("SELECT state, COUNT(*) FROM items WHERE job_id = ? GROUP BY state",
                                           (row["id"],)):
            counts[state] = n
        return JobRecord(row["id"], row["created"], row["analysis"], json.loads(row["options"]), row["model_name"],
                         row["model_version"], row["submitted_by"], counts)

    @staticmethod
    def _item(row) -> Item:
        return Item(row["job_id"], row["idx"], row["bucket"], row["key"], row["version_id"], row["state"],
                    row["attempts"], row["error"], row["result_bucket"], row["result_key"], row["crashes"],
                    row["outage_since"])


def open_store(location: str) -> JobStore:
    """The job store at ``location``: a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file."""
    if location.startswith(("postgresql://", "postgres://")):
        from nanolens_gateway.jobs.postgres import PostgresJobStore  # only then is the driver needed

        return PostgresJobStore(location)
    return JobStore(location)
