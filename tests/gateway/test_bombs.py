"""Decompression bombs through a real gateway on loopback: each of the issue's bombs is refused
(RESOURCE_EXHAUSTED or INVALID_ARGUMENT) and the gateway's resident memory (its kernel-kept high-water
mark, reset first) rises by less than 100 MiB over all of them."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from bench import bombs
from nanolens.gateway.v1 import gateway_pb2
from wire import GatewayClient

BOMBS = [  # (key, analysis, file) as the probe of issue 35 found them
    ("bombs/rgb-13000.png", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.png(13000, 13000)),
    ("bombs/declares-100000.png", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.png(100000, 100000, rows=1)),
    ("bombs/zlib-20000.tif", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.tiff(20000, 20000)),
    ("bombs/declares-100000.npy", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES,
     lambda: bombs.npy_declaring((100000, 100000))),
    ("bombs/spectra-1.75GiB.npz", gateway_pb2.ANALYSIS_KIND_SPECTRA, lambda: bombs.npz(int(1.75 * 2**30))),
    ("bombs/map-1.75GiB.npz", gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP, lambda: bombs.npz(int(1.75 * 2**30))),
]


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack("bomb", domains=("spectra", "tem"))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resident high-water reset")
def test_every_bomb_is_refused_and_the_gateway_stays_within_100_mib(stack, tmp_path):
    running, endpoints = stack
    client = GatewayClient(endpoints.gateway)
    refs = []
    for key, analysis, make in BOMBS:
        path = tmp_path / Path(key).name
        path.write_bytes(make())
        refs.append((key, analysis, client.upload(path, key=key, timeout=120).object))
    (gateway,) = [p for p in running.processes if p.name == "gateway"]
    pid = gateway.popen.pid
    client.list_models()  # the gateway's first calls (model catalogues) are behind it
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the high-water mark starts again from now
    before = status_kib(pid, "VmRSS")
    for key, analysis, ref in refs:
        with pytest.raises(grpc.RpcError) as info:
            client.analyze(ref, analysis, timeout=120)
        code = info.value.code()
        assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT), (key, code,
                                                                                               info.value.details())
        assert "above the" in info.value.details(), (key, info.value.details())
    rise = (status_kib(pid, "VmHWM") - before) / 1024
    assert rise < 100, f"the gateway's resident memory rose by {rise:.0f} MiB"
    client.close()
