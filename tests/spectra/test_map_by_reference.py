"""Large spectral maps read where they are computed, real processes on loopback: with
NANOLENS_BY_REFERENCE_MB=1 a map of 2 MiB or more reaches the spectra service as a header naming a
presigned URL (one message), which the service reads itself with ranged GETs; a smaller one is
streamed through the gateway as before. Both give what the service answers for the same spectra
sent directly. The service reads only from its own object storage and says when storage refuses."""

from __future__ import annotations

import io
import re
import urllib.request

import grpc
import numpy as np
import pytest

from nanolens.gateway.v1 import gateway_pb2
from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_runtime import arrays
from nanolens_runtime.storage import ObjectStore
from nanolens_spectra.synthetic.swcnt import generate_map
from wire import GatewayClient


@pytest.fixture(scope="module")
def byref(start_stack):
    running, endpoints = start_stack("byref", domains=("spectra",), extra_env={"NANOLENS_BY_REFERENCE_MB": "1",
                                                                             "NANOLENS_BLOCK_MB": "1"})
    client = GatewayClient(endpoints.gateway)
    with grpc.insecure_channel(endpoints.services["spectra"]) as channel:
        yield endpoints, client, spectra_pb2_grpc.SpectraServiceStub(channel)
    client.close()


def received(metrics_url: str, method: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^grpc_server_msg_received_total\{[^}]*grpc_method="' + method + r'"[^}]*\} ([0-9.e+]+)$',
                         re.M)
    return sum(float(v) for v in pattern.findall(text))


def npy(cube: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, cube)
    return buffer.getvalue()


@pytest.mark.parametrize("side, dtype, by_reference", [(24, "<f4", True), (8, "<f4", False), (24, ">f8", True)])
def test_a_map_gives_the_services_answer_whether_read_by_reference_or_streamed(byref, tmp_path, side, dtype,
                                                                              by_reference):
    endpoints, client, service = byref
    cube, _ = generate_map(side, side, seed=side)
    cube = cube.astype(dtype)
    assert (len(npy(cube)) >= 2**20) == by_reference
    path = tmp_path / f"map-{side}-{dtype[1:]}.npy"
    path.write_bytes(npy(cube))
    ref = client.upload(path, key=f"byref/{path.name}", timeout=60).object
    before = received(endpoints.metrics["spectra"], "ClassifyMap")
    response = client.analyze(ref, gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP, timeout=300)
    messages = received(endpoints.metrics["spectra"], "ClassifyMap") - before
    assert (messages == 1) == by_reference, messages  # by reference: the header alone, no blocks
    (stored,) = [a.ref for a in response.artifacts if a.name == "probabilities.npy"]
    got = np.load(io.BytesIO(client.download(stored, timeout=60)))
    direct = service.ClassifySpectra(spectra_pb2.ClassifySpectraRequest(
        spectra=arrays.to_proto(cube.reshape(-1, cube.shape[2]).astype(np.float32))), timeout=120)
    np.testing.assert_allclose(got.reshape(-1, got.shape[-1]), arrays.from_proto(direct.probabilities), atol=1e-5)


def classify_map(service, shape, source: spectra_pb2.MapSource):
    header = spectra_pb2.MapHeader(shape=shape, source=source)
    return list(service.ClassifyMap(iter([spectra_pb2.ClassifyMapRequest(header=header)]), timeout=60))


def test_the_service_reads_only_its_own_storage_and_says_when_storage_refuses(byref, tmp_path):
    endpoints, client, service = byref
    with pytest.raises(grpc.RpcError) as elsewhere:
        classify_map(service, [2, 2, 1024], spectra_pb2.MapSource(url="http://169.254.169.254/latest/x",
                                                                  dtype="<f4"))
    assert elsewhere.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.source.url" in elsewhere.value.details() and endpoints.s3 in elsewhere.value.details()
    cube, _ = generate_map(2, 2, seed=1)
    path = tmp_path / "small.npy"
    path.write_bytes(npy(cube))
    ref = client.upload(path, key="byref/small.npy", timeout=60).object
    store = ObjectStore.from_settings(endpoints.storage_settings())
    url = store.presigned_get(ref.bucket, ref.key, ref.version_id, 60)
    answers = classify_map(service, list(cube.shape), spectra_pb2.MapSource(url=url, offset=128, dtype="<f4"))
    assert answers[-1].offset == 4  # the whole map read and classified
    forged = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=" + "0" * 64, url)
    with pytest.raises(grpc.RpcError) as refused:
        classify_map(service, list(cube.shape), spectra_pb2.MapSource(url=forged, offset=128, dtype="<f4"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "refused" in refused.value.details()
    with pytest.raises(grpc.RpcError) as text:
        classify_map(service, list(cube.shape), spectra_pb2.MapSource(url=url, offset=128, dtype="<U4"))
    assert text.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "header.source.dtype" in text.value.details()
