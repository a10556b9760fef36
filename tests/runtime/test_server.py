"""The shared server on a free port with a real channel: error mapping, metrics, health, drain, the
concurrency limit (health exempt, refusals counted)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_runtime.errors import InvalidArgument, NotFound
from nanolens_runtime.server import Servicer, create_server
from nanolens_runtime.settings import ServerSettings

SERVICE = "nanolens.spectra.v1.SpectraService"


class Scripted(spectra_pb2_grpc.SpectraServiceServicer):
    """Behaves as the model name in the request says."""

    def __init__(self):
        self.release = asyncio.Event()

    async def ClassifySpectra(self, request, context):
        action = request.model.name
        if action == "invalid":
            raise InvalidArgument("spectra must be N x C", field="spectra.shape")
        if action == "missing":
            raise NotFound("no model named 'missing'", "model", "missing")
        if action == "bug":
            raise RuntimeError("secret detail from deep inside")
        if action == "slow":
            await self.release.wait()
        return spectra_pb2.ClassifySpectraResponse(predicted_class=[1])

    async def ClassifyMap(self, request_iterator, context):
        n = 0
        async for _ in request_iterator:
            n += 1
            if n == 3:
                raise InvalidArgument("third block is bad", field="block")
            yield spectra_pb2.ClassifyMapResponse(offset=n)


def handled(method: str, code: str, rpc_type: str = "unary") -> float:
    return REGISTRY.get_sample_value("grpc_server_handled_total", {
        "grpc_type": rpc_type, "grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}) or 0.0


@pytest.fixture
async def server():
    impl = Scripted()
    app, port = await create_server([Servicer(impl, spectra_pb2_grpc.add_SpectraServiceServicer_to_server, SERVICE)])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield app, impl, spectra_pb2_grpc.SpectraServiceStub(channel), channel
    await channel.close()
    await app.server.stop(0)


async def eventually(read, expected):
    """The server observes a call in its ``finally``, which may run just after the client has the status."""
    for _ in range(200):  # up to 2 s
        if read() == expected:
            break
        await asyncio.sleep(0.01)  # noqa: ASYNC110 - polling a counter, there is no event to wait on
    return read()


def request(action: str) -> spectra_pb2.ClassifySpectraRequest:
    return spectra_pb2.ClassifySpectraRequest(model=spectra_pb2.ModelSelector(name=action))


async def test_invalid_argument_names_the_field_and_is_counted(server):
    _, _, stub, _ = server
    before = handled("ClassifySpectra", "InvalidArgument")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ClassifySpectra(request("invalid"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "spectra.shape"
    assert await eventually(lambda: handled("ClassifySpectra", "InvalidArgument"), before + 1) == before + 1


async def test_not_found_and_ok_codes(server):
    _, _, stub, _ = server
    ok_before, nf_before = handled("ClassifySpectra", "OK"), handled("ClassifySpectra", "NotFound")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ClassifySpectra(request("missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await stub.ClassifySpectra(request("ok"))).predicted_class == [1]
    assert await eventually(lambda: handled("ClassifySpectra", "NotFound"), nf_before + 1) == nf_before + 1
    assert await eventually(lambda: handled("ClassifySpectra", "OK"), ok_before + 1) == ok_before + 1


async def test_bug_is_internal_with_a_generic_message(server, caplog):
    _, _, stub, _ = server
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ClassifySpectra(request("bug"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in info.value.details()
    assert any("secret detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_streaming_error_metrics_after_the_call(server):
    _, _, stub, _ = server
    before = handled("ClassifyMap", "InvalidArgument", "bidi_stream")
    sent_before = REGISTRY.get_sample_value("grpc_server_msg_sent_total", {
        "grpc_type": "bidi_stream", "grpc_service": SERVICE, "grpc_method": "ClassifyMap"}) or 0.0

    async def blocks():
        for _ in range(5):
            yield spectra_pb2.ClassifyMapRequest(header=spectra_pb2.MapHeader())

    call = stub.ClassifyMap(blocks())
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for response in call:
            got.append(response.offset)
    assert got == [1, 2]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bidi = lambda: handled("ClassifyMap", "InvalidArgument", "bidi_stream")  # noqa: E731
    assert await eventually(bidi, before + 1) == before + 1
    sent = REGISTRY.get_sample_value("grpc_server_msg_sent_total", {
        "grpc_type": "bidi_stream", "grpc_service": SERVICE, "grpc_method": "ClassifyMap"})
    assert sent == sent_before + 2
    count = REGISTRY.get_sample_value("grpc_server_handling_seconds_count", {
        "grpc_type": "bidi_stream", "grpc_service": SERVICE, "grpc_method": "ClassifyMap"})
    assert count >= 1


async def test_health_is_not_serving_until_marked(server):
    app, _, _, channel = server
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service=SERVICE)
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
    await app.set_serving(False)
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_drain_finishes_in_flight_calls_and_refuses_new_ones(server):
    app, impl, stub, channel = server
    health = health_pb2_grpc.HealthStub(channel)
    in_flight = asyncio.ensure_future(stub.ClassifySpectra(request("slow")))
    await asyncio.sleep(0.2)
    drain = asyncio.ensure_future(app.drain(grace=10, delay=0.5))
    await asyncio.sleep(0.1)
    # During the delay: NOT_SERVING, yet calls are still taken (load balancers are catching up).
    status = (await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert (await stub.ClassifySpectra(request("ok"), timeout=5)).predicted_class == [1]
    await asyncio.sleep(0.6)
    # After it, new calls are refused while the old one is still running.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ClassifySpectra(request("ok"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not in_flight.done()
    impl.release.set()
    assert (await in_flight).predicted_class == [1]
    await drain
    with pytest.raises(grpc.aio.AioRpcError):
        await health.Check(health_pb2.HealthCheckRequest(), timeout=2)


async def test_at_the_concurrency_limit_calls_are_refused_and_counted_and_health_still_answers():
    impl = Scripted()
    app, port = await create_server([Servicer(impl, spectra_pb2_grpc.add_SpectraServiceServicer_to_server, SERVICE)],
                                    settings=ServerSettings(metrics_port=-1, max_concurrent_rpcs=2))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub, health = spectra_pb2_grpc.SpectraServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "ClassifySpectra"}
    refused = REGISTRY.get_sample_value("nanolens_rpc_refused_total", labels) or 0.0
    exhausted = handled("ClassifySpectra", "ResourceExhausted")
    try:
        held = [asyncio.ensure_future(stub.ClassifySpectra(request("slow"))) for _ in range(2)]
        assert await eventually(lambda: app.calls.limit.in_flight, 2) == 2  # both slots taken
        for _ in range(5):  # health checks are never refused
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ClassifySpectra(request("ok"), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "NANOLENS_MAX_CONCURRENT_RPCS" in info.value.details()
        assert REGISTRY.get_sample_value("nanolens_rpc_refused_total", labels) == refused + 1
        assert await eventually(lambda: handled("ClassifySpectra", "ResourceExhausted"), exhausted + 1) == exhausted + 1
        impl.release.set()
        for call in held:
            assert (await call).predicted_class == [1]
        assert (await stub.ClassifySpectra(request("ok"), timeout=5)).predicted_class == [1]  # a slot again
    finally:
        await channel.close()
        await app.server.stop(0)
