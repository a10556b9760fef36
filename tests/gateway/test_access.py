"""Who may do what at a real gateway: scoped, hashed, expiring tokens, scopes as folders on '/'
boundaries; object keys checked where
they enter; presigned URLs within scope and lifetime; an audit line per call that never holds a
token; the CLI sending its token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.auth import method_actions, parse_tokens, token_digest
from wire import GatewayClient

TOKENS = {"lab-a": "token-of-lab-a", "lab-b": "token-of-lab-b", "reader": "token-of-reader", "old": "token-old",
          "lab-c": "token-of-lab-c", "admin": "token-of-admin"}
TABLE = [
    {"name": "lab-a", "sha256": token_digest(TOKENS["lab-a"]), "actions": ["read", "upload", "analyse"],
     "scopes": ["raw/lab-a/"]},
    {"name": "lab-b", "sha256": token_digest(TOKENS["lab-b"]),
     "actions": ["read", "upload", "analyse", "submit"],
     "scopes": ["raw/lab-b/"]},
    {"name": "reader", "sha256": token_digest(TOKENS["reader"]), "actions": ["read"]},
    {"name": "old", "sha256": token_digest(TOKENS["old"]), "actions": ["read"], "expires": "2020-01-01T00:00:00Z"},
    {"name": "lab-c", "sha256": token_digest(TOKENS["lab-c"]), "actions": ["read", "upload", "analyse", "submit"],
     "scopes": ["raw/lab-c"]},  # no trailing '/': still the folder lab-c, not every key starting so
    {"name": "admin", "sha256": token_digest(TOKENS["admin"]), "actions": ["read", "upload", "analyse", "submit"]},
]
SPECTRUM = "".join(f"{100 + 3 * i} {1000 + (i % 7) * 10}\n" for i in range(960))


@pytest.fixture(scope="module")
def gateway(start_stack):
    return start_stack("access", extra_env={"NANOLENS_GATEWAY_TOKENS": json.dumps(TABLE),
                                            "NANOLENS_UPLOAD_URL_MAX_SECONDS": "600",
                                 "NANOLENS_JOB_REPORT_SECONDS": "1"}, domains=("spectra",))


def client(endpoints, who: str | None) -> GatewayClient:
    return GatewayClient(endpoints.gateway, token=TOKENS.get(who, who or ""))


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def spectrum(tmp_path: Path) -> Path:
    path = tmp_path / "spectrum.txt"
    path.write_text(SPECTRUM)
    return path


@pytest.mark.parametrize("who", [None, "no-such-token", "old"])
def test_calls_without_a_valid_token_are_unauthenticated(gateway, who):
    _, endpoints = gateway
    error = refused(lambda: client(endpoints, who).list_models())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("expired" in error.details()) == (who == "old")


def test_a_token_works_within_its_scope_and_nowhere_else(gateway, tmp_path):
    _, endpoints = gateway
    a, b, reader = client(endpoints, "lab-a"), client(endpoints, "lab-b"), client(endpoints, "reader")
    uploaded = a.upload(spectrum(tmp_path), timeout=60).object
    assert uploaded.key.startswith("lab-a/uploads/")  # a scoped caller's uploads land in its scope
    result = a.analyze(uploaded, gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=120)
    assert json.loads(a.download(result.result, timeout=30))["input"]["key"] == uploaded.key
    assert reader.download(result.result, timeout=30)  # an unscoped reader reads everything

    for call in (lambda: b.download(result.result, timeout=30), lambda: b.download(uploaded, timeout=30),
                 lambda: b.analyze(uploaded, gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=60),
                 lambda: b.upload(spectrum(tmp_path), key="lab-a/planted.txt", timeout=60),
                 lambda: reader.analyze(uploaded, gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=60),
                 lambda: reader.upload(spectrum(tmp_path), timeout=60)):
        error = refused(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert "may not" in error.details()
    assert refused(lambda: b.download(uploaded, timeout=30)).details().count("outside its scopes") == 1


def test_jobs_are_submitted_within_scope_and_seen_by_their_owner_only(gateway, tmp_path):
    _, endpoints = gateway
    a, b = client(endpoints, "lab-a"), client(endpoints, "lab-b")
    a.upload(spectrum(tmp_path), key="lab-a/run/1.txt", timeout=60)
    b.upload(spectrum(tmp_path), key="lab-b/run/1.txt", timeout=60)

    def submit(who, prefix):
        request = gateway_pb2.SubmitJobRequest(prefix=prefix, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
        return who.stub.SubmitJob(request, timeout=30, metadata=who.metadata).job

    assert "may not submit" in refused(lambda: submit(a, "lab-a/run/")).details()  # no submit action
    outside = refused(lambda: submit(b, "lab-a/run/"))
    assert outside.code() == grpc.StatusCode.PERMISSION_DENIED and "outside its scopes" in outside.details()
    job = submit(b, "lab-b/run/")
    assert job.total == 1 and job.submitted_by == "lab-b"
    other = refused(lambda: a.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=30,
                                          metadata=a.metadata))
    assert other.code() == grpc.StatusCode.NOT_FOUND  # a scoped caller sees its own jobs only


def test_a_scope_is_a_folder_on_slash_boundaries(gateway, tmp_path):
    _, endpoints = gateway
    c, admin = client(endpoints, "lab-c"), client(endpoints, "admin")
    mine = admin.upload(spectrum(tmp_path), key="lab-c/run/1.txt", timeout=60).object
    neighbour = admin.upload(spectrum(tmp_path), key="lab-cd/secret.txt", timeout=60).object
    assert c.download(mine, timeout=30)
    for call in (lambda: c.download(neighbour, timeout=30),
                 lambda: c.analyze(neighbour, gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=60),
                 lambda: c.upload(spectrum(tmp_path), key="lab-cd/planted.txt", timeout=60)):
        error = refused(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "outside its scopes" in error.details()
    assert c.upload(spectrum(tmp_path), timeout=60).object.key.startswith("lab-c/uploads/")
    # a prefix is not a folder: "lab-c" lists lab-cd/ too, and only what the scope reaches becomes the job
    request = gateway_pb2.SubmitJobRequest(prefix="lab-c", analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    job = c.stub.SubmitJob(request, timeout=30, metadata=c.metadata).job
    items = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id, items=True), timeout=30,
                          metadata=c.metadata).job.items
    assert items and all(i.object.key.startswith("lab-c/") for i in items), [i.object.key for i in items]


def test_a_jobs_owner_reads_its_report_and_other_scoped_callers_do_not(gateway, tmp_path):
    _, endpoints = gateway
    a, b = client(endpoints, "lab-a"), client(endpoints, "lab-b")
    b.upload(spectrum(tmp_path), key="lab-b/report-run/1.txt", timeout=60)
    request = gateway_pb2.SubmitJobRequest(prefix="lab-b/report-run/", analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA)
    job = b.stub.SubmitJob(request, timeout=30, metadata=b.metadata).job
    report = common_pb2.ObjectRef(bucket="results", key=f"jobs/{job.job_id}/report.html")
    deadline = time.monotonic() + 120
    while True:  # the report is written once the job has ended
        try:
            page = b.download(report, timeout=30)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline, exc.details()
            time.sleep(0.5)
    assert job.job_id in page.decode()
    assert client(endpoints, "reader").download(report, timeout=30) == page  # unscoped: reads everything
    other = refused(lambda: a.download(report, timeout=30))
    assert other.code() == grpc.StatusCode.NOT_FOUND and job.job_id in other.details()  # as GetJob answers it


@pytest.mark.parametrize("key", ["lab-a/../lab-b/x.txt", "/lab-a/x.txt", "lab-a/x\ny.txt", "lab-a//x.txt"])
def test_bad_keys_are_refused_where_they_enter(gateway, tmp_path, key):
    _, endpoints = gateway
    a = client(endpoints, "lab-a")
    for call in (lambda: a.upload(spectrum(tmp_path), key=key, timeout=30),
                 lambda: a.download(common_pb2.ObjectRef(bucket="raw", key=key), timeout=30),
                 lambda: a.analyze(common_pb2.ObjectRef(bucket="raw", key=key), gateway_pb2.ANALYSIS_KIND_SPECTRA,
                                   timeout=30)):
        error = refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_other_buckets_are_out_of_reach(gateway):
    _, endpoints = gateway
    reader = client(endpoints, "reader")
    error = refused(lambda: reader.download(common_pb2.ObjectRef(bucket="models", key="x/manifest.json"), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "models" in error.details()
    a = client(endpoints, "lab-a")
    error = refused(lambda: a.analyze(common_pb2.ObjectRef(bucket="models", key="lab-a/x.txt"),
                                      gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "input bucket" in error.details()


def test_presigned_urls_stay_in_scope_and_short(gateway):
    _, endpoints = gateway
    a = client(endpoints, "lab-a")

    def url(**fields):
        return a.stub.CreateUploadUrl(gateway_pb2.CreateUploadUrlRequest(**fields), timeout=30, metadata=a.metadata)

    made = url(filename="scan.tif")
    assert made.object.key.startswith("lab-a/uploads/") and "X-Amz-Expires=600" in made.url  # default 900 s, capped
    assert refused(lambda: url(key="lab-b/scan.tif")).code() == grpc.StatusCode.PERMISSION_DENIED
    too_long = refused(lambda: url(filename="scan.tif", expires_seconds=3600))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NANOLENS_UPLOAD_URL_MAX_SECONDS" in too_long.details()


def test_every_call_leaves_an_audit_line_without_the_token(gateway, tmp_path):
    """The lines of this test's own calls, found by what they name (other tests' calls log too, in
    any order, and a line may trail its call's answer)."""
    stack, endpoints = gateway
    (proc,) = [p for p in stack.processes if p.name == "gateway"]

    def audit() -> list[dict]:
        lines = [json.loads(line) for line in list(proc.lines) if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "nanolens.audit"]

    def anonymous_downloads() -> int:
        return sum(1 for line in audit() if line["caller"] == "unauthenticated" and line["code"] == "UNAUTHENTICATED"
                   and line["method"].endswith("/Download"))

    uploaded = client(endpoints, "lab-a").upload(spectrum(tmp_path), timeout=60).object
    elsewhere = common_pb2.ObjectRef(bucket="raw", key=f"lab-a/audit-{uuid.uuid4().hex}")
    refused(lambda: client(endpoints, "lab-b").download(elsewhere, timeout=30))
    anonymous_before = anonymous_downloads()
    refused(lambda: client(endpoints, None).download(elsewhere, timeout=30))
    wanted = {
        "upload": lambda line: line["method"].endswith("/Upload") and line["caller"] == "lab-a"
        and line["code"] == "OK" and line["objects"] == [f"raw/{uploaded.key}"],
        "denied": lambda line: line["caller"] == "lab-b" and line["code"] == "PERMISSION_DENIED"
        and line["objects"] == [f"raw/{elsewhere.key}"],
    }
    deadline = time.monotonic() + 60
    while True:
        found = {name for name, match in wanted.items() if any(match(line) for line in audit())}
        if found == set(wanted) and anonymous_downloads() > anonymous_before:
            break
        assert time.monotonic() < deadline, f"audit lines missing after 60 s: {set(wanted) - found}"
        time.sleep(0.1)
    everything = "".join(proc.lines)
    assert not any(token in everything for token in TOKENS.values())


def test_the_cli_sends_its_token(gateway):
    _, endpoints = gateway
    env = dict(os.environ, NANOLENS_GATEWAY=endpoints.gateway)
    env.pop("NANOLENS_TOKEN", None)
    run = [sys.executable, "-m", "nanolens_cli.main", "models", "list"]
    denied = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    allowed = subprocess.run(run, env=dict(env, NANOLENS_TOKEN=TOKENS["reader"]), capture_output=True, text=True,
                             timeout=60)
    assert allowed.returncode == 0 and "swcnt-endosome" in allowed.stdout


def test_every_gateway_method_says_what_it_needs():
    methods = {m.name for m in gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods}
    missing = methods - set(method_actions())
    assert not missing, f"methods without an action (auth.CORE_METHOD_ACTIONS or a DomainRpc): {missing}"


@pytest.mark.parametrize("table, problem", [
    ("tokens", "not JSON"),
    ('{"name": "x"}', "JSON list"),
    ('[{"name": "x", "sha256": "abc", "actions": ["read"]}]', "64 lower-case hex"),
    (json.dumps([{"name": "x", "sha256": "0" * 64, "actions": ["fly"]}]), "actions"),
    (json.dumps([{"name": "x", "sha256": "0" * 64, "actions": ["read"], "scopes": ["raw/../x"]}]), "scopes"),
    (json.dumps([{"name": "x", "sha256": "0" * 64, "actions": ["read"], "expires": "soon"}]), "ISO 8601"),
    (json.dumps([{"name": "x", "sha256": "0" * 64, "actions": ["read"], "role": "admin"}]), "unknown fields"),
    (json.dumps([{"name": "x", "sha256": "0" * 64, "actions": ["read"]}] * 2), "twice"),
])
def test_a_broken_token_table_is_refused_naming_the_problem(table, problem):
    with pytest.raises(ValueError, match=problem):
        parse_tokens(table)


def test_the_token_command_makes_an_entry_the_gateway_accepts():
    made = subprocess.run([sys.executable, "-m", "nanolens_cli.main", "token", "create", "--name", "tem-01",
                           "--actions", "read,analyse", "--scope", "raw/tem-01/", "--expires", "30d"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stderr.strip().splitlines()[-1]
    (entry,) = parse_tokens("[" + made.stdout + "]")
    assert entry.sha256.hex() == token_digest(token) and token not in made.stdout
    assert entry.scopes == ("raw/tem-01/",) and entry.actions == {"read", "analyse"}
    assert 29 * 86400 < entry.expires - time.time() < 31 * 86400
