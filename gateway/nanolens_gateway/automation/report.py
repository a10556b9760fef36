"""The report of a job, written beside its results once the job ends.

``results/jobs/<job id>/report.html`` (a summary table, every item with its pictures, the errors,
provenance) and ``index.csv`` / ``index.parquet`` (one row per item: the object, its state, error and
result, and the scalar figures of its result document). A job that ends again (after a retry) gets
its report written again.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import html
import io
import json
import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq

from nanolens.gateway.v1 import gateway_pb2

log = logging.getLogger("nanolens.reports")

_ENDED = ("done", "failed", "cancelled")
_RESERVED = {"job_id", "created", "analysis", "input", "options", "identity", "provenance", "artifacts", "result"}
_PICTURES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
PICTURE_BUDGET = 32 << 20  # bytes of pictures embedded in one report; past it pictures are listed by key

def report_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def _scalars(doc: dict) -> dict[str, object]:
    """The result document's top-level figures (numbers, text, flags), flattened one level."""
    out: dict[str, object] = {}
    for key, value in doc.items():
        if key in _RESERVED:
            continue
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float, str, bool)):
                    out[f"{key}.{sub}"] = v
    return out


def index_rows(record, docs: dict[int, dict]) -> list[dict[str, object]]:
    """One row per item; figures from its result document where it has one."""
    rows = []
    for item in record.items:
        doc = docs.get(item.idx) or {}
        row = {"job_id": record.id, "item": item.idx, "bucket": item.bucket, "key": item.key,
               "version_id": item.version_id, "state": item.state, "attempts": item.attempts, "error": item.error,
               "result_bucket": item.result_bucket, "result_key": item.result_key,
               "analysis_id": doc.get("job_id", ""), "identity": doc.get("identity", "")}
        row.update({f"result.{k}": v for k, v in _scalars(doc).items()})
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, object]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    return names


def index_csv(rows: list[dict[str, object]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def index_parquet(rows: list[dict[str, object]]) -> bytes:
    """Numeric columns stay numeric (float64 where any value is); everything else is text."""
    columns = {}
    for name in _columns(rows):
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            columns[name] = pa.array(values, pa.bool_())
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            kind = pa.int64() if all(isinstance(v, int) for v in present) else pa.float64()
            columns[name] = pa.array(values, kind)
        else:
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


def report_html(record, docs: dict[int, dict], pictures: dict[int, list[tuple[str, str, bytes | None]]]) -> bytes:
    """The HTML report; ``pictures`` maps an item to (name, media type, bytes or None: listed only)."""
    e = html.escape
    name = gateway_pb2.AnalysisKind.Name(record.analysis) if record.analysis in gateway_pb2.AnalysisKind.values() \
        else str(record.analysis)
    c = record.counts
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>NanoLens job {e(record.id)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}img{max-width:480px;margin:4px}"
             ".failed{color:#a00}</style></head><body>",
             f"<h1>Job {e(record.id)}</h1><table>",
             f"<tr><th>analysis</th><td>{e(name)}</td></tr>",
             f"<tr><th>options</th><td>{e(json.dumps(record.options, sort_keys=True))}</td></tr>",
             f"<tr><th>model</th><td>{e(record.model_name or 'default')} {e(record.model_version)}</td></tr>",
             f"<tr><th>created</th><td>{e(created)}</td></tr>",
             f"<tr><th>submitted by</th><td>{e(record.submitted_by)}</td></tr>",
             f"<tr><th>state</th><td>{e(record.state)}</td></tr>",
             f"<tr><th>items</th><td>{record.total}: {c.get('done', 0)} done, {c.get('failed', 0)} failed, "
             f"{c.get('cancelled', 0)} cancelled</td></tr></table>"]
    rows = index_rows(record, docs)
    figures = [k for k in _columns(rows) if k.startswith("result.")]
    parts.append("<h2>Summary</h2><table><tr><th>#</th><th>object</th><th>state</th>"
                 + "".join(f"<th>{e(f[7:])}</th>" for f in figures) + "</tr>")
    for row in rows:
        cells = "".join(f"<td>{e('' if row.get(f) is None else str(row.get(f)))}</td>" for f in figures)
        parts.append(f"<tr><td>{row['item']}</td><td>{e(str(row['bucket']))}/{e(str(row['key']))}</td>"
                     f"<td class='{e(str(row['state']))}'>{e(str(row['state']))}</td>{cells}</tr>")
    parts.append("</table>")
    failed = [i for i in record.items if i.error and i.state != "done"]
    parts.append(f"<h2>Errors ({len(failed)})</h2>")
    if failed:
        parts.append("<ul>" + "".join(f"<li class='failed'>{e(i.bucket)}/{e(i.key)}: {e(i.error)}</li>"
                                      for i in failed) + "</ul>")
    parts.append("<h2>Items</h2>")
    for item in record.items:
        parts.append(f"<h3 id='item-{item.idx}'>{item.idx}. {e(item.bucket)}/{e(item.key)} ({e(item.state)})</h3>")
        if item.result_key:
            parts.append(f"<p>result: {e(item.result_bucket)}/{e(item.result_key)}</p>")
        for picture, media_type, data in pictures.get(item.idx, []):
            if data is None:
                parts.append(f"<p>picture {e(picture)} (not embedded: see the result)</p>")
            else:
                src = f"data:{media_type};base64,{base64.b64encode(data).decode()}"
                parts.append(f"<figure><img alt='{e(picture)}' src='{src}'><figcaption>{e(picture)}</figcaption>"
                             "</figure>")
    provenance = next((d.get("provenance") for d in docs.values() if d.get("provenance")), None)
    parts.append("<h2>Provenance</h2>")
    if provenance is not None:
        parts.append(f"<pre>{e(json.dumps(provenance, indent=1, sort_keys=True))}</pre>")
    parts.append("<p>Every result's own provenance is in its result.json; the index lists them "
                 "(index.csv, index.parquet).</p></body></html>")
    return "".join(parts).encode()


class ReportWriter:
    """Writes the report of every job that has ended (again) since its last report."""

    def __init__(self, store, objects, results_bucket: str):
        self.store = store
        self.objects = objects
        self.bucket = results_bucket

    @staticmethod
    def fingerprint(record) -> str:
        return json.dumps(sorted(record.counts.items()))

    def pending(self, recent: int = 200) -> list:
        """Ended jobs among the ``recent`` newest whose report is missing or out of date."""
        written = {}
        for job_id, fingerprint in self.store._db().execute("SELECT job_id, fingerprint FROM job_reports"):
            written[job_id] = fingerprint
        return [r for r in self.store.list(limit=recent)
                if r.state in _ENDED and written.get(r.id) != self.fingerprint(r)]

    def write(self, job_id: str) -> str:
        """Write the job's report and index; returns the report's key."""
        record = self.store.get(job_id, items=True)
        docs: dict[int, dict] = {}
        pictures: dict[int, list] = {}
        budget = PICTURE_BUDGET
        for item in record.items:
            if item.state != "done" or not item.result_key:
                continue
            doc = json.loads(self.objects.get(item.result_bucket, item.result_key))
            docs[item.idx] = doc
            for artefact in doc.get("artifacts", []):
                if artefact.get("media_type") not in _PICTURES:
                    continue
                data = None
                if artefact.get("size_bytes", 0) <= budget:
                    data = self.objects.get(artefact["bucket"], artefact["key"])
                    budget -= len(data)
                pictures.setdefault(item.idx, []).append((artefact["name"], artefact["media_type"], data))
        rows = index_rows(record, docs)
        prefix = report_prefix(job_id)
        self.objects.put(self.bucket, prefix + "index.csv", index_csv(rows), "text/csv")
        self.objects.put(self.bucket, prefix + "index.parquet", index_parquet(rows), "application/vnd.apache.parquet")
        self.objects.put(self.bucket, prefix + "report.html", report_html(record, docs, pictures),
                         "text/html; charset=utf-8")
        with self.store._tx() as db:
            db.execute("DELETE FROM job_reports WHERE job_id = ?", (job_id,))
            db.execute("INSERT INTO job_reports (job_id, fingerprint, written) VALUES (?, ?, ?)",
                       (job_id, self.fingerprint(record), time.time()))
        log.info("job report written", extra={"job_id": job_id, "key": prefix + "report.html"})
        return prefix + "report.html"

    async def run(self, every_seconds: float) -> None:
        while True:
            try:
                for record in await asyncio.to_thread(self.pending):
                    await asyncio.to_thread(self.write, record.id)
            except Exception:  # storage unreachable: the next round tries again
                log.exception("writing job reports failed")
            await asyncio.sleep(every_seconds)
