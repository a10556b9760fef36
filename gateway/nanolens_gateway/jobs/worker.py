"""The job runner: claims items from the store and analyses each through the gateway's own
analysis path (the same code as ``Analyze``).

It runs inside every gateway process, beside the RPCs: the gateway already holds the domain
clients, the object store, the result identity and its lock, so an item costs what an
``Analyze`` call costs and nothing is duplicated. Several gateway replicas share one job
database's work through the leases (a replica that dies leaves its leases to expire, and another
takes the items over). Exactly once: a retried item has the same result identity, so an item whose
result was stored before a crash is found in storage instead of being computed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import grpc

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.jobs.store import Item, JobStore
from nanolens_runtime.errors import NanoLensError

log = logging.getLogger("nanolens.jobs")

# Codes that say the input (or the request) is at fault: retrying cannot help.
PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED,
             grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}


class JobRunner:
    """``analyze(request) -> AnalyzeResponse`` is the gateway's analysis; ``domain_of(kind)`` names
    the domain service an analysis kind runs on, for the per-service concurrency limit."""

    def __init__(self, store: JobStore, analyze: Callable[[gateway_pb2.AnalyzeRequest], Awaitable],
                 domain_of: Callable[[int], str], services: int = 1, per_service: int = 2, lease_seconds: float = 30.0,
                 poll_seconds: float = 0.5, max_attempts: int = 5):
        self.store = store
        self.analyze = analyze
        self.domain_of = domain_of
        self.per_service = per_service
        self.capacity = per_service * max(1, services)
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[tuple[str, int], asyncio.Task] = {}
        self.slots: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_service))
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Claim and run items until cancelled; leases are renewed every third of their length."""
        beat = asyncio.get_running_loop().create_task(self._heartbeat())
        try:
            while True:
                free = self.capacity - len(self.running)
                if free > 0:
                    try:
                        items = await asyncio.to_thread(self.store.claim, self.owner, free, self.lease_seconds)
                    except Exception:  # a locked or unreachable database: try again at the next poll
                        log.exception("claiming job items failed")
                        items = []
                    for item in items:
                        task = asyncio.get_running_loop().create_task(self._run_item(item))
                        self.running[(item.job_id, item.idx)] = task
                        task.add_done_callback(lambda _, k=(item.job_id, item.idx): self._ended(k))
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            beat.cancel()
            for task in list(self.running.values()):
                task.cancel()

    def _ended(self, key: tuple[str, int]) -> None:
        self.running.pop(key, None)
        self.wake.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.owner, self.lease_seconds)
            except Exception:
                log.exception("renewing job leases failed")

    async def _run_item(self, item: Item) -> None:
        job = await asyncio.to_thread(self.store.get, item.job_id)
        if job is None or await asyncio.to_thread(self.store.is_cancelled, item.job_id):
            await asyncio.to_thread(self.store.cancelled, item, self.owner)
            return
        async with self.slots[self.domain_of(job.analysis)]:  # at most per_service calls to one service
            await self._analyse(item, job)

    async def _analyse(self, item: Item, job) -> None:
        request = gateway_pb2.AnalyzeRequest(
            input=common_pb2.ObjectRef(bucket=item.bucket, key=item.key, version_id=item.version_id),
            analysis=job.analysis, options=job.options, model_name=job.model_name, model_version=job.model_version)
        try:
            response = await self.analyze(request)
        except NanoLensError as exc:
            await self._failure(item, exc.code, exc.message)
        except grpc.aio.AioRpcError as exc:
            await self._failure(item, exc.code(), exc.details() or "")
        except asyncio.CancelledError:
            raise  # the gateway is stopping: the lease expires and another worker takes the item
        except Exception as exc:  # a bug or storage gone: retried, then failed with its name
            log.exception("job item failed", extra={"job_id": item.job_id, "key": item.key})
            await self._failure(item, grpc.StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        else:
            await asyncio.to_thread(self.store.done, item, self.owner, response.result.bucket, response.result.key)
            log.info("job item done", extra={"job_id": item.job_id, "key": item.key, "cached": response.cached})

    async def _failure(self, item: Item, code: grpc.StatusCode, message: str) -> None:
        error = f"{code.name}: {message}"
        if code in PERMANENT or item.attempts >= self.max_attempts:
            await asyncio.to_thread(self.store.failed, item, self.owner, error)
            log.warning("job item failed", extra={"job_id": item.job_id, "key": item.key, "error": error})
        else:  # a service down or restarting, storage unreachable: back off and try again
            delay = min(30.0, 0.5 * 2 ** item.attempts)
            await asyncio.to_thread(self.store.later, item, self.owner, error, delay)
            log.info("job item retried later", extra={"job_id": item.job_id, "key": item.key, "error": error,
                                                       "delay_seconds": delay})
