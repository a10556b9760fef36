"""The client guide's complete examples (docs/client.md) run as written: the Python ones with the
installed client in its own environment, the ``buf curl`` one through the gateway's reflection."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from nanolens_client import Client
from support import REPO

pytestmark = pytest.mark.slow

GUIDE = REPO / "docs" / "client.md"
BUF = REPO / ".tools" / "node_modules" / ".bin" / "buf"


def example(name: str) -> str:
    """The fenced block of the guide whose first line names it (``# acquisition_loop.py: ...``)."""
    blocks = re.findall(r"```(?:python|sh)\n(.*?)```", GUIDE.read_text(), re.S)
    found = [b for b in blocks if b.startswith(f"# {name}:")]
    assert len(found) == 1, f"docs/client.md has {len(found)} examples named {name}"
    return found[0]


def test_the_acquisition_loop_sends_each_spectrum(venv, run_in, stack):
    run = run_in(venv, example("acquisition_loop.py"), "3", env={"NANOLENS_GATEWAY": stack[1].gateway})
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["sample 0", "sample 1", "sample 2"], run.stderr
    assert all("p = " in line and "stored at s3://" in line for line in lines)


def test_the_watch_script_follows_a_job_and_fetches_its_results(venv, run_in, stack, tmp_path):
    with Client(stack[1].gateway) as client:
        for i in range(2):
            client.upload("".join(f"{100 + 3 * j} {900 + (j + i) % 9}\n" for j in range(960)).encode(),
                          filename=f"{i}.txt", key=f"guide/watch/{i}.txt")
        job = client.submit("guide/watch/", "spectra")
    out = tmp_path / "out"
    run = run_in(venv, example("watch_job.py"), job.job_id, str(out), env={"NANOLENS_GATEWAY": stack[1].gateway})
    lines = run.stdout.splitlines()
    assert lines[-2].startswith("done      2/2 done, 0 failed") and lines[-1].endswith(f" files in {out}")
    for i in range(2):  # (the job's report may or may not be written yet: it follows the job's end)
        folder = out / "raw" / "guide" / "watch" / f"{i}.txt"
        assert {"result.json", "probabilities.npy", "spectra.png"} <= {p.name for p in folder.iterdir()}


def test_buf_curl_reaches_the_gateway_through_reflection(stack, tmp_path):
    if not BUF.exists() and shutil.which("buf") is None:
        pytest.skip("buf is not installed (make tools)")
    env = dict(os.environ, NANOLENS_GATEWAY=stack[1].gateway,
               PATH=f"{BUF.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", example("buf_curl.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"services"' in run.stdout and '"resultJson"' in run.stdout and "uploads/" in run.stdout
