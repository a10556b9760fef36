"""A fifth domain is its contract, its service, an adapter module and one registry line: a toy
domain registered here (its adapter in a temporary folder, its service the stack's spectra
service) is routed, hashed into its results' identity, given its own RPC and access rule, and
listed in the settings, with no edit to the gateway's core."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest

import nanolens_gateway.domains as registry
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.auth import method_actions
from nanolens_gateway.code_identity import result_code_sha256
from nanolens_gateway.dataplane import DataPlane
from nanolens_gateway.server import GatewayServicer
from nanolens_gateway.settings import GatewaySettings
from nanolens_runtime.storage import ObjectStore
from nanolens_spectra.synthetic.swcnt import generate_spectra

pytestmark = pytest.mark.slow
TOY_KIND = 9999  # a new AnalysisKind value: what the toy's line in gateway.proto would add

TOY_ADAPTER = '''
"""A toy domain: counts the spectra of a file, through a spectra-like service."""
import numpy as np

from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_formats.spectra import decode_spectra
from nanolens_gateway.context import AnalysisContext, Outcome
from nanolens_gateway.domains import Analysis, Domain, DomainRpc
from nanolens_gateway.schema import integer
from nanolens_runtime import arrays


async def count(ctx: AnalysisContext, client) -> Outcome:
    decoded = decode_spectra(await ctx.fetch(), ctx.source.key, {})
    request = spectra_pb2.ClassifySpectraRequest(
        spectra=arrays.to_proto(decoded.spectra.astype(np.float32)),
        model=spectra_pb2.ModelSelector(name=ctx.model.name, version=ctx.model.version))
    response = await client.unary("ClassifySpectra", request, ctx.remaining(), f"input {ctx.source.key!r}")
    ctx.absorb(response.provenance)
    return Outcome({"n_counted": len(response.predicted_class)}, [])


async def echo(plane, request):
    return request


DOMAIN = Domain(
    name="toy", title="a toy domain", module="nanolens_spectra", stub=spectra_pb2_grpc.SpectraServiceStub,
    list_models_request=spectra_pb2.ListModelsRequest(),
    analyses=(Analysis(TOY_KIND, "toy_count", count, result={"n_counted": integer("spectra counted")}),),
    summarise=lambda result: [f"{result['n_counted']} spectra"], rpcs=(DomainRpc("ToyEcho", "read", echo),))
'''.replace("TOY_KIND", str(TOY_KIND))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "nanolens_toy_adapter.py").write_text(TOY_ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "DOMAIN_MODULES", (*registry.DOMAIN_MODULES, "nanolens_toy_adapter"))  # the line
    registry.domains.cache_clear()
    yield registry.domain("toy")
    registry.domains.cache_clear()


def test_a_toy_domain_needs_only_its_adapter_and_one_registry_line(toy, stack):
    assert toy.adapter == "nanolens_toy_adapter"
    assert registry.analyses()[TOY_KIND][1].name == "toy_count"
    assert method_actions()["ToyEcho"] == "read"
    assert ("NANOLENS_TOY_ADDR", "", "a toy domain: toy service host:port (empty: off)") in registry.address_settings()

    endpoints = stack[1]
    store = ObjectStore.from_settings(endpoints.storage_settings())
    data = io.BytesIO()
    np.save(data, generate_spectra(n_per_class=1, seed=41).spectra)
    store.put("raw", "toy/three.npy", data.getvalue(), "application/x-npy")
    version = store.stat("raw", "toy/three.npy").version_id
    ref = common_pb2.ObjectRef(bucket="raw", key="toy/three.npy", version_id=version)

    async def body():
        clients = {"toy": toy.client(endpoints.spectra, 64)}
        servicer = GatewayServicer(GatewaySettings(), store, clients)
        echoed = await servicer.ToyEcho(gateway_pb2.AnalyzeRequest(analysis=TOY_KIND), None)  # its RPC is served
        plane = DataPlane(GatewaySettings(), store, clients)
        answer = await plane.analyse(gateway_pb2.AnalyzeRequest(input=ref, analysis=TOY_KIND, force=True), 120)
        return echoed, answer

    echoed, answer = asyncio.run(body())
    assert echoed.analysis == TOY_KIND
    result = json.loads(answer.result_json)
    assert result["analysis"] == "toy_count" and result["n_counted"] == 3
    assert result["provenance"]["adapter_code_sha256"] == result_code_sha256("nanolens_toy_adapter")
    assert "/toy_count/" in answer.result.key
