"""The gateway: uploads, analyses of objects in storage, stored results. It holds no model."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

from google.protobuf import json_format

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_gateway.adapters.sem_collections import Collections
from nanolens_gateway.auth import caller
from nanolens_gateway.context import AnalysisContext
from nanolens_gateway.domains import analyses
from nanolens_gateway.results import ResultStore, artefact_protos, identity, result_prefix
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime.bundles import sha256_bytes
from nanolens_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from nanolens_runtime.metrics import StageTimer
from nanolens_runtime.server import Servicer
from nanolens_runtime.settings import setting
from nanolens_runtime.storage import ObjectInfo, ObjectStore
from nanolens_runtime.version import SERVICE_VERSION

log = logging.getLogger("nanolens.gateway")
FULL_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
_KEY_OK = re.compile(r"^[A-Za-z0-9!_.*'()/ +=@,:-]+$")
MAX_URL_SECONDS = 7 * 24 * 3600  # S3's limit for a presigned URL


@dataclass(frozen=True)
class GatewaySettings:
    # each domain service's address is NANOLENS_<DOMAIN>_ADDR (nanolens_gateway.domains)
    max_image_mp: int = setting(
        "NANOLENS_MAX_IMAGE_MP", 16,
        "largest micrograph accepted, megapixels (it travels as one message: keep it under NANOLENS_MAX_MESSAGE_MB)")
    raw_bucket: str = setting("NANOLENS_RAW_BUCKET", "raw", "bucket for uploads and raw data")
    results_bucket: str = setting("NANOLENS_RESULTS_BUCKET", "results", "bucket for results and artefacts")
    max_object_mb: int = setting("NANOLENS_MAX_OBJECT_MB", 2048, "largest input object accepted, MiB")
    max_upload_mb: int = setting("NANOLENS_MAX_UPLOAD_MB", 2048, "largest streamed upload, MiB")
    block_mb: int = setting("NANOLENS_BLOCK_MB", 8, "size of the blocks maps travel to services in, MiB")
    tokens: str = setting("NANOLENS_GATEWAY_TOKENS", "",
                          "JSON list of the tokens callers may send, by SHA-256, with their actions, scopes and "
                          "expiry (from a Secret; `nanolens token create` makes entries); empty: no authentication",
                          secret=True)
    input_buckets: str = setting("NANOLENS_INPUT_BUCKETS", "",
                                 "comma-separated buckets besides NANOLENS_RAW_BUCKET whose objects may be analysed")
    jobs_db: str = setting("NANOLENS_JOBS_DB", "",
                           "the durable jobs' database: a SQLite file (WAL; one gateway replica) or a "
                           "postgresql:// URL (replicas share the work); empty: the job RPCs are off")
    job_concurrency: int = setting("NANOLENS_JOB_CONCURRENCY", 2,
                                   "job items analysed at once per domain service, per gateway")
    job_max_items: int = setting("NANOLENS_JOB_MAX_ITEMS", 100000, "most objects in one job")
    job_lease_seconds: float = setting("NANOLENS_JOB_LEASE_SECONDS", 30.0,
                                       "how long an item stays with a gateway that stopped renewing it (died)")
    job_report_seconds: float = setting("NANOLENS_JOB_REPORT_SECONDS", 10.0,
                                        "how often ended jobs get their report (report.html, index.csv, "
                                        "index.parquet under results/jobs/<job id>/) written; 0: never")
    events_port: int = setting("NANOLENS_EVENTS_PORT", 0,
                               "HTTP port of the bucket-event webhook (POST /events/minio; needs NANOLENS_JOBS_DB); "
                               "0: off")
    event_rules: str = setting("NANOLENS_EVENT_RULES", "",
                               "JSON file of the bucket-event rules: bucket, prefix, suffix -> analysis and options")
    events_token: str = setting("NANOLENS_EVENTS_TOKEN", "",
                                "token the webhook's caller sends (Authorization: Bearer ...); empty: none asked",
                                secret=True)
    events_scan_seconds: float = setting("NANOLENS_EVENTS_SCAN_SECONDS", 600.0,
                                         "reconciliation scan of the rule prefixes every this many seconds; 0: off")
    upload_url_seconds: int = setting("NANOLENS_UPLOAD_URL_MAX_SECONDS", 3600,
                                      "longest lifetime of a presigned upload URL, seconds")
    max_listed: int = setting("NANOLENS_MAX_LISTED", 1000,
                                      "spectra or particles listed one by one in a result")


def validate_key(key: str, field: str) -> str:
    """An object key a user may choose: relative, no '..' segments, printable, <= 1024 bytes."""
    if not key:
        raise InvalidArgument(f"{field} is empty", field=field)
    if len(key.encode()) > 1024:
        raise InvalidArgument(f"{field} is longer than 1024 bytes", field=field)
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidArgument(f"{field} {key!r} must be a relative path without empty, '.' or '..' parts",
                              field=field)
    if not _KEY_OK.match(key):
        raise InvalidArgument(f"{field} {key!r} has characters outside letters, digits and !_.*'()/ +=@,:-",
                              field=field)
    return key


def _safe_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name or "upload.bin"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _default_key(filename: str, prefix: str = "") -> str:
    """A fresh key for a presigned upload (its content is not known yet), under the caller's prefix."""
    return f"{prefix}uploads/{uuid.uuid4().hex}/{_safe_name(filename)}"


def _content_key(sha256: str, filename: str, prefix: str = "") -> str:
    """The key of an upload named by its content: ``<caller's prefix>uploads/<sha256[:32]>/<name>``."""
    return f"{prefix}uploads/{sha256[:32]}/{_safe_name(filename)}"


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, settings: GatewaySettings, store: ObjectStore, clients: dict[str, ServiceClient]):
        self.settings = settings
        self.store = store
        self.results = ResultStore(store, settings.results_bucket)
        self.input_buckets = {settings.raw_bucket, *(b.strip() for b in settings.input_buckets.split(",") if b.strip())}
        self.clients = clients  # service name -> client; a service without an address is absent
        self.jobs = None  # nanolens_gateway.jobs.rpc.JobRpcs once a job database is configured
        # One computation per result identity at a time; the second caller gets the stored result.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.collections = Collections(store, settings.results_bucket)  # SEM embedding collections, searched

    def ensure_buckets(self) -> None:
        for bucket in (self.settings.raw_bucket, self.settings.results_bucket):
            self.store.ensure_bucket(bucket)

    # -- uploads -----------------------------------------------------------------------
    async def _refuse_existing(self, key: str) -> None:
        """Uploads never replace stored data (a check, then the write: S3 has no portable CAS)."""
        if await asyncio.to_thread(self.store.exists, self.settings.raw_bucket, key):
            raise AlreadyExists(f"s3://{self.settings.raw_bucket}/{key} already exists; choose another key")

    async def _same_content(self, key: str, sha256: str, size: int) -> ObjectInfo | None:
        """The stored object at ``key`` if it holds exactly these bytes; None if there is none;
        ALREADY_EXISTS if it holds others (stored data is never replaced)."""
        try:
            info = await asyncio.to_thread(self.store.stat, self.settings.raw_bucket, key)
        except NotFound:
            return None
        same = info.sha256 == sha256 if info.sha256 else (
            info.size == size
            and sha256_bytes(await asyncio.to_thread(self.store.get, info.bucket, key, info.version_id)) == sha256)
        if not same:
            raise AlreadyExists(f"s3://{self.settings.raw_bucket}/{key} already exists with other content; "
                                "choose another key")
        return info

    async def Upload(self, request_iterator, context):
        header = None
        limit = self.settings.max_upload_mb * 1024 * 1024
        digest = hashlib.sha256()
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as buffer:
            async for request in request_iterator:
                part = request.WhichOneof("part")
                if part == "header":
                    if header is not None:
                        raise InvalidArgument("header sent twice", field="header")
                    header = request.header
                    continue
                if header is None:
                    raise InvalidArgument("the first message must be the header", field="header")
                size += len(request.chunk)
                if size > limit:
                    raise ResourceExhausted(
                        f"upload is larger than NANOLENS_MAX_UPLOAD_MB={self.settings.max_upload_mb}")
                digest.update(request.chunk)
                buffer.write(request.chunk)
            if header is None:
                raise InvalidArgument("no header: an empty stream is not an upload", field="header")
            if size == 0:
                raise InvalidArgument("the upload holds no bytes", field="chunk")
            sha256 = digest.hexdigest()
            # Without a key the content names the object, so the same file uploaded again is the same
            # object (same version and ETag): its stored results are found instead of recomputed.
            who, raw = caller(), self.settings.raw_bucket
            key = (validate_key(header.key, "header.key") if header.key
                   else _content_key(sha256, header.filename, who.upload_prefix(raw)))
            who.require("upload", raw, key)
            info = await self._same_content(key, sha256, size)
            stored_already = info is not None
            if info is None:
                buffer.seek(0)
                content_type = header.content_type or "application/octet-stream"
                info = await asyncio.to_thread(self.store.put_stream, self.settings.raw_bucket, key, buffer,
                                               content_type, sha256=sha256)
        log.info("uploaded", extra={"key": key, "bytes": size, "stored_already": stored_already})
        return gateway_pb2.UploadResponse(
            object=common_pb2.ObjectRef(bucket=info.bucket, key=info.key, version_id=info.version_id),
            size_bytes=size, sha256=digest.hexdigest())

    async def CreateUploadUrl(self, request, context):
        who, raw = caller(), self.settings.raw_bucket
        key = validate_key(request.key, "key") if request.key else _default_key(request.filename,
                                                                                who.upload_prefix(raw))
        who.require("upload", raw, key)
        longest = min(self.settings.upload_url_seconds, MAX_URL_SECONDS)
        expires = request.expires_seconds or min(900, longest)
        if not 1 <= expires <= longest:
            raise InvalidArgument(f"expires_seconds must be 1..{longest} (NANOLENS_UPLOAD_URL_MAX_SECONDS), "
                                  f"got {expires}", field="expires_seconds")
        await self._refuse_existing(key)
        url = await asyncio.to_thread(self.store.presigned_put, self.settings.raw_bucket, key, expires)
        return gateway_pb2.CreateUploadUrlResponse(
            url=url, object=common_pb2.ObjectRef(bucket=self.settings.raw_bucket, key=key))

    # -- analyses ----------------------------------------------------------------------
    async def Analyze(self, request, context):
        return await self.run_analysis(request, context)

    async def AnalyzeStream(self, request, context):
        """Analyze with progress events; cancelling the call cancels the analysis (nothing is stored:
        the result document is written last)."""
        events: asyncio.Queue = asyncio.Queue()

        def progress(stage: str, done: int, total: int, found: int, tracks: int) -> None:
            events.put_nowait(gateway_pb2.AnalyzeProgress(stage=stage, done=done, total=total, particles_found=found,
                                                          tracks=tracks))

        task = asyncio.create_task(self.run_analysis(request.request, context, progress))
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                finished, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in finished:
                    getter.cancel()
                    break
                yield gateway_pb2.AnalyzeStreamResponse(progress=getter.result())
            yield gateway_pb2.AnalyzeStreamResponse(result=task.result())
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run_analysis(self, request, context, progress=None):
        """One analysis as Analyze runs it (also the job runner's path): checked, cached by identity, stored."""
        table = analyses()
        if request.analysis not in table:
            raise InvalidArgument(f"analysis {request.analysis} is not one of "
                                  f"{[gateway_pb2.AnalysisKind.Name(k) for k in table]}", field="analysis")
        domain, analysis = table[request.analysis]
        client = self.clients.get(domain.name)
        if client is None:
            raise Unavailable(f"no {domain.name} service is configured for {analysis.name} analyses "
                              f"({domain.addr_setting})")
        name = analysis.name
        bucket = request.input.bucket or self.settings.raw_bucket
        if bucket not in self.input_buckets:
            raise InvalidArgument(f"bucket {bucket!r} is not an input bucket (NANOLENS_RAW_BUCKET or "
                                  f"NANOLENS_INPUT_BUCKETS: {sorted(self.input_buckets)})", field="input.bucket")
        key = validate_key(request.input.key, "input.key")
        caller().require("analyse", bucket, key)
        options = analysis.canonical_options(dict(request.options))  # checked before anything is fetched
        timer = StageTimer()
        with timer.stage("fetch"):
            source = await asyncio.to_thread(self.store.stat, bucket, key, request.input.version_id)
        if source.size > self.settings.max_object_mb * 1024 * 1024:
            raise ResourceExhausted(f"input is {source.size} bytes, above NANOLENS_MAX_OBJECT_MB="
                                    f"{self.settings.max_object_mb}")
        model = await analysis.resolve(client, request.model_name, request.model_version, options)
        ident = identity(source, name, model, options)
        prefix = result_prefix(source, name, ident)
        lock = self._locks[ident]
        try:
            async with lock:
                if not request.force:
                    stored = await asyncio.to_thread(self.results.load, prefix)
                    if stored is not None:
                        return self._response(stored, cached=True)
                remaining = context.time_remaining()
                ctx = AnalysisContext(
                    store=self.store, source=source, model=model, options=options, timer=timer,
                    deadline=None if remaining is None else asyncio.get_running_loop().time() + remaining,
                    block_bytes=self.settings.block_mb * 1024 * 1024, max_listed=self.settings.max_listed,
                    max_pixels=self.settings.max_image_mp * 2**20,  # 16 admits 4096 x 4096
                    progress=progress, results_bucket=self.settings.results_bucket)
                started = time.time()
                outcome = await analysis.run(ctx, client)
                doc = {
                    "job_id": uuid.uuid4().hex,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                    "analysis": name,
                    "input": {"bucket": source.bucket, "key": source.key, "version_id": source.version_id,
                              "etag": source.etag, "size_bytes": source.size},
                    "options": options,
                    "identity": ident,
                    **outcome.summary,
                }
                doc["provenance"] = self._provenance(ctx, domain.name)  # the store stage: metrics only
                with timer.stage("store"):
                    doc = await asyncio.to_thread(self.results.save, prefix, doc, outcome.artefacts)
        finally:
            if not lock.locked() and self._locks.get(ident) is lock:
                del self._locks[ident]
        log.info("analysed", extra={"analysis": name, "key": key, "job_id": doc["job_id"]})
        return self._response(doc, cached=False)

    @staticmethod
    def _provenance(ctx: AnalysisContext, service: str) -> dict:
        upstream = ctx.provenance or common_pb2.Provenance()
        timings = [{"stage": s, "seconds": t} for s, t in ctx.timer.timings]
        timings += [{"stage": f"service.{s}", "seconds": t} for s, t in ctx.service_timings.items()]
        return {"model_name": ctx.model.name, "model_version": ctx.model.version,
                "model_sha256": ctx.model.sha256, "model_training_data": ctx.model.training_data,
                "service_name": upstream.service_name or service,
                "service_version": upstream.service_version, "execution_provider": upstream.execution_provider,
                "gateway_version": SERVICE_VERSION, "timings": timings}

    def _response(self, doc: dict, cached: bool) -> gateway_pb2.AnalyzeResponse:
        prov = dict(doc["provenance"])
        prov.pop("gateway_version", None)
        prov.pop("model_training_data", None)  # the result's, not the service's provenance
        provenance = json_format.ParseDict(prov, common_pb2.Provenance())
        return gateway_pb2.AnalyzeResponse(
            job_id=doc["job_id"], result=common_pb2.ObjectRef(**doc["result"]),
            result_json=json.dumps(doc), artifacts=artefact_protos(doc), cached=cached, provenance=provenance)

    async def Download(self, request, context):
        bucket = request.object.bucket or self.settings.results_bucket
        if bucket != self.settings.results_bucket and bucket not in self.input_buckets:
            raise InvalidArgument(f"bucket {bucket!r} cannot be read through the gateway", field="object.bucket")
        key = validate_key(request.object.key, "object.key")
        caller().require("read", bucket, key)
        info = await asyncio.to_thread(self.store.stat, bucket, key, request.object.version_id)
        chunk = 1 << 20
        for offset in range(0, max(info.size, 1), chunk):
            data = await asyncio.to_thread(self.store.get, bucket, key, info.version_id, offset,
                                           min(chunk, info.size - offset)) if info.size else b""
            if offset == 0:
                yield gateway_pb2.DownloadResponse(chunk=data, size_bytes=info.size, media_type=info.content_type)
            else:
                yield gateway_pb2.DownloadResponse(chunk=data)

    # -- jobs ---------------------------------------------------------------------------
    def _job_rpcs(self):
        if self.jobs is None:
            raise FailedPrecondition("jobs are off on this gateway: set NANOLENS_JOBS_DB")
        return self.jobs

    async def SubmitJob(self, request, context):
        return gateway_pb2.SubmitJobResponse(job=await self._job_rpcs().submit(request))

    async def GetJob(self, request, context):
        return gateway_pb2.GetJobResponse(job=await self._job_rpcs().get(request.job_id, request.items))

    async def WatchJob(self, request, context):
        async for job in self._job_rpcs().watch(request.job_id):
            yield gateway_pb2.WatchJobResponse(job=job)

    async def ListJobs(self, request, context):
        return await self._job_rpcs().list(request)

    async def CancelJob(self, request, context):
        return gateway_pb2.CancelJobResponse(job=await self._job_rpcs().cancel(request.job_id))

    async def RetryJob(self, request, context):
        return gateway_pb2.RetryJobResponse(job=await self._job_rpcs().retry(request.job_id))

    async def SearchCollection(self, request, context):
        from nanolens_gateway.adapters.sem import search

        return await search(self, request, self.collections)

    async def ListModels(self, request, context):
        services = []
        for name, client in sorted(self.clients.items()):
            services.append(gateway_pb2.ServiceModels(service=name, models=await client.catalogue.all(refresh=True)))
        return gateway_pb2.ListModelsResponse(services=services)


def servicer(impl: GatewayServicer) -> Servicer:
    return Servicer(impl, gateway_pb2_grpc.add_GatewayServicer_to_server, FULL_NAME)
