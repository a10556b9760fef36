"""The data plane in process, on the stack's real S3 server and spectra service: the transport-free
``analyse`` that Analyze, AnalyzeStream and the job runner share, and what its result identity holds."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nanolens_gateway.dataplane as dataplane
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.code_identity import result_code_sha256
from nanolens_gateway.dataplane import DataPlane
from nanolens_gateway.domains import domain
from nanolens_gateway.settings import GatewaySettings
from nanolens_runtime.errors import FailedPrecondition, InvalidArgument
from nanolens_runtime.storage import ObjectStore
from nanolens_spectra.synthetic.swcnt import generate_spectra

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SPECTRA = gateway_pb2.ANALYSIS_KIND_SPECTRA


def run(coroutine_factory):
    """Run one async test body on a fresh loop (clients are made inside it: channels are loop-bound)."""
    return asyncio.run(coroutine_factory())


def plane_on(stack, services=("spectra",)) -> DataPlane:
    endpoints = stack[1]
    store = ObjectStore.from_settings(endpoints.storage_settings())
    clients = {name: domain(name).client(getattr(endpoints, name), 64) for name in services}
    return DataPlane(GatewaySettings(), store, clients)


@pytest.fixture(scope="module")
def spectra_ref(stack) -> common_pb2.ObjectRef:
    batch = generate_spectra(n_per_class=2, seed=31)
    data = io.BytesIO()
    np.save(data, batch.spectra)
    store = plane_on(stack, ()).store
    key = "dataplane/spectra-31.npy"
    if not store.exists("raw", key):
        store.put("raw", key, data.getvalue(), "application/x-npy")
    info = store.stat("raw", key)
    return common_pb2.ObjectRef(bucket="raw", key=key, version_id=info.version_id)


def test_a_result_stored_under_old_adapter_code_is_recomputed_not_served(stack, spectra_ref, tmp_path, monkeypatch):
    request = gateway_pb2.AnalyzeRequest(input=spectra_ref, analysis=SPECTRA)

    async def analyse_twice():
        plane = plane_on(stack)
        first = await plane.analyse(request, 120)
        second = await plane.analyse(request, 120)
        return first, second

    first, second = run(analyse_twice)
    assert second.cached and second.result.key == first.result.key
    stored = json.loads(first.result_json)
    assert stored["provenance"]["adapter_code_sha256"] == result_code_sha256("nanolens_gateway.adapters.spectra")

    # The spectra text reader is fixed: the adapter's code digest moves, so its old answers are not served.
    roots = (tmp_path / "gateway", tmp_path / "formats")
    shutil.copytree(REPO / "gateway", roots[0], ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "formats", roots[1], ignore=shutil.ignore_patterns("__pycache__"))
    reader = roots[1] / "nanolens_formats/spectra_text.py"
    reader.write_text(reader.read_text().replace("def read_text_spectra(", "FIXED = True\n\n\ndef read_text_spectra("))
    monkeypatch.setattr(dataplane, "adapter_sha256", lambda module: result_code_sha256(module, roots))

    async def analyse_after_the_fix():
        plane = plane_on(stack)
        return await plane.analyse(request, 120), await plane.analyse(request, 120)

    fixed, fixed_again = run(analyse_after_the_fix)
    assert not fixed.cached and fixed.result.key != first.result.key
    new = json.loads(fixed.result_json)
    assert new["identity"] != stored["identity"]
    assert new["provenance"]["adapter_code_sha256"] == result_code_sha256("nanolens_gateway.adapters.spectra", roots)
    assert fixed_again.cached and fixed_again.result.key == fixed.result.key


def test_the_data_plane_takes_no_transport_and_refuses_what_it_cannot_route(stack, spectra_ref):
    async def body():
        plane = plane_on(stack, ())  # no domain service configured
        with pytest.raises(FailedPrecondition, match="NANOLENS_SPECTRA_ADDR"):
            await plane.analyse(gateway_pb2.AnalyzeRequest(input=spectra_ref, analysis=SPECTRA))
        with pytest.raises(InvalidArgument) as unknown:
            await plane.analyse(gateway_pb2.AnalyzeRequest(input=spectra_ref, analysis=999))
        assert unknown.value.field == "analysis"
        plane = plane_on(stack)
        with pytest.raises(InvalidArgument) as bucket:
            await plane.analyse(gateway_pb2.AnalyzeRequest(
                input=common_pb2.ObjectRef(bucket="results", key=spectra_ref.key), analysis=SPECTRA))
        assert bucket.value.field == "input.bucket"
        answer = await plane.analyse(gateway_pb2.AnalyzeRequest(input=spectra_ref, analysis=SPECTRA))  # no deadline
        assert json.loads(answer.result_json)["n_spectra"] == 6

    run(body)
