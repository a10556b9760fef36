"""Durable jobs, real processes on loopback (the store alone, on both backends, is
tests/automation/test_pgstore.py): a prefix analysed as one job with a corrupt input failing alone,
a gateway killed mid-job finishing after a restart with every input stored once, cancel and retry,
the CLI, keys with accents, '#' and brackets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from wire import GatewayClient


def handled(metrics_url: str, method: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^grpc_server_handled_total\{[^}]*grpc_method="' + method + r'"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def submit(client: GatewayClient, prefix: str) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(prefix=prefix, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    return client.stub.SubmitJob(request, timeout=30).job


def wait_for(job_id: str, client: GatewayClient, timeout: float = 120) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=10).job
            if job.state in ("done", "failed", "cancelled"):
                return job
        except grpc.RpcError as exc:  # the gateway restarting
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def upload_batch(client: GatewayClient, tmp_path, prefix: str, n: int, broken: int = 0) -> None:
    for i in range(n):
        path = tmp_path / f"s{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {1000 + (j % 7) * 10 + i}\n" for j in range(960)))  # distinct bytes
        client.upload(path, key=f"{prefix}spectrum-{i}.txt", timeout=60)
    for i in range(broken):
        path = tmp_path / f"broken{i}.txt"
        path.write_text("this is not a spectrum\n")
        client.upload(path, key=f"{prefix}broken-{i}.txt", timeout=60)


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack("jobs", extra_env={"NANOLENS_JOB_LEASE_SECONDS": "2", "NANOLENS_JOB_CONCURRENCY": "1"},
                       domains=("spectra",))


def test_a_prefix_is_analysed_and_a_corrupt_input_fails_alone(stack, tmp_path):
    _, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    upload_batch(client, tmp_path, "lab/run-1/", 4, broken=1)
    job = submit(client, "lab/run-1/")
    assert job.total == 5 and job.state in ("pending", "running")
    seen = [e.job.state for e in client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=120)]
    assert seen[-1] == "failed"
    done = wait_for(job.job_id, client)
    assert (done.done, done.failed) == (4, 1), [(i.object.key, i.error) for i in done.items if i.error]
    (bad,) = [i for i in done.items if i.state == "failed"]
    assert bad.object.key.endswith("broken-0.txt") and bad.error.startswith("INVALID_ARGUMENT")
    for item in done.items:
        if item.state == "done":
            assert json.loads(client.download(item.result, timeout=30))["input"]["key"] == item.object.key
    again = client.stub.RetryJob(gateway_pb2.RetryJobRequest(job_id=job.job_id), timeout=30).job
    assert again.pending + again.running == 1 and again.failed == 0
    assert wait_for(job.job_id, client).failed == 1  # still broken
    client.close()


def test_keys_as_instruments_write_them_are_analysed(stack, tmp_path):
    _, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    keys = ["instrument/données/é.txt", "instrument/run#3.txt", "instrument/sample [1].txt"]
    for i, key in enumerate(keys):
        path = tmp_path / f"{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {1500 + (j % 7) * 10 + i}\n" for j in range(960)))
        assert client.upload(path, key=key, timeout=60).object.key == key
    done = wait_for(submit(client, "instrument/").job_id, client)
    assert done.state == "done" and done.done == 3, [(i.object.key, i.error) for i in done.items]
    assert sorted(i.object.key for i in done.items) == sorted(keys)
    for item in done.items:
        assert json.loads(client.download(item.result, timeout=30))["input"]["key"] == item.object.key
    client.close()


def test_bad_submissions_are_refused_naming_the_field(stack):
    _, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    cases = [(gateway_pb2.SubmitJobRequest(analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA),
              grpc.StatusCode.INVALID_ARGUMENT),
             (gateway_pb2.SubmitJobRequest(prefix="nothing/here/", analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA),
              grpc.StatusCode.NOT_FOUND),
             (gateway_pb2.SubmitJobRequest(prefix="lab/", analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA,
                                           options={"typo": "1"}), grpc.StatusCode.INVALID_ARGUMENT),
             (gateway_pb2.SubmitJobRequest(prefix="../x/", analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA),
              grpc.StatusCode.INVALID_ARGUMENT)]
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            client.stub.SubmitJob(request, timeout=30)
        assert info.value.code() == code, (request, info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        client.stub.GetJob(gateway_pb2.GetJobRequest(job_id="no-such-job"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    client.close()


def test_a_gateway_killed_mid_job_finishes_it_after_a_restart_storing_each_input_once(stack, tmp_path):
    running, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    n = 8
    upload_batch(client, tmp_path, "lab/run-2/", n)
    before = handled(endpoints.metrics["spectra"], "ClassifySpectra")
    job = submit(client, "lab/run-2/")
    deadline = time.monotonic() + 60
    while client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job.done < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (gateway,) = [p for p in running.processes if p.name == "gateway"]
    os.killpg(gateway.popen.pid, signal.SIGKILL)  # no drain, no goodbye: leases left behind
    gateway.popen.wait()
    running.processes.remove(gateway)
    restarted = running.spawn_service("gateway")
    assert restarted.serving.wait(60) and restarted.popen.poll() is None
    finished = wait_for(job.job_id, client)
    assert finished.state == "done" and finished.done == n
    results = {item.result.key for item in finished.items}
    assert len(results) == n
    # each input computed once, plus at most the one item in flight when the gateway died
    computed = handled(endpoints.metrics["spectra"], "ClassifySpectra") - before
    assert n <= computed <= n + 1, computed
    client.close()


def test_cancel_stops_pending_items_and_the_cli_shows_jobs(stack, tmp_path):
    _, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    upload_batch(client, tmp_path, "lab/run-3/", 6)
    job = submit(client, "lab/run-3/")
    cancelled = client.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=30).job
    assert cancelled.cancelled >= 4  # at most the one item running per service (concurrency 1) and one claimed
    final = wait_for(job.job_id, client)
    assert final.state == "cancelled" or final.done + final.cancelled == final.total
    env = dict(os.environ, NANOLENS_GATEWAY=endpoints.gateway)
    shown = subprocess.run([sys.executable, "-m", "nanolens_cli.main", "jobs", "show", job.job_id, "--json"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["job_id"] == job.job_id
    submitted = subprocess.run([sys.executable, "-m", "nanolens_cli.main", "submit", "lab/run-1/", "--analysis",
                                "spectra", "--wait", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 4, submitted.stderr  # the broken input of run-1 fails again
    assert json.loads(submitted.stdout.strip().splitlines()[-1])["failed"] == 1
    listed = subprocess.run([sys.executable, "-m", "nanolens_cli.main", "jobs", "list", "--state", "cancelled"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert job.job_id in listed.stdout or final.state != "cancelled"
    client.close()


def test_results_get_writes_every_items_result_and_the_report(stack, tmp_path):
    _, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    upload_batch(client, tmp_path, "lab/run-4/", 3, broken=1)
    job = wait_for(submit(client, "lab/run-4/").job_id, client)
    assert (job.done, job.failed) == (3, 1)
    deadline = time.monotonic() + 60  # the report follows the job's end (NANOLENS_JOB_REPORT_SECONDS)
    while True:
        try:
            client.download(common_pb2.ObjectRef(bucket="results", key=f"jobs/{job.job_id}/report.html"), timeout=10)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "no report.html within 60 s"
            time.sleep(0.5)
    out = tmp_path / "out"
    env = dict(os.environ, NANOLENS_GATEWAY=endpoints.gateway)
    got = subprocess.run([sys.executable, "-m", "nanolens_cli.main", "results", "get", job.job_id, "--out", str(out),
                          "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 4, got.stderr  # the broken input is not done
    summary = json.loads(got.stdout)
    assert [n["object"] for n in summary["not_done"]] == ["raw/lab/run-4/broken-0.txt"]
    for i in range(3):
        folder = out / "raw" / "lab" / "run-4" / f"spectrum-{i}.txt"
        doc = json.loads((folder / "result.json").read_text())
        assert doc["input"]["key"] == f"lab/run-4/spectrum-{i}.txt"
        assert {a["name"] for a in doc["artifacts"]} <= {p.name for p in folder.iterdir()}
    assert (out / "report.html").read_bytes().startswith(b"<!") and (out / "index.csv").is_file()
    client.close()
