"""``nanolens submit`` and ``nanolens jobs``: durable batches of analyses through the gateway."""

from __future__ import annotations

import argparse
import json
import os
import sys

from google.protobuf import json_format

from nanolens.gateway.v1 import gateway_pb2

DEFAULT_GATEWAY = "127.0.0.1:50050"


def gateway_client(args):
    from nanolens_cli.client import GatewayClient

    return GatewayClient(args.gateway or os.environ.get("NANOLENS_GATEWAY", DEFAULT_GATEWAY))


def analysis_kind(name: str) -> int:
    """An analysis by its result name (particle_sizes) or enum name (ANALYSIS_KIND_PARTICLE_SIZES)."""
    from nanolens_gateway.domains import analyses

    for kind, (_, analysis) in analyses().items():
        if name in (analysis.name, gateway_pb2.AnalysisKind.Name(kind)):
            return kind
    names = sorted(a.name for _, a in analyses().values())
    raise argparse.ArgumentTypeError(f"unknown analysis {name!r}; one of {', '.join(names)}")


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    return key, value


def _show(job: gateway_pb2.Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(json_format.MessageToDict(job, preserving_proto_field_name=True)))
        return
    print(f"job {job.job_id}  {job.state}  {job.done}/{job.total} done, {job.failed} failed, {job.running} running, "
          f"{job.pending} pending, {job.cancelled} cancelled  ({job.created})")
    for item in job.items:
        where = f"s3://{item.result.bucket}/{item.result.key}" if item.result.key else item.error
        print(f"  {item.state:<9} {item.object.bucket}/{item.object.key}  {where}")


def _exit(job: gateway_pb2.Job) -> int:
    return 0 if job.state == "done" else 4 if job.state == "failed" else 0


def cmd_submit(args) -> int:
    client = gateway_client(args)
    request = gateway_pb2.SubmitJobRequest(analysis=args.analysis, options=dict(args.option), bucket=args.bucket)
    if args.prefix.endswith("/") or not args.objects:
        request.prefix = args.prefix
    else:
        request.objects.add(bucket=args.bucket, key=args.prefix)
    for key in args.objects:
        request.objects.add(bucket=args.bucket, key=key)
    job = client.stub.SubmitJob(request, timeout=60, metadata=client.metadata).job
    if args.wait:
        return _watch(client, job.job_id, args.json)
    _show(job, args.json)
    return 0


def _watch(client, job_id: str, as_json: bool) -> int:
    last = None
    for event in client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), metadata=client.metadata):
        last = event.job
        if as_json:
            continue
        sys.stderr.write(f"\rjob {job_id[:12]}: {last.done + last.failed + last.cancelled}/{last.total} "
                         f"({last.failed} failed) {last.state}   ")
    if not as_json:
        sys.stderr.write("\n")
    job = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id, items=True), timeout=60,
                             metadata=client.metadata).job
    _show(job, as_json)
    return _exit(job)


def cmd_jobs(args) -> int:
    client = gateway_client(args)
    stub, md = client.stub, client.metadata
    if args.action == "list":
        response = stub.ListJobs(gateway_pb2.ListJobsRequest(state=args.state, page_size=args.limit), timeout=60,
                                 metadata=md)
        for job in response.jobs:
            _show(job, args.json)
        return 0
    if args.action == "watch":
        return _watch(client, args.job_id, args.json)
    if args.action == "show":
        job = stub.GetJob(gateway_pb2.GetJobRequest(job_id=args.job_id, items=True), timeout=60, metadata=md).job
    elif args.action == "cancel":
        job = stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=args.job_id), timeout=60, metadata=md).job
    else:
        job = stub.RetryJob(gateway_pb2.RetryJobRequest(job_id=args.job_id), timeout=60, metadata=md).job
    _show(job, args.json)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="analyse every object under a prefix (or the keys named) as one job")
    submit.add_argument("prefix", help="key prefix in the bucket (ending in /), or one key")
    submit.add_argument("objects", nargs="*", help="more keys (then PREFIX is a key too)")
    submit.add_argument("--analysis", required=True, type=analysis_kind, help="e.g. particle_sizes, spectra")
    submit.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE")
    submit.add_argument("--bucket", default="", help="input bucket (default: the gateway's raw bucket)")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends (exit 4 if items failed)")
    submit.add_argument("--json", action="store_true")
    submit.add_argument("--gateway", default="", help="host:port (default: NANOLENS_GATEWAY)")
    submit.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="durable jobs: list, show, watch, cancel, retry")
    jsub = jobs.add_subparsers(dest="action", required=True)
    for action in ("list", "show", "watch", "cancel", "retry"):
        one = jsub.add_parser(action)
        if action == "list":
            one.add_argument("--state", default="", help="pending, running, done, failed or cancelled")
            one.add_argument("--limit", type=int, default=50)
        else:
            one.add_argument("job_id")
        one.add_argument("--json", action="store_true")
        one.add_argument("--gateway", default="", help="host:port (default: NANOLENS_GATEWAY)")
        one.set_defaults(func=cmd_jobs)
