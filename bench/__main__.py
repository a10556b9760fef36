"""``python -m bench [--out DIR] [--quick]``: run the benchmarks, print a report, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from bench import gateway, jobs, landed, lpem, many, search, sem, spectra, storage, tem

SUITES = {"spectra": spectra, "many": many, "tem": tem, "lpem": lpem, "sem": sem, "search": search, "jobs": jobs,
          "landed": landed, "gateway": gateway, "storage": storage}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench-output")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the benchmark runs")
    parser.add_argument("--suite", action="append", choices=list(SUITES),
                        help="run only these (repeatable)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "started": started, "quick": args.quick}
    for name in args.suite or list(SUITES):
        suite = SUITES[name]
        load_before = os.getloadavg()  # the machine may be shared: how busy it was around the suite
        results = suite.run(quick=args.quick)
        results["machine"] = dict(machine, load_average_1_5_15_before=[round(x, 2) for x in load_before],
                                  load_average_1_5_15_after=[round(x, 2) for x in os.getloadavg()])
        (out / f"{name}.json").write_text(json.dumps(results, indent=2))
        print(suite.report(results))
        print(f"load average (1, 5, 15 min) before {results['machine']['load_average_1_5_15_before']}, "
              f"after {results['machine']['load_average_1_5_15_after']}")
        print(f"written: {out / f'{name}.json'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
