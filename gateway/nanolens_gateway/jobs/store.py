"""Durable job state in SQLite (WAL): jobs, their items, and leases on the items being run.

A worker claims pending items (or items whose lease expired: their worker died) in one
``BEGIN IMMEDIATE`` transaction, so two workers never hold the same item; it renews its leases
while it runs them (heartbeat) and records each outcome. Nothing here analyses anything: the
worker (``nanolens_gateway.jobs.worker``) does.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("pending", "running", "done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  created REAL NOT NULL,
  analysis INTEGER NOT NULL,
  options TEXT NOT NULL,
  model_name TEXT NOT NULL,
  model_version TEXT NOT NULL,
  submitted_by TEXT NOT NULL,
  cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  bucket TEXT NOT NULL,
  key TEXT NOT NULL,
  version_id TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  not_before REAL NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  result_bucket TEXT NOT NULL DEFAULT '',
  result_key TEXT NOT NULL DEFAULT '',
  lease_owner TEXT NOT NULL DEFAULT '',
  lease_expires REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS items_claimable ON items (state, not_before);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created DESC, id);
"""


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
    """SQLite job store; one connection per thread (the gateway calls it from worker threads)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)  # its own transaction (executescript commits first)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, safe against corruption
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> _Tx:
        return self._Tx(self._db())

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
        """Failed items of the job back to pending; returns how many."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET cancelled = 0 WHERE id = ?", (job_id,))
            return db.execute("UPDATE items SET state = 'pending', error = '', not_before = 0, attempts = 0 "
                              "WHERE job_id = ? AND state = 'failed'", (job_id,)).rowcount

    # -- items ----------------------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease_seconds: float, now: float | None = None) -> list[Item]:
        """Up to ``limit`` items for ``owner``: pending ones that are due, and running ones whose
        lease expired (their worker died). The attempt count goes up by one each."""
        now = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                "SELECT job_id, idx FROM items WHERE (state = 'pending' AND not_before <= ?) "
                "OR (state = 'running' AND lease_expires < ?) ORDER BY not_before, job_id, idx LIMIT ?",
                (now, now, limit)).fetchall()
            claimed = []
            for row in rows:
                db.execute("UPDATE items SET state = 'running', attempts = attempts + 1, lease_owner = ?, "
                           "lease_expires = ? WHERE job_id = ? AND idx = ?",
                           (owner, now + lease_seconds, row["job_id"], row["idx"]))
                claimed.append(self._item(db.execute("SELECT * FROM items WHERE job_id = ? AND idx = ?",
                                                     (row["job_id"], row["idx"])).fetchone()))
            return claimed

    def heartbeat(self, owner: str, lease_seconds: float) -> int:
        """Renew every lease ``owner`` holds; returns how many."""
        with self._tx() as db:
            return db.execute("UPDATE items SET lease_expires = ? WHERE lease_owner = ? AND state = 'running'",
                              (time.time() + lease_seconds, owner)).rowcount

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

    def later(self, item: Item, owner: str, error: str, delay: float) -> bool:
        """Back to pending, due after ``delay`` s (a service down, storage unreachable)."""
        return self._finish(item, owner, "state = 'pending', error = ?, not_before = ?", (error, time.time() + delay))

    def is_cancelled(self, job_id: str) -> bool:
        row = self._db().execute("SELECT cancelled FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancelled"])

    # -- rows -----------------------------------------------------------------------------
    def _record(self, row: sqlite3.Row) -> JobRecord:
        counts = {s: 0 for s in STATES}
        for state, n in self._db().execute("SELECT state, COUNT(*) FROM items WHERE job_id = ? GROUP BY state",
                                           (row["id"],)):
            counts[state] = n
        return JobRecord(row["id"], row["created"], row["analysis"], json.loads(row["options"]), row["model_name"],
                         row["model_version"], row["submitted_by"], counts)

    @staticmethod
    def _item(row: sqlite3.Row) -> Item:
        return Item(row["job_id"], row["idx"], row["bucket"], row["key"], row["version_id"], row["state"],
                    row["attempts"], row["error"], row["result_bucket"], row["result_key"])
