"""Outages during a job, real processes on loopback: a domain service SIGKILLed mid-batch and away for
two minutes, and object storage frozen for a while (SIGSTOP, then SIGCONT): the job completes, every
input done once, no attempt spent on the outage, and job status answered while analyses wait on the
frozen storage. A poison input that takes its gateway down (SIGKILL from the test while it runs) is
failed as poison after three deaths, and the rest are done."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request

import grpc
import pytest

from nanolens.gateway.v1 import gateway_pb2
from nanolens_cli.stack import Stack
from wire import GatewayClient


@pytest.fixture(scope="module")
def outage_stack(start_stack):
    return start_stack("outage", extra_env={"NANOLENS_JOB_CONCURRENCY": "1", "NANOLENS_JOB_LEASE_SECONDS": "3"},
                       domains=("spectra",))


def upload_batch(client: GatewayClient, tmp_path, prefix: str, n: int, seed: int) -> None:
    for i in range(n):
        path = tmp_path / f"{seed}-{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {4000 + (j % 7) * 10 + i + seed}\n" for j in range(960)))
        client.upload(path, key=f"{prefix}spectrum-{i}.txt", timeout=60)


def get(client: GatewayClient, job_id: str, limit: float = 60) -> gateway_pb2.Job:
    """The job with its items, asked again while the gateway is away (restarting)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=30).job
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


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


def test_a_domain_service_away_two_minutes_mid_job_the_job_completes_spending_no_attempts(outage_stack, tmp_path):
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
    time.sleep(120)  # the outage itself: items meet UNAVAILABLE again and again, backing off
    during = get(client, job.job_id)
    assert during.failed == 0  # an absent service is waited for, not blamed on the inputs
    assert all(i.attempts <= 1 for i in during.items), [(i.object.key, i.attempts) for i in during.items]
    restarted = running.spawn_service("spectra")
    assert restarted.serving.wait(60) and restarted.popen.poll() is None
    finished = wait_ended(client, job.job_id)
    assert finished.state == "done" and finished.done == n, [(i.object.key, i.error) for i in finished.items]
    assert len({i.result.key for i in finished.items}) == n
    assert all(i.attempts == 1 for i in finished.items), [(i.object.key, i.attempts) for i in finished.items]
    client.close()


def restart_gateway(running: Stack) -> None:
    (gateway,) = [p for p in running.processes if p.name == "gateway"]
    os.killpg(gateway.popen.pid, signal.SIGKILL)  # as the out-of-memory killer does
    gateway.popen.wait()
    running.processes.remove(gateway)
    restarted = running.spawn_service("gateway")
    assert restarted.serving.wait(60) and restarted.popen.poll() is None


def test_an_input_that_kills_its_gateway_is_failed_as_poison_and_the_rest_are_done(outage_stack, tmp_path):
    running, endpoints = outage_stack
    client = GatewayClient(endpoints.gateway)
    n = 4
    upload_batch(client, tmp_path, "outage/poison/", n, seed=3)
    (path := tmp_path / "poison.txt").write_text("".join(f"{100 + 3 * j} {5000 + j % 3}\n" for j in range(960)))
    client.upload(path, key="outage/poison/a-poison.txt", timeout=60)  # first in the job's order
    (service,) = [p for p in running.processes if p.name == "spectra"]
    os.kill(service.popen.pid, signal.SIGSTOP)  # the analysis hangs, so the test sees the poison item running
    try:
        job = submit(client, "outage/poison/")
        for death in (1, 2, 3):
            deadline = time.monotonic() + 90
            while True:  # the item claimed again (by a fresh gateway, alone), an attempt more
                assert time.monotonic() < deadline, f"the poison item was not claimed a {death}. time"
                time.sleep(0.05)
                poison = get(client, job.job_id).items[0]
                assert poison.object.key.endswith("a-poison.txt") and poison.state != "failed"
                if poison.state == "running" and poison.attempts == death:
                    break
            restart_gateway(running)
        deadline = time.monotonic() + 90
        while get(client, job.job_id).items[0].state != "failed":  # at its next claim
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.kill(service.popen.pid, signal.SIGCONT)
    finished = wait_ended(client, job.job_id)
    poison, *rest = finished.items
    assert poison.error.startswith("poison:") and "3 times" in poison.error, poison.error
    assert finished.state == "failed" and finished.done == n, [(i.object.key, i.state, i.error) for i in rest]
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


def started(metrics_url: str, method: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^grpc_server_started_total\{[^}]*grpc_method="' + method + r'"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_job_status_answers_while_analyses_wait_on_a_frozen_storage(outage_stack, tmp_path):
    running, endpoints = outage_stack
    client = GatewayClient(endpoints.gateway)
    upload_batch(client, tmp_path, "outage/status/", 1, seed=4)
    job = wait_ended(client, submit(client, "outage/status/").job_id)
    request = gateway_pb2.AnalyzeRequest(input=job.items[0].object, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    before = started(endpoints.metrics["gateway"], "Analyze")
    (s3,) = [p for p in running.processes if p.name == "s3"]
    os.kill(s3.popen.pid, signal.SIGSTOP)
    try:
        # more analyses than any default thread pool has threads, each stuck reading from storage
        waiting = [client.stub.Analyze.future(request, timeout=300) for _ in range(40)]
        deadline = time.monotonic() + 60
        while started(endpoints.metrics["gateway"], "Analyze") < before + 40:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for _ in range(3):  # job status comes from the job database, on threads of its own
            status = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job
            assert status.state == "done"
    finally:
        os.kill(s3.popen.pid, signal.SIGCONT)
    for call in waiting:
        try:
            call.result()
        except grpc.RpcError:
            pass  # a storage timeout is an answer too: what matters is that none is left behind
    client.close()
