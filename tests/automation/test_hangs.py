"""Hangs, real processes on loopback: a domain service that takes a call and never answers, and
long-lived streams. The gateway reaches the spectra service through a relay in this process that
passes every call on, except those the test holds (a handler that blocks, as a service wedged on one
input does); the service itself is also SIGSTOPped. A job item past NANOLENS_JOB_ITEM_SECONDS is
failed saying so when its service still answers health checks, and waits as an outage when it does
not; open WatchJob streams beyond NANOLENS_MAX_CONCURRENT_RPCS lock out no other call."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nanolens.gateway.v1 import gateway_pb2
from nanolens.spectra.v1 import spectra_pb2
from nanolens_cli.stack import free_port
from wire import GatewayClient

ITEM_SECONDS = 4
SPECTRA = spectra_pb2.DESCRIPTOR.services_by_name["SpectraService"]
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
ANALYSES = {f"/{SPECTRA.full_name}/{m.name}" for m in SPECTRA.methods if m.name != "ListModels"}


class Relay(grpc.GenericRpcHandler):
    """The spectra service's methods and health check, passed on to ``upstream`` as bytes; a method in
    ``held`` blocks until :meth:`release` (or until its caller gives up)."""

    def __init__(self):
        self.held: set[str] = set()
        self.channel: grpc.Channel | None = None
        self._waiting: set[threading.Event] = set()
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(64))
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{free_port()}")
        self.server.start()

    def hold(self, *methods: str) -> None:
        self.held = set(methods)

    def release(self) -> None:
        with self._lock:
            self.held = set()
            for event in self._waiting:
                event.set()

    def _wait_if_held(self, method: str, context: grpc.ServicerContext) -> None:
        event = threading.Event()
        with self._lock:
            if method not in self.held:
                return
            self._waiting.add(event)
        context.add_callback(event.set)  # the caller gave up (its deadline): the handler ends
        event.wait()
        with self._lock:
            self._waiting.discard(event)

    def service(self, details):
        method = details.method
        streaming = any(f"/{SPECTRA.full_name}/{m.name}" == method and m.client_streaming for m in SPECTRA.methods)
        if method == HEALTH_CHECK or method.startswith(f"/{SPECTRA.full_name}/") and not streaming:
            def unary(request: bytes, context):
                self._wait_if_held(method, context)
                return self.channel.unary_unary(method)(request, timeout=context.time_remaining())
            return grpc.unary_unary_rpc_method_handler(unary)
        if streaming:
            def stream(requests, context):
                self._wait_if_held(method, context)
                yield from self.channel.stream_stream(method)(requests, timeout=context.time_remaining())
            return grpc.stream_stream_rpc_method_handler(stream)
        return None

    def stop(self) -> None:
        self.release()
        self.server.stop(0)
        if self.channel is not None:
            self.channel.close()


@pytest.fixture(scope="module")
def hung(start_stack):
    relay = Relay()
    spectra = free_port()
    relay.channel = grpc.insecure_channel(f"127.0.0.1:{spectra}")
    env = {"NANOLENS_SPECTRA_ADDR": f"127.0.0.1:{relay.port}", "NANOLENS_JOB_ITEM_SECONDS": str(ITEM_SECONDS),
           "NANOLENS_JOB_BACKOFF_MAX_SECONDS": "1", "NANOLENS_JOB_CONCURRENCY": "1",
           "NANOLENS_MAX_CONCURRENT_RPCS": "4", "NANOLENS_MAX_CONCURRENT_STREAMS": "12"}
    try:
        running, endpoints = start_stack("hangs", extra_env=env, domains=("spectra",), ports={"spectra": spectra})
        client = GatewayClient(endpoints.gateway)
        yield running, endpoints, relay, client
        client.close()
    finally:
        relay.stop()


def upload_spectrum(client: GatewayClient, tmp_path, key: str, seed: int):
    path = tmp_path / f"{seed}.txt"
    path.write_text("".join(f"{100 + 3 * j} {4000 + (j % 7) * 10 + seed}\n" for j in range(960)))
    return client.upload(path, key=key, timeout=60).object


def submit(client: GatewayClient, key: str) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(prefix=key, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    return client.stub.SubmitJob(request, timeout=30).job


def item(client: GatewayClient, job_id: str) -> gateway_pb2.JobItem:
    (only,) = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=30).job.items
    return only


def until(condition, what: str, limit: float = 120.0):
    """Poll ``condition`` (a call to the gateway) until it returns something true; ``limit`` s is a failure."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {limit} s"
        time.sleep(0.2)
    return value


def metric(url: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_item_its_service_hangs_on_is_failed_after_its_attempts_saying_so(hung, tmp_path):
    _, _, relay, client = hung
    upload_spectrum(client, tmp_path, "hangs/handler/a.txt", seed=1)
    relay.hold(*ANALYSES)  # the service takes the analysis and never answers; health checks still do
    try:
        job = submit(client, "hangs/handler/")
        ended = until(lambda: (j := item(client, job.job_id)).state == "failed" and j, "the hung item failed")
    finally:
        relay.release()
    assert ended.attempts == 5, ended
    assert ended.error.startswith("DEADLINE_EXCEEDED") and f"NANOLENS_JOB_ITEM_SECONDS={ITEM_SECONDS}" in ended.error
    assert "answered its health check" in ended.error
    client.stub.RetryJob(gateway_pb2.RetryJobRequest(job_id=job.job_id), timeout=30)
    done = until(lambda: (j := item(client, job.job_id)).state == "done" and j, "the retried item done")
    assert done.result.key


def test_a_stopped_service_pauses_its_item_as_an_outage_and_the_job_completes_when_it_resumes(hung, tmp_path):
    running, _, _, client = hung
    upload_spectrum(client, tmp_path, "hangs/stopped/a.txt", seed=2)
    (service,) = [p for p in running.processes if p.name == "spectra"]
    os.kill(service.popen.pid, signal.SIGSTOP)  # the port takes calls, nothing answers: health checks neither
    try:
        job = submit(client, "hangs/stopped/")
        paused = until(lambda: (j := item(client, job.job_id)).error and j, "the item paused")
        assert paused.state == "pending" and paused.attempts == 0, paused  # waited for, no attempt spent
        assert paused.error.startswith("UNAVAILABLE") and "stopped answering" in paused.error, paused.error
    finally:
        os.kill(service.popen.pid, signal.SIGCONT)
    done = until(lambda: (j := item(client, job.job_id)).state == "done" and j, "the item done after SIGCONT")
    assert done.result.key


def test_open_watch_streams_beyond_the_rpc_limit_lock_out_no_other_call(hung, tmp_path):
    _, endpoints, relay, client = hung
    stored = upload_spectrum(client, tmp_path, "hangs/watched/stored.txt", seed=3)
    request = gateway_pb2.AnalyzeRequest(input=stored, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    client.stub.Analyze(request, timeout=60)  # its result stored: asked again, it is answered from storage
    upload_spectrum(client, tmp_path, "hangs/watched/job/a.txt", seed=4)
    metrics = endpoints.metrics["gateway"]
    refused = metric(metrics, "nanolens_rpc_refused_total", grpc_method="WatchJob")
    relay.hold(HEALTH_CHECK, *ANALYSES)  # the job's item waits as an outage: the job stays running
    watchers = []
    try:
        job = submit(client, "hangs/watched/job/")
        for _ in range(12):  # NANOLENS_MAX_CONCURRENT_STREAMS, three times NANOLENS_MAX_CONCURRENT_RPCS
            watcher = client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=300)
            assert next(watcher).job.job_id == job.job_id  # open, and answered
            watchers.append(watcher)
        assert metric(metrics, "nanolens_rpc_in_flight", pool="streams") >= 12
        for _ in range(6):  # more unary calls than NANOLENS_MAX_CONCURRENT_RPCS, one after another
            assert client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=30).job.state in (
                "pending", "running")
            assert client.stub.Analyze(request, timeout=30).cached
            health = health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refusal:  # the streams' own limit holds
            next(client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=30))
        assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "NANOLENS_MAX_CONCURRENT_STREAMS" in refusal.value.details()
        assert metric(metrics, "nanolens_rpc_refused_total", grpc_method="WatchJob") == refused + 1
    finally:
        relay.release()
    for watcher in watchers:  # every stream followed the job to its end
        assert [r.job.state for r in watcher][-1] == "done"
