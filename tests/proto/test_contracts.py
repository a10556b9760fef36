"""The contracts: buf lint, breaking-change detection, and generated stubs that are provably fresh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

PROTO = REPO / "proto"


@pytest.fixture(scope="module")
def buf() -> str:
    path = shutil.which("buf") or str(REPO / ".tools/node_modules/.bin/buf")
    if not Path(path).exists():
        pytest.skip("buf is not installed (`make tools` installs it from npm)")
    return path


def run(*args, cwd=PROTO) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean(buf):
    result = run(buf, "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_last_commit(buf):
    result = run(buf, "breaking", "--against", f"{REPO}/.git#ref=HEAD,subdir=proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_check_catches_a_removed_field(buf, tmp_path):
    changed = tmp_path / "proto"
    shutil.copytree(PROTO, changed)
    common = changed / "nanolens/common/v1/common.proto"
    common.write_text(common.read_text().replace("  string version_id = 3;\n", ""))
    result = run(buf, "breaking", str(changed), "--against", str(PROTO))
    assert result.returncode != 0
    assert "version_id" in result.stdout + result.stderr


def test_generated_stubs_are_fresh():
    result = subprocess.run([sys.executable, str(PROTO / "generate.py"), "--check"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_freshness_check_notices_a_stale_stub(tmp_path):
    sys.path.insert(0, str(PROTO))
    try:
        import generate
    finally:
        sys.path.remove(str(PROTO))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    generate.generate(fresh)
    stale = tmp_path / "stale"
    shutil.copytree(fresh, stale)
    target = next(stale.rglob("spectra_pb2.py"))
    target.write_text(target.read_text() + "\n# edited by hand\n")
    assert generate.stale_files(fresh, stale) == [str(target.relative_to(stale))]
