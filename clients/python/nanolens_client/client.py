"""The synchronous client (``AsyncClient`` in ``nanolens_client.aio`` is the same on asyncio)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_client import calls
from nanolens_client.errors import GatewayError, NotFound, PermissionDenied, from_rpc_error
from nanolens_client.results import Item, ItemResult, Job, JobResults, Ref, Result, Upload, UploadProgress
from nanolens_client.retry import RetryPolicy
from nanolens_client.settings import ClientSettings

#: how long ``watch`` follows a job unless told otherwise
WATCH_SECONDS = 24 * 3600.0


class Client:
    """A connection to the gateway. ``gateway`` (host:port), ``token`` and everything else default
    to the ``NANOLENS_*`` settings (``ClientSettings``; ``nanolens settings`` lists them).

    Every call has a deadline (``timeout`` seconds, else the settings' defaults) that covers its
    retries too. Idempotent calls (everything but ``submit``, ``cancel`` and ``retry_failed``) are
    tried again after UNAVAILABLE and gRPC's own RESOURCE_EXHAUSTED (``RetryPolicy``). Failures
    raise ``GatewayError`` subclasses. Use as a context manager, or ``close()``.
    """

    def __init__(self, gateway: str | None = None, *, token: str | None = None,
                 settings: ClientSettings | None = None, retry: RetryPolicy | None = None):
        self.settings = settings or ClientSettings.from_env(gateway=gateway, token=token)
        self.retry = retry or RetryPolicy(attempts=self.settings.attempts)
        credentials = self.settings.credentials()
        options = self.settings.channel_options()
        self.channel = (grpc.insecure_channel(self.settings.gateway, options=options) if credentials is None
                        else grpc.secure_channel(self.settings.gateway, credentials, options=options))
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = self.settings.metadata()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the call path -----------------------------------------------------------------------
    def _seconds(self, timeout: float | None) -> float:
        """An analysis call's deadline, seconds from now."""
        return timeout if timeout is not None else self.settings.analysis_timeout_seconds

    def _deadline(self, timeout: float | None, long: bool) -> float:
        seconds = timeout if timeout is not None else (
            self.settings.analysis_timeout_seconds if long else self.settings.timeout_seconds)
        return time.monotonic() + seconds

    def _attempts(self, deadline: float, idempotent: bool, attempt: Callable[[float], Any]) -> Any:
        """Run ``attempt(seconds left)`` until it succeeds or the error is final."""
        tries = 0
        while True:
            tries += 1
            try:
                return attempt(max(deadline - time.monotonic(), 0.0))
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            wait = self.retry.delay(tries, error, idempotent, deadline - time.monotonic())
            if wait is None:
                raise error
            time.sleep(wait)

    def _unary(self, method: str, request, *, timeout: float | None = None, long: bool = False,
               idempotent: bool = True):
        call = getattr(self.stub, method)
        return self._attempts(self._deadline(timeout, long), idempotent,
                              lambda left: call(request, timeout=left, metadata=self.metadata))

    # -- files ---------------------------------------------------------------------------------
    def upload(self, data: str | Path | bytes | Any, *, filename: str | None = None, key: str = "",
               timeout: float | None = None, on_bytes: Callable[[int, int], None] | None = None) -> Upload:
        """Store a file (a path, bytes with a ``filename``, or a numpy array) in the raw-data bucket.
        Without ``key`` the content names the object (``uploads/<sha256>/<name>``), so the same file
        is the same object and its stored results are found. ``on_bytes(sent, size)`` after each
        chunk. An existing key with other content is ALREADY_EXISTS (stored data is never replaced),
        so a retried upload is safe."""
        name, size, opener = calls.payload(data, filename)

        def attempt(left: float):
            sent = 0

            def sent_bytes(n: int) -> None:
                nonlocal sent
                sent += n
                if on_bytes is not None:
                    on_bytes(sent, size)

            return self.stub.Upload(calls.upload_messages(name, key, opener, sent_bytes), timeout=left,
                                    metadata=self.metadata)

        response = self._attempts(self._deadline(timeout, True), True, attempt)
        return Upload(str(data) if isinstance(data, str | Path) else name, Ref.of(response.object),
                      response.size_bytes, response.sha256)

    def upload_folder(self, folder: str | Path, prefix: str, *, timeout: float | None = None,
                      on_progress: Callable[[UploadProgress], None] | None = None) -> list[Upload]:
        """Every file under ``folder`` (hidden ones left out) to ``<prefix>/<relative path>`` in the
        raw-data bucket, one after the other; ``on_progress`` after each chunk and each file.
        ``timeout``: per file. Uploading the same folder again stores nothing new."""
        files = calls.folder_files(folder, prefix)
        total = sum(p.stat().st_size for p, _ in files)
        done_bytes, uploads = 0, []
        for i, (path, key) in enumerate(files):
            def chunk(sent: int, size: int, i=i, path=path, before=done_bytes) -> None:
                if on_progress is not None:
                    on_progress(UploadProgress(i, len(files), before + sent, total, str(path)))

            uploads.append(self.upload(path, key=key, timeout=timeout, on_bytes=chunk))
            done_bytes += uploads[-1].size_bytes
            if on_progress is not None:
                on_progress(UploadProgress(i + 1, len(files), done_bytes, total, str(path)))
        return uploads

    def download(self, ref: Ref, *, timeout: float | None = None) -> bytes:
        """A stored object's bytes (a result, an artefact, raw data)."""
        def attempt(left: float) -> bytes:
            return b"".join(r.chunk for r in self.stub.Download(calls.download_request(ref), timeout=left,
                                                                metadata=self.metadata))

        return self._attempts(self._deadline(timeout, True), True, attempt)

    def artefact(self, result: Result, name: str, *, timeout: float | None = None) -> bytes:
        """One artefact of a result by its name (``overlay.png``).

        Raises
        ------
        KeyError
            Naming the artefacts the result has.
        """
        if name not in result.artefacts:
            raise KeyError(f"{result.analysis} result has no artefact {name!r}; it has {sorted(result.artefacts)}")
        return self.download(result.artefacts[name].ref, timeout=timeout)

    def save(self, result: Result, out: str | Path, *, timeout: float | None = None) -> list[Path]:
        """result.json and every artefact into the folder ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [calls.write_file(out / "result.json", json.dumps(result.document, indent=2))]
        for name, artefact in result.artefacts.items():
            written.append(calls.write_file(out / Path(name).name, self.download(artefact.ref, timeout=timeout)))
        return written

    # -- analyses ------------------------------------------------------------------------------
    def analyse(self, data: str | Path | bytes | Any, kind: str | int, *, filename: str | None = None,
                key: str = "", model: str = "", force: bool = False, timeout: float | None = None,
                on_progress: Callable[[gateway_pb2.AnalyzeProgress], None] | None = None, **options) -> Result:
        """Upload a file and analyse it in one call; the stored result comes back without a second
        computation when the same file was analysed so before. ``kind``: ``spectra``,
        ``particle_sizes``, ... (``calls.analysis_names()``); ``options``: the analysis's options
        (``pixel_size_nm=0.5``, ``bright_particles=True``); ``model``: NAME or NAME:VERSION;
        ``on_progress``: each progress event (movies report frames). ``timeout`` covers both."""
        deadline = self._deadline(timeout, True)
        uploaded = self.upload(data, filename=filename, key=key, timeout=deadline - time.monotonic())
        return self.analyse_object(uploaded.object, kind, model=model, force=force,
                                   timeout=deadline - time.monotonic(), on_progress=on_progress, **options)

    def analyse_object(self, ref: Ref, kind: str | int, *, model: str = "", force: bool = False,
                       timeout: float | None = None,
                       on_progress: Callable[[gateway_pb2.AnalyzeProgress], None] | None = None,
                       **options) -> Result:
        """Analyse an object already in storage (``analyse`` without the upload)."""
        request = calls.analyze_request(ref, kind, model, options, force)
        if on_progress is None:
            return Result.of(self._unary("Analyze", request, timeout=timeout, long=True))

        def attempt(left: float):
            stream = self.stub.AnalyzeStream(gateway_pb2.AnalyzeStreamRequest(request=request), timeout=left,
                                             metadata=self.metadata)
            try:
                for event in stream:
                    if event.WhichOneof("event") == "result":
                        return event.result
                    on_progress(event.progress)
            except BaseException:
                stream.cancel()  # Ctrl-C or a failing callback: the analysis stops, nothing is stored
                raise
            raise GatewayError("the gateway ended the stream without a result")

        return Result.of(self._attempts(self._deadline(timeout, True), True, attempt))

    def analyse_many(self, items: Iterable[Item], *, timeout: float | None = None) -> Iterator[ItemResult]:
        """Analyse many small items over one call (AnalyzeMany): each ``Item`` sent inline or named in
        storage, each answered as it finishes (in any order) with its id and its result or its own
        error; the gateway runs them together, so the domain service batches them. Items are read
        before the call (a missing file raises here). Not retried (answers already yielded would
        come twice); leaving the loop early cancels the items still running.

        Raises
        ------
        GatewayError
            When the call itself fails (a failing item does not fail the call).
        """
        requests = [calls.many_request(item) for item in items]
        stream = self.stub.AnalyzeMany(iter(requests), timeout=self._seconds(timeout),
                                       metadata=self.metadata)
        try:
            for answer in stream:
                yield calls.item_result(answer)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    # -- jobs ----------------------------------------------------------------------------------
    def submit(self, prefix: str, kind: str | int, *, keys: tuple[str, ...] | list[str] = (), bucket: str = "",
               model: str = "", timeout: float | None = None, **options) -> Job:
        """Analyse every object under ``prefix`` (or the ``keys`` named) as one durable job. Not
        retried: a second try could make a second job."""
        request = calls.submit_request(prefix, kind, list(keys), bucket, model, options)
        return Job.of(self._unary("SubmitJob", request, timeout=timeout, idempotent=False).job)

    def get_job(self, job: Job | str, *, items: bool = True, timeout: float | None = None) -> Job:
        return Job.of(self._unary("GetJob", calls.job_request(job, items), timeout=timeout).job)

    def list_jobs(self, *, state: str = "", limit: int = 50, timeout: float | None = None) -> list[Job]:
        request = gateway_pb2.ListJobsRequest(state=state, page_size=limit)
        return [Job.of(j) for j in self._unary("ListJobs", request, timeout=timeout).jobs]

    def cancel(self, job: Job | str, *, timeout: float | None = None) -> Job:
        request = gateway_pb2.CancelJobRequest(job_id=calls.job_id(job))
        return Job.of(self._unary("CancelJob", request, timeout=timeout, idempotent=False).job)

    def retry_failed(self, job: Job | str, *, timeout: float | None = None) -> Job:
        """Run the job's failed items again."""
        request = gateway_pb2.RetryJobRequest(job_id=calls.job_id(job))
        return Job.of(self._unary("RetryJob", request, timeout=timeout, idempotent=False).job)

    def watch(self, job: Job | str, *, timeout: float = WATCH_SECONDS) -> Iterator[Job]:
        """The job now and after every change, until it ends (or ``timeout`` seconds pass:
        DEADLINE_EXCEEDED). A connection lost meanwhile is made again (the retry policy, counted
        afresh after each event)."""
        deadline = time.monotonic() + timeout
        request = gateway_pb2.WatchJobRequest(job_id=calls.job_id(job))
        tries = 0
        while True:
            tries += 1
            stream = self.stub.WatchJob(request, timeout=max(deadline - time.monotonic(), 0.0),
                                        metadata=self.metadata)
            try:
                for event in stream:
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
            time.sleep(wait)

    def results(self, job: Job | str, out: str | Path, *, results_bucket: str = "",
                timeout: float | None = None) -> JobResults:
        """Every done item's result.json and artefacts in ``out/<bucket>/<key>/``, and the job's
        report and index where written; ``not_done`` lists the items that are not done."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        job = self.get_job(job, items=True, timeout=timeout)
        written, not_done = [], []
        for item in job.items:
            if item.state != "done" or item.result is None:
                not_done.append(item)
                continue
            document, artefacts = calls.result_files(item, self.download(item.result, timeout=timeout), out)
            written.append(document)
            written += [calls.write_file(target, self.download(ref, timeout=timeout)) for target, ref in artefacts]
        for name in calls.REPORT_FILES:
            ref = calls.report_ref(job, results_bucket, name)
            if ref is None:
                break
            try:
                written.append(calls.write_file(out / name, self.download(ref, timeout=timeout)))
            except (NotFound, PermissionDenied):  # not written yet (a running job), or not this caller's
                continue
        return JobResults(job.job_id, job.state, tuple(written), tuple(not_done))

    # -- models and collections ------------------------------------------------------------
    def list_models(self, *, timeout: float | None = None) -> gateway_pb2.ListModelsResponse:
        return self._unary("ListModels", gateway_pb2.ListModelsRequest(), timeout=timeout)

    def search(self, collection: str, query: Ref, *, k: int = 10, region: tuple[int, int, int, int] | None = None,
               where: Mapping[str, str] | None = None,
               timeout: float | None = None) -> gateway_pb2.SearchCollectionResponse:
        """The images of an SEM collection most like ``query`` (an image in storage), or like its
        ``region`` (x, y, width, height in pixels); ``where``: filters on the instrument metadata
        (detector, magnification_min/max, pixel_size_nm_min/max, acquired_from/to)."""
        return self._unary("SearchCollection", calls.search_request(collection, query, k, region, where),
                           timeout=timeout, long=True)
