"""The job runner: claims items from the store and analyses each through the gateway's own
analysis path (the same code as ``Analyze``).

It runs inside every gateway process, beside the RPCs: the gateway already holds the domain
clients, the object store, the result identity and its lock, so an item costs what an
``Analyze`` call costs and nothing is duplicated. Several gateway replicas share one job
database's work through the leases (a replica that dies leaves its leases to expire, and another
takes the items over). Exactly once: a retried item has the same result identity, so an item whose
result was stored before a crash is found in storage instead of being computed again.

What an item's failure costs depends on whose fault it is. A service or storage that is away
(UNAVAILABLE) pauses the item, backing off up to ``backoff_max_seconds``, for as long as
``outage_seconds``, without spending its attempts (and as soon as the domain service's health
check answers again, paused items of its domain are due at once); its own failures spend one attempt each
(``max_attempts``), and a refusal (INVALID_ARGUMENT, ...) fails it at once. An item has
``item_seconds`` to finish (a service that froze on it, taking the call and never answering, must
not hold it forever): past that it is an outage if its service no longer answers its health check
(a stopped or wedged process), else its own failure (the service hangs on this input, or the input
needs longer), which spends an attempt. An item is claimed only
when its domain has a free slot, so a crash strands no item that was merely waiting; an item whose
worker died runs alone afterwards, so that the next death is its own, and after ``max_crashes``
deaths it is failed as poison.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable

import grpc

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.jobs.store import Item, JobStore, db_call
from nanolens_runtime.errors import NanoLensError

log = logging.getLogger("nanolens.jobs")

# Codes that say the input (or the request) is at fault: retrying cannot help.
PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED,
             grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}
# Codes of a service or storage that is away: not the input's fault.
OUTAGE = {grpc.StatusCode.UNAVAILABLE}
# After an item's deadline (passed on to the domain service, whose DEADLINE_EXCEEDED comes first),
# this long again at most before the item is stopped: the deadline does not reach what the data
# plane does in threads (storage reads).
HARD_STOP_SECONDS = 5.0


class JobRunner:
    """``analyze(request, deadline_s) -> AnalyzeResponse`` is the gateway's analysis; ``domains`` maps
    each analysis kind to the domain service it runs on, for the per-service concurrency limit;
    ``healthy(domain)`` says whether that service answers its health check now."""

    def __init__(self, store: JobStore, analyze: Callable[[gateway_pb2.AnalyzeRequest], Awaitable],
                 domains: dict[int, str], per_service: int = 2, lease_seconds: float = 30.0,
                 poll_seconds: float = 0.5, max_attempts: int = 5, max_crashes: int = 3,
                 outage_seconds: float = 3600.0, backoff_max_seconds: float = 60.0, item_seconds: float = 600.0,
                 healthy: Callable[[str], Awaitable[bool]] | None = None):
        self.store = store
        self.analyze = analyze
        self.domains = domains
        self.healthy = healthy
        self.watching: dict[str, asyncio.Task] = {}  # domains whose return is awaited
        self.kinds: defaultdict[str, list[int]] = defaultdict(list)
        for kind, domain in sorted(domains.items()):
            self.kinds[domain].append(kind)
        self.per_service = per_service
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.max_crashes = max_crashes
        self.outage_seconds = outage_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.item_seconds = item_seconds
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[tuple[str, int], asyncio.Task] = {}
        self.busy: Counter[str] = Counter()  # items running per domain
        self.alone: tuple[str, int] | None = None  # a suspect item running with nothing beside it
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Claim and run items until cancelled; leases are renewed every third of their length."""
        beat = asyncio.get_running_loop().create_task(self._heartbeat())
        try:
            while True:
                try:
                    await self._claim()
                except Exception:  # a locked or unreachable database: try again at the next poll
                    log.exception("claiming job items failed")
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            beat.cancel()
            for task in [*self.running.values(), *self.watching.values()]:
                task.cancel()
            try:  # stopping is not the items' fault: hand them back now instead of at lease expiry
                self.store.release(self.owner)
            except Exception:
                log.exception("handing back job items failed")

    async def _claim(self) -> None:
        if self.alone is not None:
            return
        if not self.running:  # idle: an item whose worker died before gets the gateway to itself
            suspects = await db_call(self.store.claim, self.owner, 1, self.lease_seconds,
                                               suspects=True, max_crashes=self.max_crashes)
            if suspects:
                self.alone = (suspects[0].job_id, suspects[0].idx)
                self._start(suspects[0], "")
                return
        for domain, kinds in self.kinds.items():
            free = self.per_service - self.busy[domain]
            if free > 0:
                for item in await db_call(self.store.claim, self.owner, free, self.lease_seconds,
                                                    analyses=kinds):
                    self._start(item, domain)

    def _start(self, item: Item, domain: str) -> None:
        key = (item.job_id, item.idx)
        self.busy[domain] += 1
        task = asyncio.get_running_loop().create_task(self._run_item(item))
        self.running[key] = task
        task.add_done_callback(lambda done: self._ended(key, domain, done))

    def _ended(self, key: tuple[str, int], domain: str, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("job item ended without an outcome", exc_info=task.exception(),
                      extra={"job_id": key[0], "idx": key[1]})
        self.running.pop(key, None)
        self.busy[domain] -= 1
        if self.alone == key:
            self.alone = None
        self.wake.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:  # only what still runs: an item whose task ended unrecorded (a bug) is let go to expire
                await db_call(self.store.heartbeat, self.owner, self.lease_seconds, list(self.running))
            except Exception:
                log.exception("renewing job leases failed")

    async def _run_item(self, item: Item) -> None:
        job = await db_call(self.store.get, item.job_id)
        if job is None or await db_call(self.store.is_cancelled, item.job_id):
            await db_call(self.store.cancelled, item, self.owner)
            return
        await self._analyse(item, job)

    def _watch(self, domain: str) -> None:
        if self.healthy is not None and domain and domain not in self.watching:
            self.watching[domain] = asyncio.get_running_loop().create_task(self._await_return(domain))

    async def _await_return(self, domain: str, every: float = 1.0) -> None:
        """Poll the service's health while it is away; once back, its paused items are due now
        (not at the end of a backoff up to a minute). A service that answers at once was not the
        one away (storage was): the backoff stands."""
        try:
            if await self.healthy(domain):
                return
            while True:
                await asyncio.sleep(every)
                if await self.healthy(domain):
                    break
            resumed = await db_call(self.store.resume, self.kinds[domain])
            log.info("service back: paused job items resumed", extra={"service": domain, "items": resumed})
            self.wake.set()
        except Exception:  # the job database unreachable: the items' backoff stands
            log.exception("resuming paused job items failed", extra={"service": domain})
        finally:
            self.watching.pop(domain, None)

    async def _analyse(self, item: Item, job) -> None:
        request = gateway_pb2.AnalyzeRequest(
            input=common_pb2.ObjectRef(bucket=item.bucket, key=item.key, version_id=item.version_id),
            analysis=job.analysis, options=job.options, model_name=job.model_name, model_version=job.model_version)
        try:
            async with asyncio.timeout(self.item_seconds + min(HARD_STOP_SECONDS, self.item_seconds)):
                response = await self.analyze(request, self.item_seconds)
        except TimeoutError:
            await self._failure(item, grpc.StatusCode.DEADLINE_EXCEEDED, "no answer", job.analysis)
        except NanoLensError as exc:
            await self._failure(item, exc.code, exc.message, job.analysis)
        except grpc.aio.AioRpcError as exc:
            await self._failure(item, exc.code(), exc.details() or "", job.analysis)
        except asyncio.CancelledError:
            raise  # the gateway is stopping: run() hands the item back
        except Exception as exc:  # a bug: retried as the input's failure, then failed with its name
            log.exception("job item failed", extra={"job_id": item.job_id, "key": item.key})
            await self._failure(item, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}", job.analysis)
        else:
            await db_call(self.store.done, item, self.owner, response.result.bucket, response.result.key)
            log.info("job item done", extra={"job_id": item.job_id, "key": item.key, "cached": response.cached})

    async def _failure(self, item: Item, code: grpc.StatusCode, message: str, analysis: int) -> None:
        domain = self.domains.get(analysis, "")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if self.healthy is None or not domain or await self.healthy(domain):
                message = (f"no result within NANOLENS_JOB_ITEM_SECONDS={self.item_seconds:g} while the "
                           f"{domain or 'domain'} service answered its health check: it hangs on this input, or "
                           f"the input needs longer ({message})")
            else:
                code = grpc.StatusCode.UNAVAILABLE
                message = f"the {domain} service took the call and stopped answering, its health check too ({message})"
        error = f"{code.name}: {message}"
        extra = {"job_id": item.job_id, "key": item.key, "error": error}
        if code in OUTAGE:
            away = time.time() - item.outage_since if item.outage_since else 0.0
            if away < self.outage_seconds:  # waited for, backing off as the outage lasts, attempt given back
                delay = min(self.backoff_max_seconds, max(1.0, away))
                await db_call(self.store.later, item, self.owner, error, delay, outage=True)
                log.info("job item paused: a service or storage is away", extra={**extra, "delay_seconds": delay})
                self._watch(domain)
                return
            error += f" (away {away:.0f} s, longer than NANOLENS_JOB_OUTAGE_SECONDS={self.outage_seconds:g})"
        elif code not in PERMANENT and item.attempts < self.max_attempts:
            delay = min(self.backoff_max_seconds, 0.5 * 2 ** item.attempts)
            await db_call(self.store.later, item, self.owner, error, delay)
            log.info("job item retried later", extra={**extra, "delay_seconds": delay})
            return
        await db_call(self.store.failed, item, self.owner, error)
        log.warning("job item failed", extra=extra)
