"""``nanolens results get JOB --out DIR``: a job's results on disk: every item's result.json and
artefacts in a folder named after its input, and the job's report and index when written."""

from __future__ import annotations

import sys

from nanolens_cli.client import add_gateway, connect, print_json


def cmd_results_get(args) -> int:
    with connect(args) as client:
        fetched = client.results(args.job_id, args.out, results_bucket=args.results_bucket)
    not_done = [{"object": f"{i.object.bucket}/{i.object.key}", "state": i.state, "error": i.error}
                for i in fetched.not_done]
    if args.json:
        print_json({"job_id": fetched.job_id, "state": fetched.state, "written": [str(p) for p in fetched.written],
                    "not_done": not_done})
    else:
        print(f"job {args.job_id} ({fetched.state}): {len(fetched.written)} files written to {args.out}")
        for item in not_done:
            print(f"  not done: {item['object']} ({item['state']}) {item['error']}", file=sys.stderr)
    return 4 if not_done else 0


def add_parser(sub) -> None:
    results = sub.add_parser("results", help="results of jobs")
    rsub = results.add_subparsers(dest="action", required=True)
    get = rsub.add_parser("get", help="every item's result.json and artefacts, the job's report and index, into DIR "
                                      "(exit 4 when some items are not done)")
    get.add_argument("job_id")
    get.add_argument("--out", required=True, help="folder to write into")
    get.add_argument("--results-bucket", default="", help="where the report is (default: the items' results bucket)")
    get.add_argument("--json", action="store_true")
    add_gateway(get)
    get.set_defaults(func=cmd_results_get)
