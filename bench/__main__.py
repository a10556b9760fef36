"""``python -m bench [--out DIR] [--quick]``: run the benchmarks, print a report, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from bench import spectra


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench-output")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the benchmark runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = spectra.run(quick=args.quick)
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "started": started, "quick": args.quick}
    (out / "spectra.json").write_text(json.dumps(results, indent=2))
    print(spectra.report(results))
    print(f"\nwritten: {out / 'spectra.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
