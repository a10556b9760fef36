"""The local stack keeps what it was given: its object store (SeaweedFS) and job database live in
one data folder, so a stack started again on it serves the stored results without computing them,
lists the jobs and their reports, answers searches in SEM collections and still holds the uploads;
a stack killed mid-job finishes the job after a restart, analysing nothing twice."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime.settings import StorageSettings
from nanolens_runtime.storage import ObjectStore
from nanolens_sem.synthetic.textures import generate as generate_texture
from nanolens_spectra.synthetic.swcnt import generate_spectra
from support import REPO, upload

pytestmark = pytest.mark.slow
SPECTRA = gateway_pb2.ANALYSIS_KIND_SPECTRA


def handled(metrics_url: str, method: str) -> float:
    """Calls of ``method`` a service has answered since it started (its gRPC metrics)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^grpc_server_handled_total\{[^}]*grpc_method="' + method + r'"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def spectra_csv(seed: int) -> bytes:
    batch = generate_spectra(n_per_class=1, seed=seed)
    return "\n".join(",".join(f"{v:.4f}" for v in row) for row in np.vstack([batch.axis, batch.spectra])).encode()


def texture_png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.clip(generate_texture(seed, (128, 128)).image, 0, 1) * 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def download(gateway, ref: common_pb2.ObjectRef) -> bytes:
    return b"".join(part.chunk for part in gateway.Download(gateway_pb2.DownloadRequest(object=ref), timeout=60))


def wait_ended(gateway, job_id: str, timeout: float = 240) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=10).job
        if job.state in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not end in {timeout} s: {job}"
        time.sleep(0.2)


def wait_for_object(store: ObjectStore, bucket: str, key: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not store.exists(bucket, key):
        assert time.monotonic() < deadline, f"s3://{bucket}/{key} was not written in {timeout} s"
        time.sleep(0.2)


def test_a_restarted_stack_serves_what_the_last_one_stored(tmp_path):
    data = tmp_path / "data"
    env = {"NANOLENS_JOB_REPORT_SECONDS": "0.3"}
    first = Stack(domains=("spectra", "sem"), data_dir=data, extra_env=env, log_dir=tmp_path / "logs-1")
    endpoints = first.start()
    try:
        with grpc.insecure_channel(endpoints.gateway) as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            spectrum = upload(gateway, spectra_csv(1), "cells.csv")
            analysed = gateway.Analyze(gateway_pb2.AnalyzeRequest(input=spectrum, analysis=SPECTRA), timeout=120)
            assert not analysed.cached
            images = [upload(gateway, texture_png(seed), f"texture-{seed}.png") for seed in range(3)]
            for ref in images:
                gateway.Analyze(gateway_pb2.AnalyzeRequest(input=ref, analysis=gateway_pb2.ANALYSIS_KIND_SEM_IMAGE,
                                                           options={"embed": "kept"}), timeout=120)
            search = gateway_pb2.SearchCollectionRequest(collection="kept", query=images[0], k=5)
            hits_before = [(h.object.key, round(h.score, 5)) for h in gateway.SearchCollection(search, timeout=60).hits]
            for i in range(2):
                upload(gateway, spectra_csv(10 + i), f"s{i}.csv", key=f"restart/run/s{i}.csv")
            job = gateway.SubmitJob(gateway_pb2.SubmitJobRequest(prefix="restart/run/", analysis=SPECTRA),
                                    timeout=30).job
            ended = wait_ended(gateway, job.job_id)
            assert ended.state == "done" and ended.done == 2
            store = ObjectStore.from_settings(endpoints.storage_settings())
            wait_for_object(store, "results", f"jobs/{job.job_id}/report.html")
    finally:
        first.stop()
    assert len(hits_before) == 2

    # Straight after the stop, on the same ports (the previous run's TIME_WAIT sockets are no obstacle)
    second = Stack(domains=("spectra", "sem"), data_dir=data, ports=first.ports, extra_env=env,
                   log_dir=tmp_path / "logs-2")
    again = second.start()
    try:
        assert (again.s3_access_key, again.s3_secret_key) == (endpoints.s3_access_key, endpoints.s3_secret_key)
        with grpc.insecure_channel(again.gateway) as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            served = gateway.Analyze(gateway_pb2.AnalyzeRequest(input=spectrum, analysis=SPECTRA), timeout=120)
            assert served.cached and served.result.key == analysed.result.key
            assert handled(again.metrics["spectra"], "ClassifySpectra") == 0  # nothing computed again
            assert download(gateway, spectrum) == spectra_csv(1)  # the upload itself is still there
            listed = gateway.ListJobs(gateway_pb2.ListJobsRequest(), timeout=30).jobs
            assert [(j.job_id, j.state, j.done) for j in listed] == [(job.job_id, "done", 2)]
            kept = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id, items=True), timeout=30).job
            assert sorted(i.result.key for i in kept.items) == sorted(i.result.key for i in ended.items)
            report = download(gateway, common_pb2.ObjectRef(bucket="results", key=f"jobs/{job.job_id}/report.html"))
            assert b"restart/run/s0.csv" in report
            hits_after = [(h.object.key, round(h.score, 5)) for h in gateway.SearchCollection(search, timeout=60).hits]
            assert hits_after == hits_before
            assert handled(again.metrics["sem"], "AnalyzeImage") == 0  # the query's stored embedding was used
    finally:
        second.stop()


# The stack in a process of its own, as `nanolens up` runs it, so that the test can SIGKILL it.
_RUN_STACK = """
import json, signal, sys
from nanolens_cli.stack import Stack
stack = Stack(domains=("spectra",), data_dir=sys.argv[1], ports=json.loads(sys.argv[2]),
              extra_env={"NANOLENS_JOB_LEASE_SECONDS": "2", "NANOLENS_JOB_CONCURRENCY": "1"})
endpoints = stack.start()
print(json.dumps({"ports": stack.ports, "gateway": endpoints.gateway, "metrics": endpoints.metrics,
                  "s3": [endpoints.s3, endpoints.s3_access_key, endpoints.s3_secret_key]}), flush=True)
signal.signal(signal.SIGTERM, lambda *_: (stack.stop(), sys.exit(0)))
signal.pause()
"""


def run_stack(data, ports: dict[str, int]) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", _RUN_STACK, str(data), json.dumps(ports)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        pytest.fail(f"the stack did not start: {proc.stderr.read()[-3000:]}")
    return proc, json.loads(line)


def test_a_stack_killed_mid_job_finishes_it_after_a_restart_analysing_nothing_twice(tmp_path):
    n = 12
    proc, first = run_stack(tmp_path / "data", {})
    endpoint, access_key, secret_key = first["s3"]
    s3 = ObjectStore.from_settings(StorageSettings(s3_endpoint=endpoint, s3_access_key=access_key,
                                                   s3_secret_key=secret_key)).client
    try:
        with grpc.insecure_channel(first["gateway"]) as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            for i in range(n):
                upload(gateway, spectra_csv(100 + i), f"{i}.csv", key=f"killed/run/{i:02d}.csv")
            job = gateway.SubmitJob(gateway_pb2.SubmitJobRequest(prefix="killed/run/", analysis=SPECTRA),
                                    timeout=30).job
            deadline = time.monotonic() + 120
            while (now := gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id, items=True),
                                         timeout=10).job).done < 2:
                assert time.monotonic() < deadline, now
                time.sleep(0.05)
            done_before = {i.object.key: i.result for i in now.items if i.state == "done"}
            stored_before = {key: s3.stat_object(ref.bucket, ref.key) for key, ref in done_before.items()}
            os.kill(proc.pid, signal.SIGKILL)  # no handler runs: its children are told by the kernel
            proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert 2 <= len(done_before) < n, "the job ended before the kill: nothing was tested"

    # Again on the same ports and data, at once: it waits for the killed stack's children to end
    proc, second = run_stack(tmp_path / "data", first["ports"])
    try:
        with grpc.insecure_channel(second["gateway"]) as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            finished = wait_ended(gateway, job.job_id)
            assert finished.state == "done" and finished.done == n
            assert len({i.result.key for i in finished.items}) == n
            computed = handled(second["metrics"]["spectra"], "ClassifySpectra")
            assert computed <= n - len(done_before), (computed, len(done_before))
            for item in finished.items:  # what was done before the kill was kept, not done again
                if item.object.key in done_before:
                    assert item.result.key == done_before[item.object.key].key
                    stat, kept = s3.stat_object(item.result.bucket, item.result.key), stored_before[item.object.key]
                    assert (stat.etag, stat.last_modified) == (kept.etag, kept.last_modified)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
