"""``nanolens upload DIR --prefix P`` and ``nanolens submit DIR --analysis KIND`` against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def nanolens(stack, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, **stack[1].client_env())
    return subprocess.run([sys.executable, "-m", "nanolens_cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def spectra_folder(root, n: int = 3, broken: bool = False):
    folder = root / "run"
    (folder / "b").mkdir(parents=True)
    for i in range(n):
        (folder / ("b" if i % 2 else "") / f"s{i}.txt").write_text(
            "".join(f"{100 + 3 * j} {1000 + (j % 7) * 10 + i}\n" for j in range(960)))
    if broken:
        (folder / "broken.txt").write_text("not a spectrum\n")
    return folder


def test_upload_puts_a_folder_under_a_prefix_and_again_stores_nothing_new(stack, tmp_path):
    folder = spectra_folder(tmp_path)
    first = nanolens(stack, "upload", str(folder), "--prefix", "cli-upload/run-1/", "--json")
    assert first.returncode == 0, first.stderr
    stored = json.loads(first.stdout)
    assert [s["object"] for s in stored] == ["s3://raw/cli-upload/run-1/b/s1.txt", "s3://raw/cli-upload/run-1/s0.txt",
                                             "s3://raw/cli-upload/run-1/s2.txt"]
    again = nanolens(stack, "upload", str(folder), "--prefix", "cli-upload/run-1", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == stored
    (folder / "s0.txt").write_text("1 2\n")  # other content under a key that is taken: refused, named
    changed = nanolens(stack, "upload", str(folder), "--prefix", "cli-upload/run-1")
    assert changed.returncode == 1 and "ALREADY_EXISTS" in changed.stderr and "run-1/s0.txt" in changed.stderr
    plain = nanolens(stack, "upload", str(folder / "b"), "--prefix", "cli-upload/run-2")
    size = (folder / "b" / "s1.txt").stat().st_size
    assert plain.returncode == 0 and plain.stdout.split() == ["s3://raw/cli-upload/run-2/s1.txt", str(size), "bytes"]


def test_submit_a_folder_uploads_it_and_runs_exactly_its_files_as_a_job(stack, tmp_path):
    folder = spectra_folder(tmp_path, broken=True)
    done = nanolens(stack, "submit", str(folder), "--analysis", "spectra", "--prefix", "cli-submit/run-1", "--wait",
                    "--json")
    assert done.returncode == 4, done.stderr  # broken.txt fails alone
    job = json.loads(done.stdout.strip().splitlines()[-1])
    assert (job["total"], job["done"], job["failed"]) == (4, 3, 1)
    assert sorted(i["object"] for i in job["items"]) == [f"s3://raw/cli-submit/run-1/{k}" for k in
                                                         ("b/s1.txt", "broken.txt", "s0.txt", "s2.txt")]
    submitted = nanolens(stack, "submit", str(folder / "b"), "--analysis", "particle_sizes", "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["analysis"] == "particle_sizes"  # not waited for
    wrong = nanolens(stack, "submit", str(folder), "--analysis", "spectrum")
    assert wrong.returncode == 2 and "unknown analysis 'spectrum'; one of" in wrong.stderr
    astray = nanolens(stack, "submit", "cli-submit/run-1/", "--analysis", "spectra", "--prefix", "x")
    assert astray.returncode == 2 and "--prefix is for a local folder" in astray.stderr
