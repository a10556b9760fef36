"""A real PostgreSQL server on loopback for the job-store tests (Debian's postgresql package: initdb
and pg_ctl on a temporary cluster, a free port); skipped with the reason when it is not installed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from nanolens_cli.stack import free_port


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class Postgres:
    """One throwaway cluster; ``database()`` makes a fresh database and returns its URL."""

    def __init__(self, bin_dir: str):
        self.bin_dir = bin_dir
        self.dir = tempfile.mkdtemp(prefix="nanolens-pg-")
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's user
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.dir, "data")

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)

    def start(self) -> None:
        self._run(f"{self.bin_dir}/initdb", "-D", self.data, "-A", "trust", "-U", "nanolens", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run(f"{self.bin_dir}/pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"),
                  "-w", "start")

    def stop(self) -> None:
        try:
            self._run(f"{self.bin_dir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def database(self) -> str:
        import psycopg

        name = f"jobs_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"postgresql://nanolens@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://nanolens@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres():
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed")
    server = Postgres(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a job store lives, once per backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.sqlite")
    return request.getfixturevalue("postgres").database()
