"""The report of a job, written beside its results once the job ends.

``results/jobs/<job id>/report.html`` (a summary table: each item's verdict and warnings and its
figures rounded, with units, the figures every item shares above it; every item with thumbnails of
its pictures linking to the full ones where ``nanolens results get --out`` puts them; the errors;
provenance) and ``index.csv`` / ``index.parquet``
(one row per item: the object, its state, error and result, its verdict and warnings, and the scalar
figures of its result document, each with a unit column where the figure has a unit). A job that
ends again (after a retry) gets its report written again.
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
PICTURE_BUDGET = 4 << 20  # bytes of thumbnails embedded in one report; past it pictures are only linked
THUMBNAIL_PX = 240
SUMMARY_FIGURES = 8  # figure columns in the summary table (the rest are in each result.json and the index)
# Units of figures, from the suffix of their name.
UNITS = {"_nm": "nm", "_px": "px", "_px2": "px²", "_nm2": "nm²", "_um": "µm", "_s": "s", "_ms": "ms",
         "_db": "dB", "_fps": "1/s", "_per_s": "1/s", "_cm1": "cm⁻¹", "_percent": "%", "percentile": "%"}

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


def unit_of(name: str) -> str:
    """The unit of a figure, from the suffix of its name ("" when it has none)."""
    leaf = name.rpartition(".")[2]
    return next((unit for suffix, unit in UNITS.items() if leaf.endswith(suffix)), "")


def verdict(doc: dict) -> tuple[str, list[str]]:
    """("trustworthy" | "do not trust" | "" when the result has no quality block, its warnings)."""
    quality = doc.get("quality")
    if not isinstance(quality, dict):
        return "", []
    warnings = [str(w) for w in quality.get("warnings", [])]
    return ("do not trust" if warnings or quality.get("trustworthy") is False else "trustworthy"), warnings


def index_rows(record, docs: dict[int, dict]) -> list[dict[str, object]]:
    """One row per item; verdict, warnings and figures (each with its unit) from its result document."""
    rows = []
    for item in record.items:
        doc = docs.get(item.idx) or {}
        row = {"job_id": record.id, "item": item.idx, "bucket": item.bucket, "key": item.key,
               "version_id": item.version_id, "state": item.state, "attempts": item.attempts, "error": item.error,
               "result_bucket": item.result_bucket, "result_key": item.result_key,
               "analysis_id": doc.get("job_id", ""), "identity": doc.get("identity", "")}
        said, warnings = verdict(doc) if doc else ("", [])
        row.update({"verdict": said, "warnings": "; ".join(warnings)})
        for name, value in _scalars(doc).items():
            row[f"result.{name}"] = value
            unit = unit_of(name)
            if unit:
                row[f"result.{name} unit"] = unit
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


def rounded(value: object) -> str:
    """A figure as a reader wants it: 4 significant digits, no exponent for everyday magnitudes."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def local_path(bucket: str, key: str, name: str) -> str:
    """Where ``nanolens results get JOB --out DIR`` puts an item's file, relative to the report in DIR."""
    return f"{bucket}/{key}/{name}"


def report_html(record, docs: dict[int, dict],
                pictures: dict[int, list[tuple[str, str, bytes | None, str]]]) -> bytes:
    """The HTML report; ``pictures`` maps an item to (name, media type of the thumbnail, thumbnail
    bytes or None when not embedded). Links point where ``nanolens results get --out`` writes the
    full pictures and result.json, beside the report."""
    e = html.escape
    name = gateway_pb2.AnalysisKind.Name(record.analysis) if record.analysis in gateway_pb2.AnalysisKind.values() \
        else str(record.analysis)
    c = record.counts
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>NanoLens job {e(record.id)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1340px}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 6px;text-align:left;overflow-wrap:anywhere;"
             "vertical-align:top}table.summary{width:100%}table.summary th{font-size:90%}"
             "td.number{text-align:right;white-space:nowrap}td.state{white-space:nowrap}.failed,.untrusted{color:#a00}.warning{color:#a00;"
             "font-size:90%}figure{display:inline-block;margin:4px}img{border:1px solid #ddd}</style></head><body>",
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
    figures = [k for k in _columns(rows) if k.startswith("result.") and not k.endswith(" unit")
               and k != "result.quality.trustworthy"]  # the verdict column says it
    done = [r for r in rows if r["state"] == "done"]
    units = {f: next((str(r[f"{f} unit"]) for r in done if r.get(f"{f} unit")), "") for f in figures}
    # a figure every item shares is said once above the table; the table keeps the ones that differ
    shared = {f: done[0].get(f) for f in figures if done and len({rounded(r.get(f)) for r in done}) == 1}
    varying = [f for f in figures if f not in shared and not f.endswith(".unit")][:SUMMARY_FIGURES]
    untrusted = sum(r["verdict"] == "do not trust" for r in rows)
    parts.append(f"<h2>Summary</h2><p>{len(done)} results, {untrusted} not to be trusted (see the warnings).</p>")
    if shared:
        parts.append("<p>Same for every result: " + "; ".join(
            f"{e(f[7:])} = {e(rounded(v))}{(' ' + e(units[f])) if units[f] else ''}"
            for f, v in shared.items()) + ".</p>")
    head = "".join(f"<th>{e(f[7:])}{(' (' + e(units[f]) + ')') if units[f] else ''}</th>" for f in varying)
    parts.append(f"<table class='summary'><tr><th>#</th><th>object</th><th>state</th><th>verdict</th>{head}</tr>")
    for row in rows:
        cells = "".join(
            f"<td class='{'number' if isinstance(row.get(f), (int, float)) else 'text'}'>{e(rounded(row.get(f)))}</td>"
            for f in varying)
        said = str(row["verdict"]) or ("no verdict" if row["state"] == "done" else "")
        warning = "".join(f"<div class='warning'>{e(w)}</div>" for w in verdict(docs.get(row["item"]) or {})[1])
        css = "untrusted" if said == "do not trust" else ""
        parts.append(f"<tr><td><a href='#item-{row['item']}'>{row['item']}</a></td>"
                     f"<td>{e(str(row['bucket']))}/{e(str(row['key']))}</td>"
                     f"<td class='state {e(str(row['state']))}'>{e(str(row['state']))}</td>"
                     f"<td class='verdict {css}'>{e(said)}{warning}</td>{cells}</tr>")
    parts.append("</table><p>Every figure of every item, unrounded and with its unit: index.csv and "
                 "index.parquet beside this report.</p>")
    failed = [i for i in record.items if i.error and i.state != "done"]
    parts.append(f"<h2>Errors ({len(failed)})</h2>")
    if failed:
        parts.append("<ul>" + "".join(f"<li class='failed'>{e(i.bucket)}/{e(i.key)}: {e(i.error)}</li>"
                                      for i in failed) + "</ul>")
    parts.append("<h2>Items</h2>")
    by_item = {row["item"]: row for row in rows}
    for item in record.items:
        parts.append(f"<h3 id='item-{item.idx}'>{item.idx}. {e(item.bucket)}/{e(item.key)} ({e(item.state)})</h3>")
        row = by_item[item.idx]
        if row["verdict"]:
            parts.append(f"<p class='{'untrusted' if row['verdict'] == 'do not trust' else ''}'>verdict: "
                         f"{e(str(row['verdict']))}</p>")
            parts += [f"<p class='warning'>warning: {e(w)}</p>" for w in verdict(docs[item.idx])[1]]
        if item.result_key:
            parts.append(f"<p>result: <a href='{e(local_path(item.bucket, item.key, 'result.json'))}'>"
                         f"{e(item.result_bucket)}/{e(item.result_key)}</a></p>")
        for picture, media_type, data in pictures.get(item.idx, []):
            href = e(local_path(item.bucket, item.key, picture))
            if data is None:
                parts.append(f"<p><a href='{href}'>{e(picture)}</a> (no thumbnail: the report's budget is spent)</p>")
            else:
                src = f"data:{media_type};base64,{base64.b64encode(data).decode()}"
                parts.append(f"<figure><a href='{href}'><img alt='{e(picture)}' src='{src}'></a>"
                             f"<figcaption>{e(picture)}</figcaption></figure>")
    provenance = next((d.get("provenance") for d in docs.values() if d.get("provenance")), None)
    parts.append("<h2>Provenance</h2>")
    if provenance is not None:
        parts.append(f"<pre>{e(json.dumps(provenance, indent=1, sort_keys=True))}</pre>")
    parts.append("<p>Every result's own provenance is in its result.json; the index lists them "
                 "(index.csv, index.parquet).</p></body></html>")
    return "".join(parts).encode()


def thumbnail(data: bytes) -> bytes:
    """A picture shrunk to THUMBNAIL_PX on its longer side, as JPEG (a plot's thumbnail is a few kB)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


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
                if budget > 0 and artefact["media_type"] != "image/svg+xml":
                    data = thumbnail(self.objects.get(artefact["bucket"], artefact["key"]))
                    budget -= len(data)
                pictures.setdefault(item.idx, []).append((artefact["name"], "image/jpeg", data))
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
