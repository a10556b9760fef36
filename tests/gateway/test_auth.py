"""The gateway's token interceptor in process: refused without a token, accepted with one for unary and
streaming calls (each counted once in the metrics), probes stay open, a method without an action is closed."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_gateway.auth import GatewayAuth, parse_tokens, token_digest
from nanolens_runtime.server import GrpcApp, Servicer
from nanolens_runtime.settings import ServerSettings

TOKEN = "s3cr3t-token"
TABLE = parse_tokens(json.dumps([{"name": "other", "sha256": token_digest("other"), "actions": ["upload"]},
                                 {"name": "lab", "sha256": token_digest(TOKEN), "actions": ["read"]}]))


class Models(gateway_pb2_grpc.GatewayServicer):
    async def ListModels(self, request, context):
        return gateway_pb2.ListModelsResponse(services=[gateway_pb2.ServiceModels(service="stub")])

    async def Download(self, request, context):
        yield gateway_pb2.DownloadResponse(chunk=b"ok")


@pytest.fixture
async def gateway():
    full_name = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
    app = GrpcApp([Servicer(Models(), gateway_pb2_grpc.add_GatewayServicer_to_server, full_name)],
                  ServerSettings(metrics_port=-1), [GatewayAuth(TABLE, "results")])
    port = await app.start("127.0.0.1:0")
    await app.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await app.server.stop(0)


def refused() -> float:
    return REGISTRY.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "unary", "grpc_service": "nanolens.gateway.v1.Gateway", "grpc_method": "ListModels",
        "grpc_code": "Unauthenticated"}) or 0.0


@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer wrong")], [("authorization", TOKEN)]])
async def test_calls_without_a_valid_token_are_refused(gateway, metadata):
    stub = gateway_pb2_grpc.GatewayStub(gateway)
    before = refused()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListModels(gateway_pb2.ListModelsRequest(), metadata=metadata, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token" in info.value.details()
    for _ in range(200):  # the server counts the call in a finally that may run after the client has the status
        if refused() == before + 1:
            break
        await asyncio.sleep(0.01)  # noqa: ASYNC110
    assert refused() == before + 1


async def test_a_valid_token_is_accepted_for_unary_and_streaming_calls(gateway):
    stub = gateway_pb2_grpc.GatewayStub(gateway)
    metadata = [("authorization", f"Bearer {TOKEN}")]
    response = await stub.ListModels(gateway_pb2.ListModelsRequest(), metadata=metadata, timeout=5)
    assert response.services[0].service == "stub"
    chunks = [r.chunk async for r in stub.Download(gateway_pb2.DownloadRequest(), metadata=metadata, timeout=5)]
    assert chunks == [b"ok"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in stub.Download(gateway_pb2.DownloadRequest(), timeout=5)]
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_stays_open_for_probes(gateway):
    status = await health_pb2_grpc.HealthStub(gateway).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_token_without_the_methods_action_is_denied(gateway):
    stub = gateway_pb2_grpc.GatewayStub(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in stub.Download(gateway_pb2.DownloadRequest(), metadata=[("authorization", "Bearer other")],
                                        timeout=5)]
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'other' may not read" in info.value.details()
