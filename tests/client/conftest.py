"""The client's wheel and a fresh virtual environment holding it and nothing else, shared by the
tests that use the client as a user installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import REPO

CLIENT = REPO / "clients" / "python"


def pip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("client-wheel")
    leftovers = [p for p in (CLIENT / "build", CLIENT / "nanolens_client.egg-info") if not p.exists()]
    try:
        pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(CLIENT))
    finally:  # setuptools builds in the source tree
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
    (built,) = out.glob("nanolens_client-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment with the wheel and its dependencies only."""
    root = tmp_path_factory.mktemp("client-venv")
    house = root / "wheelhouse"
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d",
                              str(house), "grpcio==1.85.1", "protobuf==7.36.2"], capture_output=True, text=True,
                             timeout=300)
    if fetched.returncode != 0:
        pytest.skip(f"the wheelhouse for grpcio and protobuf cannot be fetched: {fetched.stderr[-300:]}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True, timeout=120)
    python = root / "env" / "bin" / "python"
    pip("--python", str(python), "install", "--quiet", "--no-index", "--find-links", str(house), str(wheel))
    return python


def run_script(python: Path, script: str, *args: str, env: dict | None = None, check: bool = True,
               **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run a script with the environment's Python, outside the repository and without its source
    roots; ``popen``: start it and return the process instead."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    argv = [str(python), "-c", textwrap.dedent(script), *args]
    if popen:
        return subprocess.Popen(argv, env=env, cwd=python.parent, text=True, **popen)
    run = subprocess.run(argv, env=env, cwd=python.parent, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 or not check, run.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def run_in():
    return run_script


