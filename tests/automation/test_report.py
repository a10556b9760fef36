"""The job report, on a real gateway process: once a job ends, report.html (summary, pictures,
errors, provenance), index.csv and index.parquet appear under results/jobs/<job id>/, one row per
item; a retry that changes the outcome writes the report again."""

from __future__ import annotations

import csv
import io
import time

import pyarrow.parquet as pq
import pytest
from minio import Minio
from minio.error import S3Error

from nanolens.gateway.v1 import gateway_pb2
from wire import GatewayClient


@pytest.fixture(scope="module")
def report_stack(start_stack):
    return start_stack("report", extra_env={"NANOLENS_JOB_REPORT_SECONDS": "0.3", "NANOLENS_JOB_CONCURRENCY": "1"},
                       domains=("spectra",))


def fetch(s3: Minio, key: str, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = s3.get_object("results", key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise
        time.sleep(0.2)
    raise AssertionError(f"results/{key} was not written in {timeout} s")


def wait_ended(client: GatewayClient, job_id: str, timeout: float = 120) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=10).job
        if job.state in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


def test_an_ended_job_gets_its_report_and_index(report_stack, tmp_path):
    _, endpoints = report_stack
    client = GatewayClient(endpoints.gateway)
    s3 = Minio(endpoints.s3, endpoints.s3_access_key, endpoints.s3_secret_key, secure=False)
    for i in range(3):
        path = tmp_path / f"s{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {3000 + (j % 11) * 10 + i}\n" for j in range(960)))
        client.upload(path, key=f"report/run/spectrum-{i}.txt", timeout=60)
    (tmp_path / "broken.txt").write_text("not a spectrum <script>\n")
    client.upload(tmp_path / "broken.txt", key="report/run/broken.txt", timeout=60)
    job = client.stub.SubmitJob(gateway_pb2.SubmitJobRequest(prefix="report/run/",
                                                             analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA),
                                timeout=30).job
    ended = wait_ended(client, job.job_id)
    assert (ended.done, ended.failed) == (3, 1)
    prefix = f"jobs/{job.job_id}/"

    page = fetch(s3, prefix + "report.html").decode()
    rows = list(csv.DictReader(io.StringIO(fetch(s3, prefix + "index.csv").decode())))
    table = pq.read_table(io.BytesIO(fetch(s3, prefix + "index.parquet")))
    assert len(rows) == table.num_rows == 4
    assert sorted(r["state"] for r in rows) == ["done", "done", "done", "failed"]
    assert table.column("attempts").type.id == table.schema.field("item").type.id  # numbers stay numbers
    (bad,) = [r for r in rows if r["state"] == "failed"]
    assert bad["key"] == "report/run/broken.txt" and bad["error"].startswith("INVALID_ARGUMENT")
    done = {i.object.key: i.result.key for i in ended.items if i.state == "done"}
    assert {r["key"]: r["result_key"] for r in rows if r["state"] == "done"} == done
    for key in done:
        assert key in page
    assert page.count("<img ") == 3 and "data:image/jpeg;base64," in page  # each result's spectra.png, small
    assert page.count("<td class='verdict ") == 4 and rows[0]["verdict"] in ("trustworthy", "do not trust", "")
    assert "Errors (1)" in page and "INVALID_ARGUMENT" in page
    assert "<script>" not in page  # text from inputs and errors is escaped
    assert "Provenance" in page

    # the broken input is replaced by a good one in the bucket and the failed item retried: the report follows
    good = "".join(f"{100 + 3 * j} {3500 + (j % 13) * 10}\n" for j in range(960)).encode()
    s3.put_object("raw", "report/run/broken.txt", io.BytesIO(good), len(good))  # the instrument writes it again
    client.stub.RetryJob(gateway_pb2.RetryJobRequest(job_id=job.job_id), timeout=30)
    assert wait_ended(client, job.job_id).done == 4
    deadline = time.monotonic() + 60
    while True:  # the index is written before the page: wait for both
        rows = list(csv.DictReader(io.StringIO(fetch(s3, prefix + "index.csv").decode())))
        if all(r["state"] == "done" for r in rows) and "Errors (0)" in fetch(s3, prefix + "report.html").decode():
            break
        assert time.monotonic() < deadline, "the report was not written again after the retry"
        time.sleep(0.2)
    assert len(rows) == 4
    client.close()
