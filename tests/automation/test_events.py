"""Bucket events: MinIO's webhook payload (pinned by fixtures), rules, the idempotent enqueue on both
job-store backends, and a real gateway process taking events over HTTP: duplicate, replayed and
out-of-order events give one analysis each (the spectra service's request counter), a wrong token is
refused before the body is read, every malformed request is answered 4xx without a traceback in the
log, an event without an ETag is the same enqueue as one with it, and the reconciliation scan finds
an upload whose event was lost."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from minio import Minio

from nanolens.gateway.v1 import gateway_pb2
from nanolens_cli.stack import free_port
from nanolens_gateway.automation.events import EventIntake, parse_minio_event, parse_rules
from nanolens_gateway.jobs.store import open_store
from nanolens_runtime.storage import ObjectStore
from wire import GatewayClient

FIXTURES = Path(__file__).parent / "fixtures"
RULES = {"rules": [{"bucket": "raw", "prefix": "auto/", "suffix": ".txt", "analysis": "spectra"}]}
TOKEN = "events-test-token"


def event(key: str, etag: str, name: str = "minio_put.json") -> dict:
    payload = json.loads((FIXTURES / name).read_text())
    obj = payload["Records"][0]["s3"]["object"]
    obj["key"] = urllib.parse.quote(key, safe="")
    if "eTag" in obj:
        obj["eTag"] = etag
    payload["Key"] = f"raw/{key}"
    return payload


# --- payloads and rules -------------------------------------------------------------------------


def test_the_minio_payload_gives_the_created_object_with_its_key_decoded():
    payload = json.loads((FIXTURES / "minio_put.json").read_text())
    assert parse_minio_event(payload) == [("raw", "auto/run+1/spectrum-0.txt", "ETAG", "")]
    assert parse_minio_event(json.loads((FIXTURES / "minio_delete.json").read_text())) == []  # removals ignored
    with pytest.raises(ValueError, match="Records"):
        parse_minio_event({"EventName": "s3:ObjectCreated:Put"})
    created = {"eventName": "s3:ObjectCreated:Put"}
    for record, field in [({**created, "s3": "raw/a.txt"}, r"Records\[0\]\.s3 is not"),
                          ({**created, "s3": {"bucket": {"name": "raw"}, "object": {"key": 7}}}, r"object\.key is not"),
                          ({**created, "s3": {"bucket": ["raw"], "object": {"key": "a"}}}, r"s3\.bucket is not"),
                          ({**created, "s3": {"bucket": {"name": "raw"}, "object": {"key": ""}}}, "no key"),
                          ("a record", r"Records\[0\] is not")]:
        with pytest.raises(ValueError, match=field):
            parse_minio_event({"Records": [record]})


def test_rules_are_checked_when_loaded():
    (rule,) = parse_rules(json.dumps(RULES))
    assert rule.analysis == gateway_pb2.ANALYSIS_KIND_SPECTRA
    assert rule.matches("raw", "auto/a.txt") and not rule.matches("raw", "auto/a.tif")
    assert not rule.matches("other", "auto/a.txt") and not rule.matches("raw", "manual/a.txt")
    with pytest.raises(ValueError, match=r"rules\[0\].*'nope'"):
        parse_rules(json.dumps({"rules": [{"bucket": "raw", "analysis": "nope"}]}))
    with pytest.raises(ValueError, match=r"rules\[0\].*typo"):
        parse_rules(json.dumps({"rules": [{"bucket": "raw", "analysis": "spectra", "options": {"typo": "1"}}]}))
    with pytest.raises(ValueError, match="unknown fields"):
        parse_rules(json.dumps({"rules": [{"bucket": "raw", "analysis": "spectra", "prefx": "a/"}]}))
    with pytest.raises(ValueError, match="not JSON"):
        parse_rules("{")


def test_the_enqueue_is_idempotent_per_object_version_on_both_backends(store_location):
    store = open_store(store_location)
    woken = []
    intake = EventIntake(store, parse_rules(json.dumps(RULES)), wake=lambda: woken.append(1))
    (job,) = intake.enqueue("raw", "auto/a.txt", "e1")
    assert intake.enqueue("raw", "auto/a.txt", "e1") == []  # the same event again
    assert EventIntake(open_store(store_location), intake.rules).enqueue("raw", "auto/a.txt", "e1") == []  # replica
    (newer,) = intake.enqueue("raw", "auto/a.txt", "e2")  # a new version of the object: analysed again
    assert intake.enqueue("raw", "auto/a.tif", "e1") == [] and intake.enqueue("raw", "elsewhere/a.txt", "e") == []
    assert len(woken) == 2
    record = store.get(job, items=True)
    assert record.analysis == gateway_pb2.ANALYSIS_KIND_SPECTRA and record.submitted_by == "bucket-events"
    assert [(i.bucket, i.key, i.state) for i in record.items] == [("raw", "auto/a.txt", "pending")]
    assert newer != job and len(store.list()) == 2


# --- a real gateway -----------------------------------------------------------------------------


def handled(metrics_url: str, method: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^grpc_server_handled_total\{[^}]*grpc_method="' + method + r'"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def post(url: str, body, token: str | None = TOKEN) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def events_stack(start_stack, tmp_path_factory):
    rules = tmp_path_factory.mktemp("events") / "rules.json"
    rules.write_text(json.dumps(RULES))
    port = free_port()
    running, endpoints = start_stack("events", domains=("spectra",), extra_env={
        "NANOLENS_EVENTS_PORT": str(port), "NANOLENS_EVENT_RULES": str(rules), "NANOLENS_EVENTS_TOKEN": TOKEN,
        "NANOLENS_EVENTS_SCAN_SECONDS": "0", "NANOLENS_JOB_CONCURRENCY": "1"})
    return running, endpoints, f"http://{running.host}:{port}/events/minio"


def upload(client: GatewayClient, tmp_path: Path, key: str, i: int) -> None:
    path = tmp_path / f"{i}.txt"
    path.write_text("".join(f"{100 + 3 * j} {2000 + (j % 9) * 10 + i}\n" for j in range(960)))  # distinct bytes
    client.upload(path, key=key, timeout=60)


def jobs_done(client: GatewayClient, expected: int, timeout: float = 120) -> list[gateway_pb2.Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = list(client.stub.ListJobs(gateway_pb2.ListJobsRequest(page_size=100), timeout=10).jobs)
        if len(jobs) >= expected and all(j.state in ("done", "failed") for j in jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"{expected} event jobs did not end in {timeout} s")


def test_duplicate_replayed_and_out_of_order_events_give_one_analysis_each(events_stack, tmp_path):
    _, endpoints, url = events_stack
    client = GatewayClient(endpoints.gateway)
    s3 = Minio(endpoints.s3, endpoints.s3_access_key, endpoints.s3_secret_key, secure=False)
    keys = [f"auto/run+1/spectrum-{i}.txt" for i in range(3)]
    for i, key in enumerate(keys):
        upload(client, tmp_path, key, i)
    etags = [s3.stat_object("raw", k).etag.strip('"') for k in keys]
    before = handled(endpoints.metrics["spectra"], "ClassifySpectra")

    assert post(url, event(keys[0], etags[0]), token=None)[0] == 401
    assert post(url, event(keys[0], etags[0]), token="wrong")[0] == 401
    assert post(url, b"{not json")[0] == 400
    status, body = post(url, event(keys[2], etags[2]))  # out of order: the last upload's event first
    assert status == 200 and len(body["jobs"]) == 1
    for key, etag in [(keys[0], etags[0]), (keys[1], etags[1]), (keys[0], etags[0]), (keys[2], etags[2])]:
        assert post(url, event(key, etag))[0] == 200  # duplicates and replays are answered 2xx (MinIO drops them)
    assert post(url, event(keys[0], etags[0], "minio_delete.json")) == (200, {"objects": 0, "jobs": []})
    assert post(url, event("manual/x.txt", "e"))[1]["jobs"] == []  # no rule for it

    jobs = jobs_done(client, 3)
    assert len(jobs) == 3 and all(j.state == "done" and j.total == 1 for j in jobs)
    assert handled(endpoints.metrics["spectra"], "ClassifySpectra") - before == 3
    assert client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=jobs[0].job_id), timeout=10).job.done == 1
    client.close()


def raw_request(url: str, data: bytes, read_timeout: float = 20) -> int:
    """Send ``data`` as it is on one connection; the status of the answer (0: closed without one)."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=read_timeout) as conn:
        conn.sendall(data)
        answer = conn.recv(65536)
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_malformed_events_are_answered_4xx_and_logged_without_tracebacks(events_stack):
    running, _, url = events_stack
    (gateway,) = [p for p in running.processes if p.name == "gateway"]
    logged = len(gateway.lines)
    created = {"eventName": "s3:ObjectCreated:Put"}
    for body in [{"Records": [{**created, "s3": "raw/auto/a.txt"}]},
                 {"Records": [{**created, "s3": {"bucket": {"name": "raw"}, "object": {"key": 12}}}]},
                 {"Records": ["a string"]}, [1, 2], "text"]:
        status, answer = post(url, body)
        assert status == 400 and answer["error"], (body, status)
    assert post(url, b"[" * 100000 + b"]" * 100000)[0] == 400  # nested past the parser's recursion
    head = f"POST /events/minio HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    assert raw_request(url, (head + "Content-Length: -5\r\n\r\n").encode()) == 400
    assert raw_request(url, (head + "Content-Length: lots\r\n\r\n").encode()) == 400
    assert raw_request(url, (head + "Transfer-Encoding: chunked\r\n\r\n").encode()) == 411
    assert raw_request(url, (head + f"Content-Length: {64 << 20}\r\n\r\n").encode()) == 413
    # the token before the body: a wrong one is answered at once, though the declared body never comes
    wrong = "POST /events/minio HTTP/1.1\r\nAuthorization: Bearer wrong\r\nContent-Length: 1000\r\n\r\n"
    assert raw_request(url, wrong.encode(), read_timeout=10) == 401
    for _ in range(20):  # half-open connections: a partial head, then the caller goes
        parsed = urllib.parse.urlsplit(url)
        with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as conn:
            conn.sendall(b"POST /events/minio HTTP/1.1\r\nContent-")
    assert post(url, event("auto/x.txt", "e"), token=None)[0] == 401  # still answering
    lines = gateway.lines[logged:]
    assert not [line for line in lines if "Traceback" in line or '"level": "error"' in line], lines[-5:]


def test_an_event_without_an_etag_is_the_same_enqueue_as_one_with_it(events_stack, tmp_path):
    _, endpoints, url = events_stack
    client = GatewayClient(endpoints.gateway)
    key = "auto/noetag/spectrum-5.txt"
    upload(client, tmp_path, key, 5)
    s3 = Minio(endpoints.s3, endpoints.s3_access_key, endpoints.s3_secret_key, secure=False)
    etag = s3.stat_object("raw", key).etag.strip('"')
    bare = event(key, "")
    del bare["Records"][0]["s3"]["object"]["eTag"]
    status, body = post(url, bare)
    assert status == 200 and len(body["jobs"]) == 1
    assert post(url, event(key, etag)) == (200, {"objects": 1, "jobs": []})  # the same object version
    assert post(url, bare) == (200, {"objects": 1, "jobs": []})
    client.close()


def test_the_reconciliation_scan_finds_an_upload_whose_event_was_lost(events_stack, tmp_path):
    _, endpoints, url = events_stack
    client = GatewayClient(endpoints.gateway)
    upload(client, tmp_path, "auto/lost/spectrum-9.txt", 9)
    store = ObjectStore(Minio(endpoints.s3, endpoints.s3_access_key, endpoints.s3_secret_key, secure=False))
    jobs = open_store(str(tmp_path / "scan.sqlite"))
    intake = EventIntake(jobs, parse_rules(json.dumps(RULES)))
    s3 = Minio(endpoints.s3, endpoints.s3_access_key, endpoints.s3_secret_key, secure=False)
    etag = s3.stat_object("raw", "auto/run+1/spectrum-0.txt").etag.strip('"')
    intake.enqueue("raw", "auto/run+1/spectrum-0.txt", etag)  # this one's event arrived
    found = intake.scan(store)
    listed = [o.object_name for o in s3.list_objects("raw", prefix="auto/", recursive=True)]
    assert found == len(listed) - 1 and "auto/lost/spectrum-9.txt" in {
        i.key for r in jobs.list() for i in jobs.get(r.id, items=True).items}
    assert intake.scan(store) == 0  # a second scan adds nothing
    client.close()
