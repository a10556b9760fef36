"""Bucket events: new uploads analysed without anyone asking, once each.

MinIO's bucket-notification webhook posts the S3 event JSON to ``POST /events/minio`` on the
gateway's events port (``NANOLENS_EVENTS_PORT``) with ``Authorization: Bearer <token>``
(``NANOLENS_EVENTS_TOKEN``). Rules (``NANOLENS_EVENT_RULES``, a JSON file or ConfigMap) map bucket,
key prefix and suffix to an analysis and its options. Delivery is at least once at best, so the
enqueue is idempotent: one job per (bucket, key, ETag, analysis, options), recorded in the job
database in the same transaction as the job, so duplicate, replayed and out-of-order events give
one analysis each. A periodic reconciliation scan (``NANOLENS_EVENTS_SCAN_SECONDS``) lists the rule
prefixes and enqueues, through the same idempotent path, what no event brought.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.jobs.store import db_call
from nanolens_runtime.errors import NotFound, Unavailable

log = logging.getLogger("nanolens.events")

@dataclass(frozen=True)
class Rule:
    """Objects in ``bucket`` whose key starts with ``prefix`` and ends with ``suffix`` get ``analysis``."""

    bucket: str
    prefix: str
    suffix: str
    analysis: int
    options: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def identity(self) -> str:
        """What makes two enqueues of one object the same: the analysis and its options."""
        return hashlib.sha256(json.dumps([self.analysis, self.options], sort_keys=True).encode()).hexdigest()[:32]

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix) and key.endswith(self.suffix) \
            and not key.endswith("/")


def _analysis_kind(name: str, where: str) -> int:
    from nanolens_gateway.domains import analyses

    for kind, (_, analysis) in analyses().items():
        if name in (analysis.name, gateway_pb2.AnalysisKind.Name(kind)):
            return kind
    names = sorted(a.name for _, a in analyses().values())
    raise ValueError(f"{where}: analysis {name!r} is not one of {names}")


def parse_rules(text: str, source: str = "rules") -> list[Rule]:
    """Rules from JSON: ``{"rules": [{"bucket", "prefix", "suffix", "analysis", "options"}]}``.

    The analysis is its short name (``spectra``) or its ``ANALYSIS_KIND_*`` name; the options are
    checked (and put in canonical form) now, so a typo stops the start instead of failing every item.
    """
    from nanolens_gateway.domains import analyses

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not JSON: {exc}") from exc
    entries = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{source} must be {{"rules": [...]}}')
    rules = []
    for i, entry in enumerate(entries):
        where = f"{source} rules[{i}]"
        if not isinstance(entry, dict) or not entry.get("bucket") or not entry.get("analysis"):
            raise ValueError(f"{where} needs a bucket and an analysis")
        unknown = set(entry) - {"bucket", "prefix", "suffix", "analysis", "options"}
        if unknown:
            raise ValueError(f"{where} has unknown fields {sorted(unknown)}")
        kind = _analysis_kind(str(entry["analysis"]), where)
        options = {str(k): str(v) for k, v in (entry.get("options") or {}).items()}
        try:
            options = analyses()[kind][1].canonical_options(options)
        except Exception as exc:  # InvalidArgument naming the option
            raise ValueError(f"{where}: {exc}") from exc
        rules.append(Rule(str(entry["bucket"]), str(entry.get("prefix", "")), str(entry.get("suffix", "")), kind,
                          options))
    return rules


def _field(value, kind: type, where: str):
    """``value`` if it is a ``kind`` (a JSON object, string, ...); else the event is malformed."""
    if not isinstance(value, kind):
        raise ValueError(f"{where} is not a JSON {'object' if kind is dict else kind.__name__}")
    return value


def parse_minio_event(payload) -> list[tuple[str, str, str, str]]:
    """The created objects an S3/MinIO event names: (bucket, key, etag, version_id) each.

    Keys arrive URL-encoded (``lab%2Frun+1%2Fa.tif``); removals and other events are left out. A
    record of the wrong shape is a ValueError naming its field (the sender is answered 400, and stops
    sending it), never a crash.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise ValueError('the event has no "Records" list')
    created = []
    for i, record in enumerate(payload["Records"]):
        where = f"Records[{i}]"
        _field(record, dict, where)
        if not str(record.get("eventName", "")).startswith(("s3:ObjectCreated:", "ObjectCreated:")):
            continue
        s3 = _field(record.get("s3"), dict, f"{where}.s3")
        bucket = _field(_field(s3.get("bucket"), dict, f"{where}.s3.bucket").get("name"), str,
                        f"{where}.s3.bucket.name")
        obj = _field(s3.get("object"), dict, f"{where}.s3.object")
        key = urllib.parse.unquote_plus(_field(obj.get("key"), str, f"{where}.s3.object.key"))
        etag = _field(obj.get("eTag") or "", str, f"{where}.s3.object.eTag")
        version_id = _field(obj.get("versionId") or "", str, f"{where}.s3.object.versionId")
        if not bucket or not key:
            raise ValueError(f"{where} names no bucket or no key")
        created.append((bucket, key, etag.strip('"'), version_id))
    return created


class EventIntake:
    """Idempotent enqueue of single-object jobs into the job store (SQLite or PostgreSQL)."""

    def __init__(self, store, rules: list[Rule], wake=None, submitted_by: str = "bucket-events"):
        self.store = store
        self.rules = rules
        self.wake = wake or (lambda: None)
        self.submitted_by = submitted_by

    def enqueue(self, bucket: str, key: str, etag: str, version_id: str = "") -> list[str]:
        """Jobs created for this object version (one per matching rule); [] when seen before."""
        jobs = []
        for rule in self.rules:
            if not rule.matches(bucket, key):
                continue
            job_id = uuid.uuid4().hex
            now = time.time()
            with self.store._tx() as db:  # the mark and the job commit together, or neither does
                inserted = db.execute(
                    "INSERT INTO event_inputs (bucket, key, etag, rule, job_id, created) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING", (bucket, key, etag, rule.identity, job_id, now)).rowcount
                if inserted != 1:
                    continue
                db.execute("INSERT INTO jobs (id, created, analysis, options, model_name, model_version, "
                           "submitted_by) VALUES (?, ?, ?, ?, '', '', ?)",
                           (job_id, now, rule.analysis, json.dumps(rule.options, sort_keys=True), self.submitted_by))
                db.execute("INSERT INTO items (job_id, idx, bucket, key, version_id, state) "
                           "VALUES (?, 0, ?, ?, ?, 'pending')", (job_id, bucket, key, version_id))
            jobs.append(job_id)
        if jobs:
            log.info("object enqueued", extra={"bucket": bucket, "key": key, "etag": etag, "jobs": jobs})
            self.wake()
        return jobs

    def scan(self, objects) -> int:
        """Reconciliation: enqueue every object under the rule prefixes that no event brought.
        ``objects`` is the ObjectStore; returns how many jobs were created."""
        created = 0
        for bucket, prefix in sorted({(r.bucket, r.prefix) for r in self.rules}):
            for obj in objects.client.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.is_dir:
                    continue
                created += len(self.enqueue(bucket, obj.object_name, str(obj.etag or "").strip('"')))
        if created:
            log.warning("reconciliation scan enqueued objects no event brought", extra={"jobs": created})
        return created


# -- the HTTP endpoint ----------------------------------------------------------------------------
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
MAX_BODY = 8 << 20


class EventServer:
    """A small HTTP/1.1 endpoint (one request per connection) for MinIO's webhook target.

    The token is checked before the body is read; every malformed request is answered 4xx (MinIO
    re-delivers on 5xx, forever) and logged as one line without a traceback. An event without an
    ETag gets the object's own from storage, so it is the same enqueue as its scan's.
    """

    def __init__(self, intake: EventIntake, token: str, objects=None):
        self.intake = intake
        self.token = token
        self.objects = objects  # the ObjectStore, for the ETag an event left out

    def authorised(self, header: str) -> bool:
        if not self.token:
            return True
        given = header[7:] if header.lower().startswith("bearer ") else header
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._respond(reader)
        except (asyncio.IncompleteReadError, ConnectionError):  # the caller left before its request ended
            log.info("bucket event connection closed before a whole request")
            writer.close()
            return
        except TimeoutError:
            status, body = 408, {"error": "the request did not arrive within 30 s"}
        except asyncio.LimitOverrunError:  # a head past the reader's limit (64 KiB)
            status, body = 431, {"error": "the request's head is too large"}
        except Unavailable as exc:  # storage or the job database away: MinIO delivers again later
            log.warning("bucket event not taken now", extra={"error": str(exc)})
            status, body = 503, {"error": str(exc)}
        except Exception:  # a bug must not stop the endpoint: MinIO retries on a non-2xx
            log.exception("bucket event failed")
            status, body = 500, {"error": "internal error"}
        if 400 <= status < 500:
            log.warning("bucket event refused", extra={"status": status, "error": body.get("error", "")})
        data = json.dumps(body).encode()
        writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the caller did not wait for the answer
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, dict]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path != "/events/minio":
            return 404, {"error": f"no endpoint {path}"}
        if method != "POST":
            return 405, {"error": "POST the event"}
        if not self.authorised(headers.get("authorization", "")):  # before a byte of the body is read
            return 401, {"error": "the Authorization token is missing or wrong"}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return 411, {"error": "send the event with a Content-Length"}
        declared = headers.get("content-length", "0")
        if not declared.isdigit():
            return 400, {"error": f"Content-Length {declared!r} is not a length in bytes"}
        length = int(declared)
        if length > MAX_BODY:
            return 413, {"error": f"the body is larger than {MAX_BODY} bytes"}
        body = await asyncio.wait_for(reader.readexactly(length), 30) if length else b""
        try:
            created = parse_minio_event(json.loads(body or b"{}"))
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"error": str(exc)}
        except RecursionError:
            return 400, {"error": "the event is nested too deeply"}
        jobs = []
        for bucket, key, etag, version_id in created:
            if not etag and self.objects is not None:
                try:
                    info = await asyncio.to_thread(self.objects.stat, bucket, key, version_id)
                except NotFound:
                    continue  # removed since: nothing to analyse
                etag = info.etag.strip('"')
            jobs += await db_call(self.intake.enqueue, bucket, key, etag, version_id)
        return 200, {"objects": len(created), "jobs": jobs}


async def scan_forever(intake: EventIntake, objects, every_seconds: float) -> None:
    """The reconciliation scan, every ``every_seconds`` (the first one right away)."""
    while True:
        try:
            await asyncio.to_thread(intake.scan, objects)
        except Exception:  # storage unreachable: the next scan tries again
            log.exception("reconciliation scan failed")
        await asyncio.sleep(every_seconds)
