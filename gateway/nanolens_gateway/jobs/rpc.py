"""The job RPCs of the gateway: submit, get, watch, list, cancel, retry."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.auth import caller
from nanolens_gateway.inputs import validate_prefix
from nanolens_gateway.jobs.store import STATES, JobRecord, JobStore, db_call
from nanolens_runtime.errors import InvalidArgument, NotFound, ResourceExhausted


def job_proto(record: JobRecord) -> gateway_pb2.Job:
    c = record.counts
    job = gateway_pb2.Job(
        job_id=record.id, analysis=record.analysis, options=record.options, state=record.state,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)), total=record.total,
        pending=c["pending"], running=c["running"], done=c["done"], failed=c["failed"], cancelled=c["cancelled"],
        submitted_by=record.submitted_by)
    for item in record.items:
        job.items.append(gateway_pb2.JobItem(
            object=common_pb2.ObjectRef(bucket=item.bucket, key=item.key, version_id=item.version_id),
            state=item.state, attempts=item.attempts, error=item.error,
            result=common_pb2.ObjectRef(bucket=item.result_bucket, key=item.result_key) if item.result_key else None))
    return job


class JobRpcs:
    """``plane``: the gateway's data plane (its store, buckets and routes to the domain services)."""

    def __init__(self, plane, store: JobStore, max_items: int, wake=None):
        self.plane = plane
        self.store = store
        self.max_items = max_items
        self.wake = wake or (lambda: None)
        self._reads: dict[str, tuple[float, asyncio.Future]] = {}  # job id -> (when, its latest read)

    async def submit(self, request: gateway_pb2.SubmitJobRequest) -> gateway_pb2.Job:
        _, analysis, _ = self.plane.route(request.analysis)  # refused now, not item by item later
        options = analysis.canonical_options(dict(request.options))  # refused now, not item by item later
        if bool(request.objects) == bool(request.prefix):
            raise InvalidArgument("name the objects or a prefix (one of them)", field="objects")
        who = caller()
        objects: list[tuple[str, str, str]] = []
        if request.prefix:
            bucket = self.plane.buckets.input_bucket(request.bucket, "bucket")
            prefix = validate_prefix(request.prefix, "prefix")
            who.require("submit", bucket, prefix)
            keys = await asyncio.to_thread(self.plane.store.list, bucket, prefix)
            # a prefix is not a folder ("labA" also lists "labAB/..."): each key is checked on its own
            keys = [k for k in keys if not k.endswith("/") and who.may("submit", bucket, k)]
            if not keys:
                raise NotFound(f"no object under s3://{bucket}/{prefix}", "prefix", prefix)
            objects = [(bucket, k, "") for k in sorted(keys)]
        else:
            for i, ref in enumerate(request.objects):
                bucket, key, version = self.plane.buckets.input_object(ref, f"objects[{i}]")
                who.require("submit", bucket, key)
                objects.append((bucket, key, version))
        if len(objects) > self.max_items:
            raise ResourceExhausted(f"{len(objects)} objects are more than NANOLENS_JOB_MAX_ITEMS={self.max_items} "
                                    "in one job: submit narrower prefixes")
        job_id = await db_call(self.store.create, request.analysis, options, objects,
                                         request.model_name, request.model_version, who.name)
        self.wake()
        return job_proto(await db_call(self.store.get, job_id))

    async def _record(self, job_id: str, items: bool = False) -> JobRecord:
        if not job_id:
            raise InvalidArgument("job_id is empty", field="job_id")
        record = await db_call(self.store.get, job_id, items)
        if record is None:
            raise NotFound(f"no job {job_id!r}", "job", job_id)
        who = caller()
        if who.token is not None and who.token.scopes and record.submitted_by != who.name:
            raise NotFound(f"no job {job_id!r}", "job", job_id)  # scoped callers see their own jobs only
        return record

    async def get(self, job_id: str, items: bool = False) -> gateway_pb2.Job:
        return job_proto(await self._record(job_id, items))

    async def watch(self, job_id: str, poll: float = 0.25):
        record = await self._record(job_id)  # the caller's access, checked once
        last = None
        while True:
            seen = (record.state, tuple(sorted(record.counts.items())))
            if seen != last:
                yield job_proto(record)
                last = seen
            if record.state in ("done", "failed", "cancelled"):
                return
            await asyncio.sleep(poll)
            record = await self._shared_read(job_id, poll)

    async def _shared_read(self, job_id: str, fresh: float) -> JobRecord:
        """The job as read from the database at most ``fresh`` s ago: watchers of one job share
        one read per poll, however many ``WatchJob`` streams are open."""
        now = asyncio.get_running_loop().time()
        read = self._reads.get(job_id)
        if read is None or now - read[0] >= fresh:
            for stale in [k for k, (t, _) in self._reads.items() if now - t >= fresh]:
                del self._reads[stale]
            read = self._reads[job_id] = (now, asyncio.ensure_future(db_call(self.store.get, job_id)))
        record = await asyncio.shield(read[1])  # one watcher leaving does not cancel the others' read
        if record is None:
            raise NotFound(f"no job {job_id!r}", "job", job_id)
        return record

    async def list(self, request: gateway_pb2.ListJobsRequest) -> gateway_pb2.ListJobsResponse:
        if request.state and request.state not in STATES:
            raise InvalidArgument(f"state {request.state!r} is not one of {list(STATES)}", field="state")
        size = request.page_size or 50
        if not 1 <= size <= 1000:
            raise InvalidArgument(f"page_size must be 1..1000, got {size}", field="page_size")
        before = None
        if request.page_token:
            try:
                created, job_id = json.loads(base64.urlsafe_b64decode(request.page_token))
                before = (float(created), str(job_id))
            except (ValueError, TypeError):
                raise InvalidArgument("page_token is not one this gateway gave", field="page_token") from None
        who = caller()
        records = await db_call(self.store.list, request.state, size + 1, before)
        if who.token is not None and who.token.scopes:
            records = [r for r in records if r.submitted_by == who.name]
        response = gateway_pb2.ListJobsResponse(jobs=[job_proto(r) for r in records[:size]])
        if len(records) > size:
            last = records[size - 1]
            response.next_page_token = base64.urlsafe_b64encode(json.dumps([last.created, last.id]).encode()).decode()
        return response

    async def cancel(self, job_id: str) -> gateway_pb2.Job:
        await self._record(job_id)
        await db_call(self.store.cancel, job_id)
        return job_proto(await self._record(job_id))

    async def retry(self, job_id: str) -> gateway_pb2.Job:
        await self._record(job_id)
        await db_call(self.store.retry, job_id)
        self.wake()
        return job_proto(await self._record(job_id))
