"""Durable job state in PostgreSQL, for several gateway replicas sharing one job database.

The same interface and the same SQL as the SQLite store (``nanolens_gateway.jobs.store``), with
what PostgreSQL needs to let many workers claim at once: a worker claims pending items (or items
whose lease expired) with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two workers never take the same
item and never wait on each other's rows. ``NANOLENS_JOBS_DB`` picks it when it is a
``postgresql://`` URL (``open_store``).
"""

from __future__ import annotations

import re
import threading
import time

from nanolens_gateway.jobs.store import Item, JobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  created DOUBLE PRECISION NOT NULL,
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
  not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  result_bucket TEXT NOT NULL DEFAULT '',
  result_key TEXT NOT NULL DEFAULT '',
  lease_owner TEXT NOT NULL DEFAULT '',
  lease_expires DOUBLE PRECISION NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS items_claimable ON items (state, not_before);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created DESC, id);
"""

_PLACEHOLDER = re.compile(r"\?")


class _Row(tuple):
    """A row read by index, by unpacking, or by column name (as ``sqlite3.Row``)."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)


def _row_factory(cursor):
    names = tuple(c.name for c in cursor.description or ())
    row_type = type("Row", (_Row,), {"names": names})
    return lambda values: row_type(values)


class _Connection:
    """The slice of ``sqlite3.Connection`` the job store uses, over a psycopg connection
    (``?`` placeholders become ``%s``; autocommit outside explicit transactions)."""

    def __init__(self, url: str):
        import psycopg  # only a PostgreSQL job database needs the driver

        self.conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory)

    def execute(self, sql: str, args=()):
        return self.conn.execute(_PLACEHOLDER.sub("%s", sql), tuple(args))

    def executemany(self, sql: str, rows):
        with self.conn.cursor() as cur:
            cur.executemany(_PLACEHOLDER.sub("%s", sql), list(rows))

    def executescript(self, sql: str) -> None:
        self.conn.execute(sql)


class PostgresJobStore(JobStore):
    """PostgreSQL job store; one connection per thread. ``url`` is a libpq URL
    (``postgresql://user:password@host:port/database``)."""

    def __init__(self, url: str):
        self.path = url
        self._local = threading.local()
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(2020)")  # replicas starting at once create the schema once
            db.executescript(_SCHEMA)

    def _db(self) -> _Connection:  # type: ignore[override]
        db = getattr(self._local, "db", None)
        if db is None or db.conn.closed:
            db = _Connection(self.path)
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: _Connection):
            self.db = db

        def __enter__(self) -> _Connection:
            self.db.execute("BEGIN")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> _Tx:  # type: ignore[override]
        return self._Tx(self._db())

    def claim(self, owner: str, limit: int, lease_seconds: float, now: float | None = None) -> list[Item]:
        """Up to ``limit`` items for ``owner``: pending ones that are due, and running ones whose lease
        expired. Rows another worker is claiming at this moment are skipped, not waited for."""
        now = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                "SELECT job_id, idx FROM items WHERE (state = 'pending' AND not_before <= ?) "
                "OR (state = 'running' AND lease_expires < ?) ORDER BY not_before, job_id, idx LIMIT ? "
                "FOR UPDATE SKIP LOCKED", (now, now, limit)).fetchall()
            claimed = []
            for row in rows:
                updated = db.execute(
                    "UPDATE items SET state = 'running', attempts = attempts + 1, lease_owner = ?, "
                    "lease_expires = ? WHERE job_id = ? AND idx = ? RETURNING *",
                    (owner, now + lease_seconds, row["job_id"], row["idx"])).fetchone()
                claimed.append(self._item(updated))
            return claimed


def open_store(location: str) -> JobStore:
    """The job store at ``location``: a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file."""
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresJobStore(location)
    return JobStore(location)
