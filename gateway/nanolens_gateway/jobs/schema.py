"""The job database's tables, one text for both backends (SQLite and PostgreSQL).

Types are the ones both understand (``DOUBLE PRECISION`` has REAL affinity in SQLite). A column
added after a release goes in ``ADDED`` as well, so a database created before it gets it at start.
"""

from __future__ import annotations

TABLES = [
    """CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  created DOUBLE PRECISION NOT NULL,
  analysis INTEGER NOT NULL,
  options TEXT NOT NULL,
  model_name TEXT NOT NULL,
  model_version TEXT NOT NULL,
  submitted_by TEXT NOT NULL,
  cancelled INTEGER NOT NULL DEFAULT 0
)""",
    # attempts: claims of the item, less the ones an outage cut short; crashes: claims whose worker died
    # (its lease expired); outage_since: when the item first met a service or storage that was away
    """CREATE TABLE IF NOT EXISTS items (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  bucket TEXT NOT NULL,
  key TEXT NOT NULL,
  version_id TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  crashes INTEGER NOT NULL DEFAULT 0,
  outage_since DOUBLE PRECISION NOT NULL DEFAULT 0,
  not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  result_bucket TEXT NOT NULL DEFAULT '',
  result_key TEXT NOT NULL DEFAULT '',
  lease_owner TEXT NOT NULL DEFAULT '',
  lease_expires DOUBLE PRECISION NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, idx)
)""",
    "CREATE INDEX IF NOT EXISTS items_claimable ON items (state, not_before)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created DESC, id)",
    # bucket events: one job per object version and rule (nanolens_gateway.automation.events)
    """CREATE TABLE IF NOT EXISTS event_inputs (
  bucket TEXT NOT NULL,
  key TEXT NOT NULL,
  etag TEXT NOT NULL,
  rule TEXT NOT NULL,
  job_id TEXT NOT NULL,
  created DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (bucket, key, etag, rule)
)""",
    # the last report written of each ended job (nanolens_gateway.automation.report)
    """CREATE TABLE IF NOT EXISTS job_reports (
  job_id TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  written DOUBLE PRECISION NOT NULL
)""",
]

# (table, column, definition) of columns newer than their table
ADDED = [
    ("items", "crashes", "INTEGER NOT NULL DEFAULT 0"),
    ("items", "outage_since", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
]
