"""``nanolens results get JOB --out DIR``: a job's results on disk: every item's result.json and
artefacts in a folder named after its input, and the job's report and index when written."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import grpc

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2

REPORT_FILES = ("report.html", "index.csv", "index.parquet")


def item_folder(out: Path, ref: common_pb2.ObjectRef) -> Path:
    """OUT/<bucket>/<key with anything but letters, digits, '.', '-', '_' and '/' replaced>."""
    safe = re.sub(r"[^A-Za-z0-9._/-]", "_", f"{ref.bucket}/{ref.key}").replace("..", "_")
    return out / safe


def get_job_results(client, job_id: str, out: Path, results_bucket: str = "") -> dict:
    """Download what a job produced; returns what was written and what was not."""
    job = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=60,
                             metadata=client.metadata).job
    out.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    for item in job.items:
        if item.state != "done":
            failed.append({"object": f"{item.object.bucket}/{item.object.key}", "state": item.state,
                           "error": item.error})
            continue
        folder = item_folder(out, item.object)
        folder.mkdir(parents=True, exist_ok=True)
        doc = json.loads(client.download(item.result, timeout=120))
        (folder / "result.json").write_text(json.dumps(doc, indent=2))
        written.append(folder / "result.json")
        for artefact in doc.get("artifacts", []):
            target = folder / Path(artefact["name"]).name
            target.write_bytes(client.download(common_pb2.ObjectRef(bucket=artefact["bucket"], key=artefact["key"]),
                                               timeout=300))
            written.append(target)
    bucket = results_bucket or next((i.result.bucket for i in job.items if i.result.key), "")
    for name in REPORT_FILES:
        if not bucket:
            break
        try:
            data = client.download(common_pb2.ObjectRef(bucket=bucket, key=f"jobs/{job_id}/{name}"), timeout=120)
        except grpc.RpcError as exc:  # not written yet (the job is running) or not for this caller
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                continue
            raise
        (out / name).write_bytes(data)
        written.append(out / name)
    return {"job_id": job_id, "state": job.state, "written": [str(p) for p in written], "not_done": failed}


def cmd_results_get(args) -> int:
    from nanolens_cli.jobs import gateway_client

    client = gateway_client(args)
    try:
        summary = get_job_results(client, args.job_id, Path(args.out), args.results_bucket)
    finally:
        client.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"job {args.job_id} ({summary['state']}): {len(summary['written'])} files written to {args.out}")
        for item in summary["not_done"]:
            print(f"  not done: {item['object']} ({item['state']}) {item['error']}", file=sys.stderr)
    return 4 if summary["not_done"] else 0


def add_parser(sub) -> None:
    results = sub.add_parser("results", help="results of jobs")
    rsub = results.add_subparsers(dest="action", required=True)
    get = rsub.add_parser("get", help="every item's result.json and artefacts, the job's report and index, into DIR "
                                      "(exit 4 when some items are not done)")
    get.add_argument("job_id")
    get.add_argument("--out", required=True, help="folder to write into")
    get.add_argument("--results-bucket", default="", help="where the report is (default: the items' results bucket)")
    get.add_argument("--json", action="store_true")
    get.add_argument("--gateway", default="", help="host:port (default: NANOLENS_GATEWAY)")
    get.set_defaults(func=cmd_results_get)
