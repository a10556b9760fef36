"""The data plane: one analysis, from a request to its stored result, with no transport in it.

``Analyze``, ``AnalyzeStream`` and the job runner all call :meth:`DataPlane.analyse`; the first
two pass the caller's deadline, the runner an item's (``NANOLENS_JOB_ITEM_SECONDS``). The caller's
identity for the object checks is the one the auth interceptor (or the job runner, for a job's
owner) put in context.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.auth import caller
from nanolens_gateway.code_identity import adapter_sha256
from nanolens_gateway.context import AnalysisContext, Progress
from nanolens_gateway.domains import Analysis, Domain, analyses
from nanolens_gateway.inputs import Buckets
from nanolens_gateway.results import ResultStore, artefact_protos, identity, result_prefix
from nanolens_gateway.settings import GatewaySettings
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from nanolens_runtime.metrics import StageTimer
from nanolens_runtime.storage import ObjectInfo, ObjectStore
from nanolens_runtime.version import SERVICE_VERSION

log = logging.getLogger("nanolens.gateway")
#: inputs up to this size are read whole with their identity (one GET, not a HEAD then a GET); a
#: stored result found for a larger input has cost this much reading in vain
SMALL_INPUT = 256 << 10


class DataPlane:
    """What analyses share: settings, object store, buckets, the domain services' clients, stored
    results, and per-domain state (an adapter's caches, such as SEM's collections)."""

    def __init__(self, settings: GatewaySettings, store: ObjectStore, clients: dict[str, ServiceClient]):
        self.settings = settings
        self.store = store
        self.buckets = Buckets(settings)
        self.results = ResultStore(store, settings.results_bucket)
        self.clients = clients  # service name -> client; a service without an address is absent
        # One computation per result identity at a time; the second caller gets the stored result.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._state: dict[str, Any] = {}

    def state(self, name: str, make: Callable[[DataPlane], Any]) -> Any:
        """A domain's state on this gateway (made once, by ``make``)."""
        if name not in self._state:
            self._state[name] = make(self)
        return self._state[name]

    def route(self, kind: int, field: str = "analysis") -> tuple[Domain, Analysis, ServiceClient]:
        """The domain, analysis and client of an AnalysisKind; refused when unknown or when this
        gateway has no address for the domain's service."""
        table = analyses()
        if kind not in table:
            raise InvalidArgument(f"analysis {kind} is not one of {[a.name for _, a in table.values()]}", field=field)
        domain, analysis = table[kind]
        client = self.clients.get(domain.name)
        if client is None:
            raise FailedPrecondition(f"no {domain.name} service is configured on this gateway for {analysis.name} "
                                     f"analyses ({domain.addr_setting})")
        return domain, analysis, client

    async def analyse(self, request: gateway_pb2.AnalyzeRequest, deadline_s: float | None = None,
                      progress: Progress | None = None,
                      stored: tuple[ObjectInfo, bytes] | None = None) -> gateway_pb2.AnalyzeResponse:
        """Checked, answered from the stored result when its identity has one, else computed and stored.
        ``stored``: the input object the request names as just written, with its bytes (analysed
        from those: not fetched again)."""
        domain, analysis, client = self.route(request.analysis)
        bucket, key, version = self.buckets.input_object(request.input, "input")
        caller().require("analyse", bucket, key)
        options = analysis.canonical_options(dict(request.options))  # checked before anything is fetched
        timer = StageTimer()
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        if stored is not None:
            source, data = stored
            if (source.bucket, source.key, source.version_id) != (bucket, key, version):
                raise RuntimeError(f"the bytes given are of s3://{source.bucket}/{source.key}, not of the input")
        else:  # a small input comes whole with what identifies it; a larger one is read by its analysis
            with timer.stage("fetch"):
                source, data = await asyncio.to_thread(self.store.read_small, bucket, key, version, SMALL_INPUT)
        if source.size > self.settings.max_object_mb * 1024 * 1024:
            raise ResourceExhausted(f"input is {source.size} bytes, above NANOLENS_MAX_OBJECT_MB="
                                    f"{self.settings.max_object_mb}")
        model = await analysis.resolve(client, request.model_name, request.model_version, options)
        adapter_code = adapter_sha256(domain.adapter)
        ident = identity(source, analysis.name, model, options, adapter_code)
        prefix = result_prefix(source, analysis.name, ident)
        lock = self._locks[ident]
        try:
            async with lock:
                if not request.force:
                    stored = await asyncio.to_thread(self.results.load, prefix)
                    if stored is not None:
                        return response(stored, cached=True)
                ctx = AnalysisContext(
                    store=self.store, source=source, model=model, options=options, timer=timer, deadline=deadline,
                    block_bytes=self.settings.block_mb * 1024 * 1024, max_listed=self.settings.max_listed,
                    max_pixels=self.settings.max_image_mp * 2**20,  # 16 admits 4096 x 4096
                    progress=progress, results_bucket=self.settings.results_bucket, data=data,
                    by_reference_bytes=self.settings.by_reference_mb * 2**20)
                started = time.time()
                outcome = await analysis.run(ctx, client)
                doc = {
                    "job_id": uuid.uuid4().hex,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                    "analysis": analysis.name,
                    "input": {"bucket": source.bucket, "key": source.key, "version_id": source.version_id,
                              "etag": source.etag, "size_bytes": source.size},
                    "options": options,
                    "identity": ident,
                    **outcome.summary,
                }
                doc["provenance"] = provenance(ctx, domain.name, adapter_code)  # the store stage: metrics only
                with timer.stage("store"):
                    doc = await self.results.save(prefix, doc, outcome.artefacts)
        finally:
            if not lock.locked() and self._locks.get(ident) is lock:
                del self._locks[ident]
        log.info("analysed", extra={"analysis": analysis.name, "key": key, "job_id": doc["job_id"]})
        return response(doc, cached=False)


def provenance(ctx: AnalysisContext, service: str, adapter_code: str) -> dict:
    """The result document's provenance: the model, the code on both sides, the stage times."""
    upstream = ctx.provenance or common_pb2.Provenance()
    timings = [{"stage": s, "seconds": t} for s, t in ctx.timer.timings]
    timings += [{"stage": f"service.{s}", "seconds": t} for s, t in ctx.service_timings.items()]
    return {"model_name": ctx.model.name, "model_version": ctx.model.version,
            "model_sha256": ctx.model.sha256, "model_training_data": ctx.model.training_data,
            "service_name": upstream.service_name or service,
            "service_version": upstream.service_version, "execution_provider": upstream.execution_provider,
            "code_sha256": ctx.model.code_sha256, "adapter_code_sha256": adapter_code,
            "gateway_version": SERVICE_VERSION, "timings": timings}


#: provenance fields of the result document that are the gateway's, not the service's message
_GATEWAY_ONLY = ("gateway_version", "model_training_data", "adapter_code_sha256")


def response(doc: dict, cached: bool) -> gateway_pb2.AnalyzeResponse:
    """The AnalyzeResponse of a stored or new result document."""
    prov = {k: v for k, v in doc["provenance"].items() if k not in _GATEWAY_ONLY}
    return gateway_pb2.AnalyzeResponse(
        job_id=doc["job_id"], result=common_pb2.ObjectRef(**doc["result"]),
        result_json=json.dumps(doc), artifacts=artefact_protos(doc), cached=cached,
        provenance=json_format.ParseDict(prov, common_pb2.Provenance()))
