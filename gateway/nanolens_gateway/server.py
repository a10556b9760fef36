"""The gateway's RPCs: uploads, analyses, downloads, jobs, and the RPCs the domains add.

It holds no model and names no domain: analyses run in the data plane
(:class:`nanolens_gateway.dataplane.DataPlane`), the domains' own RPCs come from the registry
(:func:`nanolens_gateway.domains.domain_rpcs`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import tempfile

import grpc

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_gateway.auth import caller
from nanolens_gateway.dataplane import DataPlane
from nanolens_gateway.domains import DomainRpc, domain_rpcs
from nanolens_gateway.inputs import content_upload_key, fresh_upload_key, validate_key
from nanolens_gateway.settings import GatewaySettings
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime.bundles import sha256_bytes
from nanolens_runtime.errors import (
    INTERNAL_MESSAGE,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NanoLensError,
    NotFound,
    ResourceExhausted,
)
from nanolens_runtime.server import Servicer
from nanolens_runtime.storage import ObjectInfo, ObjectStore

log = logging.getLogger("nanolens.gateway")
FULL_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
MAX_URL_SECONDS = 7 * 24 * 3600  # S3's limit for a presigned URL
SINGLE_PUT_BYTES = 8 << 20  # uploads up to this are stored in one PUT, larger ones in parts


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, settings: GatewaySettings, store: ObjectStore, clients: dict[str, ServiceClient]):
        self.settings = settings
        self.store = store
        self.clients = clients  # service name -> client; a service without an address is absent
        self.plane = DataPlane(settings, store, clients)
        self.jobs = None  # nanolens_gateway.jobs.rpc.JobRpcs once a job database is configured
        for name, rpc in domain_rpcs().items():  # the domains' own RPCs, served as methods of this servicer
            setattr(self, name, self._domain_method(rpc))

    def _domain_method(self, rpc: DomainRpc):
        async def method(request, context):
            return await rpc.handler(self.plane, request)

        method.__name__ = rpc.name
        return method

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

    async def _store_upload(self, header: gateway_pb2.UploadHeader, data, sha256: str,
                            size: int) -> tuple[ObjectInfo, bool]:
        """Store uploaded bytes (``data``, a file at any position) in the raw bucket under the header's key,
        or without one under a key named by their content; (the object, whether it was stored already).
        Upload and AnalyzeMany's inline items both come this way."""
        # Without a key the content names the object, so the same file uploaded again is the same
        # object (same version and ETag): its stored results are found instead of recomputed.
        who, raw = caller(), self.settings.raw_bucket
        key = (validate_key(header.key, "header.key") if header.key
               else content_upload_key(sha256, header.filename, who.upload_prefix(raw)))
        who.require("upload", raw, key)
        info = await self._same_content(key, sha256, size)
        if info is not None:
            return info, True
        data.seek(0)
        content_type = header.content_type or "application/octet-stream"
        if size <= SINGLE_PUT_BYTES:  # one request instead of a multipart upload's three and a HEAD
            return await asyncio.to_thread(self.store.put, raw, key, data.read(), content_type, sha256=sha256), False
        return await asyncio.to_thread(self.store.put_stream, raw, key, data, content_type, sha256=sha256), False

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
            info, stored_already = await self._store_upload(header, buffer, digest.hexdigest(), size)
        log.info("uploaded", extra={"key": info.key, "bytes": size, "stored_already": stored_already})
        return gateway_pb2.UploadResponse(
            object=common_pb2.ObjectRef(bucket=info.bucket, key=info.key, version_id=info.version_id),
            size_bytes=size, sha256=digest.hexdigest())

    async def CreateUploadUrl(self, request, context):
        who, raw = caller(), self.settings.raw_bucket
        key = validate_key(request.key, "key") if request.key else fresh_upload_key(request.filename,
                                                                                who.upload_prefix(raw))
        who.require("upload", raw, key)
        longest = min(self.settings.upload_url_seconds, MAX_URL_SECONDS)
        expires = request.expires_seconds or min(900, longest)
        if not 1 <= expires <= longest:
            raise InvalidArgument(f"expires_seconds must be 1..{longest} (NANOLENS_UPLOAD_URL_MAX_SECONDS), "
                                  f"got {expires}", field="expires_seconds")
        await self._refuse_existing(key)
        url = await asyncio.to_thread(self.store.presigned_put, self.settings.raw_bucket, key, expires, True)
        return gateway_pb2.CreateUploadUrlResponse(
            url=url, object=common_pb2.ObjectRef(bucket=self.settings.raw_bucket, key=key),
            headers={"If-None-Match": "*"})  # create only: analysed data is never replaced through the URL

    # -- analyses ----------------------------------------------------------------------
    async def Analyze(self, request, context):
        return await self.plane.analyse(request, context.time_remaining())

    async def AnalyzeStream(self, request, context):
        """Analyze with progress events; cancelling the call cancels the analysis (nothing is stored:
        the result document is written last)."""
        events: asyncio.Queue = asyncio.Queue()

        def progress(stage: str, done: int, total: int, counts: dict[str, int]) -> None:
            events.put_nowait(gateway_pb2.AnalyzeProgress(stage=stage, done=done, total=total, counts=counts))

        task = asyncio.create_task(self.plane.analyse(request.request, context.time_remaining(), progress))
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

    async def AnalyzeMany(self, request_iterator, context):
        """Items analysed concurrently as they arrive (at most NANOLENS_MANY_CONCURRENCY at once: the
        request stream is read no further meanwhile), each answered as it finishes with its result or
        its own error. Cancelling the call cancels the items in flight (nothing of theirs is stored)."""
        answers: asyncio.Queue = asyncio.Queue()
        slots = asyncio.Semaphore(max(1, self.settings.many_concurrency))
        running: set[asyncio.Task] = set()

        async def item(message: gateway_pb2.AnalyzeManyRequest, ids_seen: bool) -> None:
            try:
                if ids_seen:
                    raise InvalidArgument(f"id {message.id!r} names an earlier item of this call too", field="id")
                result = await self._many_item(message, context.time_remaining())
                answers.put_nowait(gateway_pb2.AnalyzeManyResponse(id=message.id, result=result))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the item's failure, not the call's
                answers.put_nowait(gateway_pb2.AnalyzeManyResponse(id=message.id, error=item_error(exc)))
            finally:
                slots.release()

        async def read() -> None:
            ids: set[str] = set()
            try:
                async for message in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(item(message, message.id in ids))
                    ids.add(message.id)
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.gather(*running)
                answers.put_nowait(None)  # every item answered
            except Exception as exc:  # the request stream broke: the call fails
                answers.put_nowait(exc)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, Exception):
                    raise answer
                yield answer
        finally:
            for task in (reader, *running):
                task.cancel()
            await asyncio.gather(reader, *running, return_exceptions=True)

    async def _many_item(self, message: gateway_pb2.AnalyzeManyRequest,
                         deadline_s: float | None) -> gateway_pb2.AnalyzeResponse:
        """One item of AnalyzeMany: its inline bytes stored as an upload without a key (the result's
        input, named by its sha256), then analysed from the bytes in hand."""
        request = message.request
        if not message.HasField("inline"):
            return await self.plane.analyse(request, deadline_s)
        inline = message.inline
        if request.HasField("input"):
            raise InvalidArgument("an item names request.input or carries inline bytes, not both", field="inline")
        if not inline.filename:
            raise InvalidArgument("inline items need a file name: its extension tells the reader the format",
                                  field="inline.filename")
        if not inline.data:
            raise InvalidArgument("the inline item holds no bytes", field="inline.data")
        if len(inline.data) > self.settings.max_inline_kb * 1024:
            raise InvalidArgument(f"the inline item is {len(inline.data)} bytes, more than NANOLENS_MAX_INLINE_KB="
                                  f"{self.settings.max_inline_kb} KiB: upload it and name it in request.input",
                                  field="inline.data")
        header = gateway_pb2.UploadHeader(filename=inline.filename)
        info, _ = await self._store_upload(header, io.BytesIO(inline.data), hashlib.sha256(inline.data).hexdigest(),
                                           len(inline.data))
        named = gateway_pb2.AnalyzeRequest()
        named.CopyFrom(request)
        named.input.CopyFrom(common_pb2.ObjectRef(bucket=info.bucket, key=info.key, version_id=info.version_id))
        return await self.plane.analyse(named, deadline_s, stored=(info, inline.data))

    async def Download(self, request, context):
        bucket, key, version = self.plane.buckets.readable_object(request.object, "object")
        await self._require_read(bucket, key)
        info = await asyncio.to_thread(self.store.stat, bucket, key, version)
        chunk = 1 << 20
        for offset in range(0, max(info.size, 1), chunk):
            data = await asyncio.to_thread(self.store.get, bucket, key, info.version_id, offset,
                                           min(chunk, info.size - offset)) if info.size else b""
            if offset == 0:
                yield gateway_pb2.DownloadResponse(chunk=data, size_bytes=info.size, media_type=info.content_type)
            else:
                yield gateway_pb2.DownloadResponse(chunk=data)

    async def _require_read(self, bucket: str, key: str) -> None:
        """Read access to ``bucket/key``; a job's report and index (``results/jobs/<job id>/...``, written
        under no input's path) are the job's owner's to read, whatever the scopes."""
        who = caller()
        parts = key.split("/")
        if (bucket == self.settings.results_bucket and parts[0] == "jobs" and len(parts) > 2
                and self.jobs is not None and not who.may("read", bucket, key)):
            who.objects.append(f"{bucket}/{key}")
            await self.jobs.get(parts[1])  # NOT_FOUND unless the caller may see the job (a scoped one: its own)
            return
        who.require("read", bucket, key)

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

    async def ListModels(self, request, context):
        services = []
        for name, client in sorted(self.clients.items()):
            services.append(gateway_pb2.ServiceModels(service=name, models=await client.catalogue.all(refresh=True)))
        return gateway_pb2.ListModelsResponse(services=services)


def item_error(exc: Exception) -> gateway_pb2.ItemError:
    """One AnalyzeMany item's failure as the interceptor would send a call's (a bug: INTERNAL, generic)."""
    if isinstance(exc, NanoLensError):
        field = getattr(exc, "field", "")
        if field and not field.startswith(("inline", "id")):
            field = f"request.{field}"  # the AnalyzeRequest's fields sit under `request` in the item
        return gateway_pb2.ItemError(code=exc.code.name, message=exc.message, field=field)
    if isinstance(exc, grpc.aio.AioRpcError):  # a domain service's refusal, passed on
        return gateway_pb2.ItemError(code=exc.code().name, message=exc.details() or "")
    log.error("unhandled error in an AnalyzeMany item", exc_info=exc)
    return gateway_pb2.ItemError(code="INTERNAL", message=INTERNAL_MESSAGE)


def servicer(impl: GatewayServicer) -> Servicer:
    return Servicer(impl, gateway_pb2_grpc.add_GatewayServicer_to_server, FULL_NAME)
