"""``nanolens upload``, ``nanolens submit`` and ``nanolens jobs``: files into the raw-data bucket,
and durable batches of analyses through the gateway."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanolens_cli.client import Progress, add_gateway, connect, print_json
from nanolens_client import Job
from nanolens_client.calls import analysis_kind, analysis_names


def _analysis(name: str) -> str:
    """An analysis by its result name (particle_sizes) or enum name (ANALYSIS_KIND_PARTICLE_SIZES)."""
    try:
        analysis_kind(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    return key, value


def _show(job: Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.as_dict()))
        return
    print(f"job {job.job_id}  {job.state}  {job.done}/{job.total} done, {job.failed} failed, {job.running} running, "
          f"{job.pending} pending, {job.cancelled} cancelled  ({job.created})")
    for item in job.items:
        print(f"  {item.state:<9} {item.object.bucket}/{item.object.key}  {item.result or item.error}")


def _exit(job: Job) -> int:
    return 4 if job.state == "failed" else 0


def _upload_folder(client, folder: Path, prefix: str, timeout: float) -> list:
    with Progress(f"upload {folder.name}") as bar:
        return client.upload_folder(folder, prefix, timeout=timeout, on_progress=bar.folder)


def cmd_upload(args) -> int:
    with connect(args) as client:
        uploads = _upload_folder(client, Path(args.folder), args.prefix, args.timeout)
    if args.json:
        print_json([{"path": u.path, "object": str(u.object), "size_bytes": u.size_bytes, "sha256": u.sha256}
                    for u in uploads])
        return 0
    for u in uploads:
        print(f"{u.object}  {u.size_bytes} bytes")
    print(f"{len(uploads)} files under s3://{uploads[0].object.bucket}/{args.prefix.strip('/')}/", file=sys.stderr)
    return 0


def cmd_submit(args) -> int:
    """A local folder is uploaded (under --prefix, default its name) and its files submitted; else
    SOURCE is a key prefix in the bucket (ending in /) or a key, with more keys after it."""
    folder = Path(args.source)
    options = dict(args.option)
    with connect(args) as client:
        if folder.is_dir():
            if args.objects:
                print("error: a folder is submitted alone (its files are the job's items)", file=sys.stderr)
                return 2
            uploads = _upload_folder(client, folder, args.prefix or folder.resolve().name, args.timeout)
            job = client.submit("", args.analysis, keys=[u.object.key for u in uploads],
                                bucket=uploads[0].object.bucket, model=args.model, **options)
        elif args.prefix:
            print(f"error: --prefix is for a local folder, and {folder} is none", file=sys.stderr)
            return 2
        elif args.source.endswith("/") and not args.objects:
            job = client.submit(args.source, args.analysis, bucket=args.bucket, model=args.model, **options)
        else:
            job = client.submit("", args.analysis, keys=[args.source, *args.objects], bucket=args.bucket,
                                model=args.model, **options)
        if args.wait:
            return _watch(client, job, args.json)
    _show(job, args.json)
    return 0


def _watch(client, job: Job | str, as_json: bool) -> int:
    for last in client.watch(job):
        if not as_json:
            sys.stderr.write(f"\rjob {last.job_id[:12]}: {last.done + last.failed + last.cancelled}/{last.total} "
                             f"({last.failed} failed) {last.state}   ")
    if not as_json:
        sys.stderr.write("\n")
    final = client.get_job(job)
    _show(final, as_json)
    return _exit(final)


def cmd_jobs(args) -> int:
    with connect(args) as client:
        if args.action == "list":
            for job in client.list_jobs(state=args.state, limit=args.limit):
                _show(job, args.json)
            return 0
        if args.action == "watch":
            return _watch(client, args.job_id, args.json)
        act = {"show": client.get_job, "cancel": client.cancel, "retry": client.retry_failed}[args.action]
        _show(act(args.job_id), args.json)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    kinds = ", ".join(analysis_names())
    upload = sub.add_parser("upload", help="every file of a local folder into the raw-data bucket under a prefix")
    upload.add_argument("folder")
    upload.add_argument("--prefix", required=True, help="key prefix: FOLDER/a/b.tif becomes PREFIX/a/b.tif "
                                                        "(uploading again stores nothing new)")
    upload.add_argument("--timeout", type=float, default=600.0, help="deadline of each file's upload, seconds")
    upload.add_argument("--json", action="store_true")
    add_gateway(upload)
    upload.set_defaults(func=cmd_upload)

    submit = sub.add_parser("submit", help="analyse a local folder (uploaded first), every object under a prefix, "
                                           "or the keys named, as one durable job")
    submit.add_argument("source", help="a local folder, a key prefix in the bucket (ending in /), or one key")
    submit.add_argument("objects", nargs="*", help="more keys (then SOURCE is a key too)")
    submit.add_argument("--analysis", required=True, type=_analysis, help=f"one of {kinds}")
    submit.add_argument("--prefix", default="", help="for a local folder: the key prefix its files go under "
                                                     "(default: the folder's name)")
    submit.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE")
    submit.add_argument("--model", default="", help="NAME or NAME:VERSION (default: the service's default)")
    submit.add_argument("--bucket", default="", help="input bucket of a prefix or keys (default: the raw bucket)")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends (exit 4 if items failed)")
    submit.add_argument("--timeout", type=float, default=600.0, help="deadline of each file's upload, seconds")
    submit.add_argument("--json", action="store_true")
    add_gateway(submit)
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
        add_gateway(one)
        one.set_defaults(func=cmd_jobs)
