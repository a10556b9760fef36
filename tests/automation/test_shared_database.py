"""Two gateway replicas on one PostgreSQL job database, real processes on loopback: a job submitted
to one is visible on the other, each input is analysed once (counted from the spectra service's own
request metrics), and when one replica is SIGKILLed mid-job the other takes its items over."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.request

import grpc
import pytest

from nanolens.gateway.v1 import gateway_pb2
from nanolens_cli.stack import free_port
from wire import GatewayClient


def handled(metrics_url: str, method: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^grpc_server_handled_total\{[^}]*grpc_method="' + method + r'"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def items_done(proc) -> int:
    return sum("job item done" in line for line in proc.lines)


# Long enough that a live replica's lease never lapses on a loaded 2-core machine (a lapse lets the
# other replica run the item too); the takeover test waits this long for the killed replica's items.
LEASE_SECONDS = "10"


def wait_for(job_id: str, client: GatewayClient, timeout: float = 120) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=10).job
            if job.state in ("done", "failed", "cancelled"):
                return job
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def upload_batch(client: GatewayClient, tmp_path, prefix: str, n: int) -> None:
    for i in range(n):
        path = tmp_path / f"{prefix.strip('/').replace('/', '-')}-{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {1000 + (j % 5) * 10 + i}\n" for j in range(960)))  # distinct bytes
        client.upload(path, key=f"{prefix}spectrum-{i}.txt", timeout=60)


@pytest.fixture(scope="module")
def replicas(postgres, start_stack):
    running, endpoints = start_stack("shared-db", domains=("spectra",), extra_env={
        "NANOLENS_JOBS_DB": postgres.database(), "NANOLENS_JOB_LEASE_SECONDS": LEASE_SECONDS,
        "NANOLENS_JOB_CONCURRENCY": "1"})
    env = running._env("gateway")
    port = free_port()
    env.update({"NANOLENS_GRPC_PORT": str(port), "NANOLENS_METRICS_PORT": str(free_port())})
    second = running._spawn("gateway-b", [sys.executable, "-m", "nanolens_gateway"], env)
    assert second.serving.wait(60) and second.popen.poll() is None, "".join(second.lines[-20:])
    (first,) = [p for p in running.processes if p.name == "gateway"]
    return running, endpoints, first, second, f"{running.host}:{port}"


def test_a_job_on_one_replica_is_seen_on_the_other_and_each_input_analysed_once(replicas, tmp_path):
    running, endpoints, first, second, second_address = replicas
    a, b = GatewayClient(endpoints.gateway), GatewayClient(second_address)
    n = 10
    upload_batch(a, tmp_path, "shared/run-1/", n)
    before = handled(endpoints.metrics["spectra"], "ClassifySpectra")
    done_before = items_done(first) + items_done(second)
    job = a.stub.SubmitJob(gateway_pb2.SubmitJobRequest(prefix="shared/run-1/",
                                                        analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA), timeout=30).job
    finished = wait_for(job.job_id, b)  # the other replica reads the same database
    assert finished.state == "done" and finished.done == n
    assert len({item.result.key for item in finished.items}) == n
    assert handled(endpoints.metrics["spectra"], "ClassifySpectra") - before == n  # no item run twice
    deadline = time.monotonic() + 10  # the log lines may trail the state change
    while items_done(first) + items_done(second) - done_before < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert items_done(first) + items_done(second) - done_before == n
    a.close()
    b.close()


def test_the_other_replica_takes_over_when_one_is_killed_mid_job(replicas, tmp_path):
    running, endpoints, first, second, second_address = replicas
    a, b = GatewayClient(endpoints.gateway), GatewayClient(second_address)
    n = 10
    upload_batch(a, tmp_path, "shared/run-2/", n)
    before = handled(endpoints.metrics["spectra"], "ClassifySpectra")
    second_before = items_done(second)
    job = a.stub.SubmitJob(gateway_pb2.SubmitJobRequest(prefix="shared/run-2/",
                                                        analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA), timeout=30).job
    deadline = time.monotonic() + 60
    while b.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job.done < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.popen.pid, signal.SIGKILL)  # its leases are left behind
    first.popen.wait()
    running.processes.remove(first)
    left = n - b.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job.done
    finished = wait_for(job.job_id, b)
    assert finished.state == "done" and finished.done == n
    assert len({item.result.key for item in finished.items}) == n
    computed = handled(endpoints.metrics["spectra"], "ClassifySpectra") - before
    assert n <= computed <= n + 1, computed  # at most the one item in flight on the killed replica again
    deadline = time.monotonic() + 10
    while items_done(second) - second_before < left and time.monotonic() < deadline:
        time.sleep(0.1)
    assert items_done(second) - second_before >= left  # everything not done at the kill, done by the survivor
    b.close()
    a.close()
