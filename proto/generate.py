"""Generate the Python gRPC stubs from proto/ into gen/python, or check that they are fresh.

    python proto/generate.py           # regenerate
    python proto/generate.py --check   # exit 1 and name the stale files if the tree differs

One protoc (grpcio-tools, pinned) for every consumer; CI runs the check through the tests.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "gen" / "python"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = ["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def stale_files(expected: Path, actual: Path) -> list[str]:
    """Files that differ, are missing, or are extra under ``actual`` compared with ``expected``."""
    want = {p.relative_to(expected) for p in expected.rglob("*") if p.is_file()}
    have = {p.relative_to(actual) for p in actual.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    differ = [p for p in want & have if not filecmp.cmp(expected / p, actual / p, shallow=False)]
    return sorted(str(p) for p in (want ^ have) | set(differ))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = stale_files(Path(tmp), OUT)
        if stale:
            print("stale generated stubs (run `make proto`):\n  " + "\n  ".join(stale), file=sys.stderr)
            return 1
        print("generated stubs are fresh")
        return 0
    shutil.rmtree(OUT / "nanolens", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    generate(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
