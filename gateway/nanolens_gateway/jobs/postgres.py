"""Durable job state in PostgreSQL, for several gateway replicas sharing one job database.

The same interface, tables and SQL as the SQLite store (``nanolens_gateway.jobs.store``), with what
PostgreSQL needs to let many workers claim at once: claimed rows are read ``FOR UPDATE SKIP
LOCKED``, so two workers never take the same item and never wait on each other's rows.
``NANOLENS_JOBS_DB`` picks it when it is a ``postgresql://`` URL (``open_store``).
"""

from __future__ import annotations

import re

from nanolens_gateway.jobs.store import JobStore

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

    @property
    def closed(self) -> bool:
        return self.conn.closed


class PostgresJobStore(JobStore):
    """PostgreSQL job store; one connection per thread. ``url`` is a libpq URL
    (``postgresql://user:password@host:port/database``)."""

    _BEGIN = "BEGIN"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def _connect(self) -> _Connection:
        return _Connection(self.path)

    def _lock_schema(self, db) -> None:
        db.execute("SELECT pg_advisory_xact_lock(2020)")  # replicas starting at once create the schema once

    @staticmethod
    def _columns(db, table: str) -> set[str]:
        return {row[0] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema()", (table,))}
