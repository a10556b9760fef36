"""nanolens-client as a user installs it: its wheel, built from clients/python, in a fresh virtual
environment holding nothing else (grpcio and protobuf from a wheelhouse, no index), used against
the real stack from there; the science stack is not importable in it; it survives the gateway
being stopped and started again."""

from __future__ import annotations

import json
import signal
import subprocess
import zipfile

import pytest

from support import REPO

pytestmark = pytest.mark.slow

STUBS = REPO / "gen" / "python"
#: the issue's budget for the installed client (site-packages of its environment)
MAX_INSTALLED_MB = 60
NOT_INSTALLED = ("torch", "onnxruntime", "skimage", "scipy", "pandas", "numpy", "nanolens_runtime", "nanolens_cli")


def test_the_wheel_carries_the_generated_stubs_unchanged_and_needs_only_grpc_and_protobuf(wheel):
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    stubs = sorted(n for n in names if n.startswith("nanolens/"))
    assert stubs == sorted(str(p.relative_to(STUBS)) for package in ("common", "gateway")
                           for p in (STUBS / "nanolens" / package).rglob("*_pb2*.py*")
                           if "__pycache__" not in p.parts)  # a run of the suite before leaves bytecode there
    for name in stubs:
        assert archive.read(name) == (STUBS / name).read_bytes(), f"{name} differs from gen/python"
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert sorted(r for r in requires if "extra ==" not in r) == ["grpcio==1.85.1", "protobuf==7.36.2"]
    assert [r.split(";")[0].strip() for r in requires if "extra ==" in r] == ["numpy==2.4.6"]


def test_the_installed_client_is_small_and_brings_no_science_stack(venv, run_in):
    site = next((venv.parent.parent / "lib").glob("python3*/site-packages"))
    size_mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    print(f"installed size: {size_mb:.1f} MB in {site}")
    assert size_mb <= MAX_INSTALLED_MB
    found = json.loads(run_in(venv, """
        import importlib.util, json, sys
        print(json.dumps({name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}))
    """, *NOT_INSTALLED).stdout)
    assert found == dict.fromkeys(NOT_INSTALLED, False)


def test_the_installed_client_analyses_through_the_stack(venv, run_in, stack, tmp_path):
    path = tmp_path / "spectrum.txt"
    path.write_text("".join(f"{100 + 3 * i} {1000 + (i % 5) * 10}\n" for i in range(960)))
    out = json.loads(run_in(venv, """
        import asyncio, json, sys
        import nanolens_client
        from nanolens_client import AsyncClient, Client

        assert "site-packages" in nanolens_client.__file__, nanolens_client.__file__
        with Client(sys.argv[1]) as client:
            first = client.analyse(sys.argv[2], "spectra")
            second = client.analyse(sys.argv[2], "spectra")

        async def more():
            async with AsyncClient(sys.argv[1]) as client:
                return await client.analyse(open(sys.argv[2], "rb").read(), "spectra", filename="s.txt")

        third = asyncio.run(more())
        print(json.dumps({"identities": [first.identity, second.identity], "cached": second.cached,
                          "async_n": third["n_spectra"], "model": first.provenance.model_name}))
    """, stack[1].gateway, str(path)).stdout)
    assert out["identities"][0] == out["identities"][1] and out["cached"]
    assert out["async_n"] == 1 and out["model"]


def test_a_call_waits_out_a_gateway_restart(venv, run_in, stack):
    """The gateway is stopped; a call in the installed client retries until it is back."""
    running, endpoints = stack
    (gateway,) = [p for p in running.processes if p.name == "gateway" and p.popen.poll() is None]
    gateway.popen.send_signal(signal.SIGTERM)
    gateway.popen.wait(60)
    running.processes.remove(gateway)
    caller = run_in(venv, """
        import sys
        from nanolens_client import Client, RetryPolicy

        def told(attempt, error, delay):
            print(f"retry {attempt} {error.code.name}", flush=True)

        with Client(sys.argv[1], retry=RetryPolicy(attempts=1000, max_backoff=1.0, on_retry=told)) as client:
            models = client.list_models(timeout=240)
        print(f"services {len(models.services)}", flush=True)
    """, endpoints.gateway, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = caller.stdout.readline()
        assert first == "retry 1 UNAVAILABLE\n", (first, caller.stderr.read() if caller.poll() is not None else "")
        restarted = running.spawn_service("gateway")
        assert restarted.serving.wait(120) and restarted.popen.poll() is None
        rest, err = caller.communicate(timeout=240)
    finally:
        if caller.poll() is None:
            caller.kill()
    assert caller.returncode == 0, err[-2000:]
    assert rest.splitlines()[-1] == f"services {len(running.domains)}"
