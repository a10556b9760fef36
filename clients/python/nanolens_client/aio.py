"""The asyncio client: ``Client``'s calls as coroutines, ``watch`` as an async iterator."""

# ``timeout`` is the gRPC deadline each call carries to the gateway (which stops work past it), not a
# local asyncio timeout: ASYNC109 does not apply.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_client import calls
from nanolens_client.client import WATCH_SECONDS
from nanolens_client.errors import GatewayError, NotFound, PermissionDenied, from_rpc_error
from nanolens_client.results import Item, ItemResult, Job, JobResults, Ref, Result, Upload, UploadProgress
from nanolens_client.retry import RetryPolicy
from nanolens_client.settings import ClientSettings


class AsyncClient:
    """``Client`` on asyncio (same settings, deadlines, retries and errors). Use as
    ``async with AsyncClient() as client:``, or ``await client.close()``."""

    def __init__(self, gateway: str | None = None, *, token: str | None = None,
                 settings: ClientSettings | None = None, retry: RetryPolicy | None = None):
        self.settings = settings or ClientSettings.from_env(gateway=gateway, token=token)
        self.retry = retry or RetryPolicy(attempts=self.settings.attempts)
        credentials = self.settings.credentials()
        options = self.settings.channel_options()
        self.channel = (grpc.aio.insecure_channel(self.settings.gateway, options=options) if credentials is None
                        else grpc.aio.secure_channel(self.settings.gateway, credentials, options=options))
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = self.settings.metadata()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _seconds(self, timeout: float | None) -> float:
        """An analysis call's deadline, seconds from now."""
        return timeout if timeout is not None else self.settings.analysis_timeout_seconds

    def _deadline(self, timeout: float | None, long: bool) -> float:
        seconds = timeout if timeout is not None else (
            self.settings.analysis_timeout_seconds if long else self.settings.timeout_seconds)
        return time.monotonic() + seconds

    async def _attempts(self, deadline: float, idempotent: bool, attempt: Callable[[float], Awaitable[Any]]) -> Any:
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt(max(deadline - time.monotonic(), 0.0))
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            wait = self.retry.delay(tries, error, idempotent, deadline - time.monotonic())
            if wait is None:
                raise error
            await asyncio.sleep(wait)

    async def _unary(self, method: str, request, *, timeout: float | None = None, long: bool = False,
                     idempotent: bool = True):
        call = getattr(self.stub, method)
        return await self._attempts(self._deadline(timeout, long), idempotent,
                                    lambda left: call(request, timeout=left, metadata=self.metadata))

    async def upload(self, data: str | Path | bytes | Any, *, filename: str | None = None, key: str = "",
                     timeout: float | None = None, on_bytes: Callable[[int, int], None] | None = None) -> Upload:
        """As ``Client.upload``."""
        name, size, opener = calls.payload(data, filename)

        async def attempt(left: float):
            sent = 0

            def sent_bytes(n: int) -> None:
                nonlocal sent
                sent += n
                if on_bytes is not None:
                    on_bytes(sent, size)

            return await self.stub.Upload(calls.upload_messages(name, key, opener, sent_bytes), timeout=left,
                                          metadata=self.metadata)

        response = await self._attempts(self._deadline(timeout, True), True, attempt)
        return Upload(str(data) if isinstance(data, str | Path) else name, Ref.of(response.object),
                      response.size_bytes, response.sha256)

    async def upload_folder(self, folder: str | Path, prefix: str, *, timeout: float | None = None,
                            on_progress: Callable[[UploadProgress], None] | None = None) -> list[Upload]:
        """As ``Client.upload_folder``."""
        files = calls.folder_files(folder, prefix)
        total = sum(p.stat().st_size for p, _ in files)
        done_bytes, uploads = 0, []
        for i, (path, key) in enumerate(files):
            def chunk(sent: int, size: int, i=i, path=path, before=done_bytes) -> None:
                if on_progress is not None:
                    on_progress(UploadProgress(i, len(files), before + sent, total, str(path)))

            uploads.append(await self.upload(path, key=key, timeout=timeout, on_bytes=chunk))
            done_bytes += uploads[-1].size_bytes
            if on_progress is not None:
                on_progress(UploadProgress(i + 1, len(files), done_bytes, total, str(path)))
        return uploads

    async def download(self, ref: Ref, *, timeout: float | None = None) -> bytes:
        async def attempt(left: float) -> bytes:
            stream = self.stub.Download(calls.download_request(ref), timeout=left, metadata=self.metadata)
            return b"".join([r.chunk async for r in stream])

        return await self._attempts(self._deadline(timeout, True), True, attempt)

    async def artefact(self, result: Result, name: str, *, timeout: float | None = None) -> bytes:
        if name not in result.artefacts:
            raise KeyError(f"{result.analysis} result has no artefact {name!r}; it has {sorted(result.artefacts)}")
        return await self.download(result.artefacts[name].ref, timeout=timeout)

    async def save(self, result: Result, out: str | Path, *, timeout: float | None = None) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [calls.write_file(out / "result.json", json.dumps(result.document, indent=2))]
        for name, artefact in result.artefacts.items():
            written.append(calls.write_file(out / Path(name).name, await self.download(artefact.ref, timeout=timeout)))
        return written

    async def analyse(self, data: str | Path | bytes | Any, kind: str | int, *, filename: str | None = None,
                      key: str = "", model: str = "", force: bool = False, timeout: float | None = None,
                      on_progress: Callable[[gateway_pb2.AnalyzeProgress], None] | None = None,
                      **options) -> Result:
        """As ``Client.analyse``."""
        deadline = self._deadline(timeout, True)
        uploaded = await self.upload(data, filename=filename, key=key, timeout=deadline - time.monotonic())
        return await self.analyse_object(uploaded.object, kind, model=model, force=force,
                                         timeout=deadline - time.monotonic(), on_progress=on_progress, **options)

    async def analyse_object(self, ref: Ref, kind: str | int, *, model: str = "", force: bool = False,
                             timeout: float | None = None,
                             on_progress: Callable[[gateway_pb2.AnalyzeProgress], None] | None = None,
                             **options) -> Result:
        request = calls.analyze_request(ref, kind, model, options, force)
        if on_progress is None:
            return Result.of(await self._unary("Analyze", request, timeout=timeout, long=True))

        async def attempt(left: float):
            stream = self.stub.AnalyzeStream(gateway_pb2.AnalyzeStreamRequest(request=request), timeout=left,
                                             metadata=self.metadata)
            try:
                async for event in stream:
                    if event.WhichOneof("event") == "result":
                        return event.result
                    on_progress(event.progress)
            except BaseException:
                stream.cancel()
                raise
            raise GatewayError("the gateway ended the stream without a result")

        return Result.of(await self._attempts(self._deadline(timeout, True), True, attempt))

    async def analyse_many(self, items: Iterable[Item], *,
                           timeout: float | None = None) -> AsyncIterator[ItemResult]:
        """As ``Client.analyse_many``: each item's ``ItemResult`` as it finishes."""
        requests = [calls.many_request(item) for item in items]
        stream = self.stub.AnalyzeMany(iter(requests), timeout=self._seconds(timeout),
                                       metadata=self.metadata)
        try:
            async for answer in stream:
                yield calls.item_result(answer)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    async def submit(self, prefix: str, kind: str | int, *, keys: tuple[str, ...] | list[str] = (),
                     bucket: str = "", model: str = "", timeout: float | None = None, **options) -> Job:
        request = calls.submit_request(prefix, kind, list(keys), bucket, model, options)
        return Job.of((await self._unary("SubmitJob", request, timeout=timeout, idempotent=False)).job)

    async def get_job(self, job: Job | str, *, items: bool = True, timeout: float | None = None) -> Job:
        return Job.of((await self._unary("GetJob", calls.job_request(job, items), timeout=timeout)).job)

    async def list_jobs(self, *, state: str = "", limit: int = 50, timeout: float | None = None) -> list[Job]:
        request = gateway_pb2.ListJobsRequest(state=state, page_size=limit)
        return [Job.of(j) for j in (await self._unary("ListJobs", request, timeout=timeout)).jobs]

    async def cancel(self, job: Job | str, *, timeout: float | None = None) -> Job:
        request = gateway_pb2.CancelJobRequest(job_id=calls.job_id(job))
        return Job.of((await self._unary("CancelJob", request, timeout=timeout, idempotent=False)).job)

    async def retry_failed(self, job: Job | str, *, timeout: float | None = None) -> Job:
        request = gateway_pb2.RetryJobRequest(job_id=calls.job_id(job))
        return Job.of((await self._unary("RetryJob", request, timeout=timeout, idempotent=False)).job)

    async def watch(self, job: Job | str, *, timeout: float = WATCH_SECONDS) -> AsyncIterator[Job]:
        """As ``Client.watch``: ``async for job in client.watch(job_id)``."""
        deadline = time.monotonic() + timeout
        request = gateway_pb2.WatchJobRequest(job_id=calls.job_id(job))
        tries = 0
        while True:
            tries += 1
            stream = self.stub.WatchJob(request, timeout=max(deadline - time.monotonic(), 0.0),
                                        metadata=self.metadata)
            try:
                async for event in stream:
                    tries = 0
                    yield Job.of(event.job)
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            finally:
                stream.cancel()
            wait = self.retry.delay(max(tries, 1), error, True, deadline - time.monotonic())
            if wait is None:
                raise error
            await asyncio.sleep(wait)

    async def results(self, job: Job | str, out: str | Path, *, results_bucket: str = "",
                      timeout: float | None = None) -> JobResults:
        """As ``Client.results``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        job = await self.get_job(job, items=True, timeout=timeout)
        written, not_done = [], []
        for item in job.items:
            if item.state != "done" or item.result is None:
                not_done.append(item)
                continue
            document, artefacts = calls.result_files(item, await self.download(item.result, timeout=timeout), out)
            written.append(document)
            for target, ref in artefacts:
                written.append(calls.write_file(target, await self.download(ref, timeout=timeout)))
        for name in calls.REPORT_FILES:
            ref = calls.report_ref(job, results_bucket, name)
            if ref is None:
                break
            try:
                written.append(calls.write_file(out / name, await self.download(ref, timeout=timeout)))
            except (NotFound, PermissionDenied):
                continue
        return JobResults(job.job_id, job.state, tuple(written), tuple(not_done))

    async def list_models(self, *, timeout: float | None = None) -> gateway_pb2.ListModelsResponse:
        return await self._unary("ListModels", gateway_pb2.ListModelsRequest(), timeout=timeout)

    async def search(self, collection: str, query: Ref, *, k: int = 10,
                     region: tuple[int, int, int, int] | None = None, where: Mapping[str, str] | None = None,
                     timeout: float | None = None) -> gateway_pb2.SearchCollectionResponse:
        return await self._unary("SearchCollection", calls.search_request(collection, query, k, region, where),
                                 timeout=timeout, long=True)
