"""Outages during a job, real processes on loopback: a domain service SIGKILLed mid-batch and started
again later, and object storage frozen for a while (SIGSTOP, then SIGCONT): the job completes, every
input done once, nothing lost."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from nanolens.gateway.v1 import gateway_pb2
from nanolens_cli.client import GatewayClient
from nanolens_cli.stack import Stack


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory):
    running = Stack(extra_env={"NANOLENS_JOB_CONCURRENCY": "1", "NANOLENS_JOB_LEASE_SECONDS": "3"},
                    domains=("spectra",), log_dir=tmp_path_factory.mktemp("outage-logs"))
    endpoints = running.start()
    yield running, endpoints
    running.stop()


def upload_batch(client: GatewayClient, tmp_path, prefix: str, n: int, seed: int) -> None:
    for i in range(n):
        path = tmp_path / f"{seed}-{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {4000 + (j % 7) * 10 + i + seed}\n" for j in range(960)))
        client.upload(path, key=f"{prefix}spectrum-{i}.txt", timeout=60)


def get(client: GatewayClient, job_id: str) -> gateway_pb2.Job:
    return client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=30).job


def wait_ended(client: GatewayClient, job_id: str, timeout: float = 150) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = get(client, job_id)
            if job.state in ("done", "failed", "cancelled"):
                return job
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def submit(client: GatewayClient, prefix: str) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(prefix=prefix, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    return client.stub.SubmitJob(request, timeout=30).job


def test_a_domain_service_killed_mid_batch_the_job_completes_after_it_returns(outage_stack, tmp_path):
    running, endpoints = outage_stack
    client = GatewayClient(endpoints.gateway)
    n = 8
    upload_batch(client, tmp_path, "outage/service/", n, seed=1)
    job = submit(client, "outage/service/")
    deadline = time.monotonic() + 60
    while get(client, job.job_id).done < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (service,) = [p for p in running.processes if p.name == "spectra"]
    os.killpg(service.popen.pid, signal.SIGKILL)
    service.popen.wait()
    running.processes.remove(service)
    time.sleep(1.5)  # the service stays away a while: items meet UNAVAILABLE and back off
    during = get(client, job.job_id)
    assert during.failed == 0  # an absent service is waited for, not blamed on the inputs
    restarted = running.spawn_service("spectra")
    assert restarted.serving.wait(60) and restarted.popen.poll() is None
    finished = wait_ended(client, job.job_id)
    assert finished.state == "done" and finished.done == n, [(i.object.key, i.error) for i in finished.items]
    assert len({i.result.key for i in finished.items}) == n
    client.close()


def test_object_storage_frozen_for_a_while_work_pauses_and_resumes(outage_stack, tmp_path):
    running, endpoints = outage_stack
    client = GatewayClient(endpoints.gateway)
    n = 6
    upload_batch(client, tmp_path, "outage/storage/", n, seed=2)
    job = submit(client, "outage/storage/")
    (s3,) = [p for p in running.processes if p.name == "s3"]
    os.kill(s3.popen.pid, signal.SIGSTOP)  # reachable port, no answers: as a storage node that hangs
    try:
        time.sleep(3)
        assert get(client, job.job_id).done < n  # the job state lives in the job database: still served
    finally:
        os.kill(s3.popen.pid, signal.SIGCONT)
    finished = wait_ended(client, job.job_id)
    assert finished.state == "done" and finished.done == n, [(i.object.key, i.error) for i in finished.items]
    client.close()
