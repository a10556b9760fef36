"""The platform as it runs: S3 server, spectra service and gateway as real processes on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime import arrays
from nanolens_spectra.synthetic.swcnt import generate_map, generate_spectra
from support import LIMIT_MB, REPO, upload

pytestmark = pytest.mark.slow
SPECTRA = gateway_pb2.ANALYSIS_KIND_SPECTRA
MAP = gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP


@pytest.fixture(scope="module")
def spectra_stub(stack):
    channel = grpc.insecure_channel(stack[1].spectra)
    yield spectra_pb2_grpc.SpectraServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def samples():
    batch = generate_spectra(n_per_class=3, seed=11)
    cube, truth = generate_map(32, 32, seed=12)
    return batch, cube, truth


def npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def analyze(gateway, ref, kind=SPECTRA, timeout=120, **kwargs) -> gateway_pb2.AnalyzeResponse:
    return gateway.Analyze(gateway_pb2.AnalyzeRequest(input=ref, analysis=kind, **kwargs), timeout=timeout)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_sum(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == want for k, want in labels.items()))


def assert_healthy(stack):
    for address in (stack[1].spectra, stack[1].gateway):
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, address


def test_models_are_listed_with_provenance(gateway):
    services = gateway.ListModels(gateway_pb2.ListModelsRequest(), timeout=30).services
    models = next(s.models for s in services if s.service == "spectra")
    default = [m for m in models if m.is_default]
    assert len(default) == 1 and len(default[0].sha256) == 64
    assert list(default[0].class_names) == ["early_endosome", "late_endosome", "lysosome"]
    assert default[0].metrics["cv_accuracy_mean"] > 0.5


def test_matrix_csv_is_classified_with_artefacts(gateway, samples):
    batch = samples[0]
    csv = "\n".join(",".join(f"{v:.4f}" for v in row) for row in np.vstack([batch.axis, batch.spectra]))
    response = analyze(gateway, upload(gateway, csv.encode(), "cells.csv"))
    result = json.loads(response.result_json)
    assert result["n_spectra"] == len(batch.labels)
    predicted = [result["class_names"].index(row["class"]) for row in result["spectra"]]
    assert np.mean(np.array(predicted) == batch.labels) >= 0.6  # 9 spectra; chance is 1/3
    names = {a.name: a for a in response.artifacts}
    assert set(names) == {"probabilities.npy", "ood_score.npy", "spectra.png"}
    assert result["quality"]["trustworthy"] and result["quality"]["n_out_of_domain"] == 0  # 9 like the training
    assert not any(row["out_of_domain"] for row in result["spectra"])
    png = b"".join(r.chunk for r in gateway.Download(gateway_pb2.DownloadRequest(object=names["spectra.png"].ref)))
    assert png.startswith(b"\x89PNG") and len(png) == names["spectra.png"].size_bytes
    probs = np.load(io.BytesIO(b"".join(
        r.chunk for r in gateway.Download(gateway_pb2.DownloadRequest(object=names["probabilities.npy"].ref)))))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    assert response.provenance.model_name == "swcnt-endosome"
    assert {t.stage for t in response.provenance.timings} >= {"fetch", "decode", "service.inference"}


def test_two_column_text_file(gateway, samples):
    batch = samples[0]
    text = "\n".join(f"{x:.3f}\t{y:.3f}" for x, y in zip(batch.axis, batch.spectra[4], strict=True))
    result = json.loads(analyze(gateway, upload(gateway, text.encode(), "one.txt")).result_json)
    assert result["n_spectra"] == 1


def test_same_input_and_model_give_the_stored_result(gateway, samples):
    ref = upload(gateway, npy(samples[0].spectra), "again.npy")
    first = analyze(gateway, ref)
    second = analyze(gateway, ref)
    assert not first.cached and second.cached
    assert second.job_id == first.job_id and second.result.key == first.result.key
    assert not analyze(gateway, ref, force=True).cached
    array = analyze(gateway, ref, options={"array_key": "spectra"})  # options are part of the identity
    assert not array.cached and array.result.key != first.result.key


def test_unknown_option_keys_are_refused_before_the_fetch(gateway, samples):
    ref = upload(gateway, npy(samples[0].spectra), "typo.npy")
    first = analyze(gateway, ref)
    missing = common_pb2.ObjectRef(bucket="raw", key="no/such/object.tif")
    for kind, ref_, options, known in [
            (gateway_pb2.ANALYSIS_KIND_SPECTRA, ref, {"note": "x"}, "array_key"),
            (gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP, ref, {"arraykey": "m"}, "array_key"),
            # a typo would otherwise run the default method; the object is not even looked up
            (gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, missing, {"metod": "watershed"},
             "method, pixel_size_nm, bright_particles, tta"),
            (gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, missing, {"method": "cnn", "METHOD": "hough", "TTA": "1"},
             "method")]:
        with pytest.raises(grpc.RpcError) as info:
            analyze(gateway, ref_, kind, options=options)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        typos = ", ".join(repr(k) for k in sorted(set(options) - {"method"}))
        assert f"option {typos} " in info.value.details() and known in info.value.details()
    assert analyze(gateway, ref).cached and analyze(gateway, ref).job_id == first.job_id  # nothing stored is lost


def test_map_is_streamed_in_blocks_and_matches_direct_classification(stack, gateway, spectra_stub, samples):
    cube = samples[1]
    before = scrape(stack[1].metrics["spectra"])
    response = analyze(gateway, upload(gateway, npy(cube), "map.npy"), MAP)
    after = scrape(stack[1].metrics["spectra"])
    received = metric_sum(after, "grpc_server_msg_received_total", grpc_method="ClassifyMap") - \
        metric_sum(before, "grpc_server_msg_received_total", grpc_method="ClassifyMap")
    assert received >= 1 + 4  # header + a 4 MiB map in 1 MiB blocks
    artefacts = {a.name: a for a in response.artifacts}
    assert set(artefacts) == {"class_map.npy", "probabilities.npy", "ood_score.npy", "class_map.png",
                              "probability_maps.png"}
    fetch = lambda name: b"".join(r.chunk for r in gateway.Download(  # noqa: E731
        gateway_pb2.DownloadRequest(object=artefacts[name].ref)))
    class_map, probs = np.load(io.BytesIO(fetch("class_map.npy"))), np.load(io.BytesIO(fetch("probabilities.npy")))
    assert class_map.shape == (32, 32) and probs.shape == (32, 32, 3)
    direct = spectra_stub.ClassifySpectra(spectra_pb2.ClassifySpectraRequest(
        spectra=arrays.to_proto(cube.reshape(-1, cube.shape[2])[:50])), timeout=60)
    np.testing.assert_allclose(probs.reshape(-1, 3)[:50], arrays.from_proto(direct.probabilities), atol=1e-5)
    result = json.loads(response.result_json)
    assert abs(sum(result["class_fractions"].values()) - 1) < 1e-4
    # Synthetic like the training data: a few noisy pixels out of domain (measured 1.5 %), not a warning.
    assert result["quality"]["trustworthy"] and result["quality"]["out_of_domain_fraction"] < 0.05


def polystyrene(axis: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n noisy Raman spectra of polystyrene (ring modes 620, 1001, 1031, 1583, 1602 cm^-1): a material
    the SWCNT endosome classifier never saw."""
    lorentz = lambda centre, width: 1 / (1 + ((axis - centre) / width) ** 2)  # noqa: E731
    peaks = lorentz(1001, 4) + 0.3 * lorentz(1031, 4) + 0.5 * lorentz(1602, 5) + 0.2 * lorentz(1583, 5) + \
        0.4 * lorentz(620, 5)
    rng = np.random.default_rng(seed)
    return (800 * peaks + 200 + rng.normal(0, 5, (n, axis.size))).astype(np.float32)


def test_a_spectrum_unlike_the_training_data_is_flagged_and_the_rest_are_not(gateway, samples):
    from nanolens_gateway.adapters.spectra import summarise

    batch = samples[0]
    spectra = np.vstack([batch.spectra, polystyrene(batch.axis, 1, seed=5)])
    ref = upload(gateway, npy(spectra), "with-polystyrene.npy")
    response = analyze(gateway, ref, options={"array_key": "spectra"})
    result = json.loads(response.result_json)
    flagged = [row["index"] for row in result["spectra"] if row["out_of_domain"]]
    assert flagged == [9] and result["spectra"][9]["ood_score"] > 1
    assert all(row["ood_score"] < 1 for row in result["spectra"][:9])
    quality = result["quality"]
    assert not quality["trustworthy"] and quality["n_out_of_domain"] == 1
    assert len(quality["warnings"]) == 1
    assert "1 of 10 spectra" in quality["warnings"][0] and "#9" in quality["warnings"][0]
    assert "OUT OF DOMAIN" in summarise(result)[9] and "OUT OF DOMAIN" not in summarise(result)[0]
    ood = np.load(io.BytesIO(b"".join(r.chunk for r in gateway.Download(gateway_pb2.DownloadRequest(
        object=next(a.ref for a in response.artifacts if a.name == "ood_score.npy"))))))
    assert ood.shape == (10,) and (ood > 1).tolist() == [False] * 9 + [True]


def test_a_map_region_unlike_the_training_data_is_black_in_the_picture_and_warned(gateway, samples):
    from PIL import Image

    from nanolens_gateway.adapters import pictures

    cube = samples[1].copy()
    axis = samples[0].axis
    cube[:, :12] = polystyrene(axis, 32 * 12, seed=6).reshape(32, 12, -1)  # the left 12 columns
    response = analyze(gateway, upload(gateway, npy(cube), "half-polystyrene.npy"), MAP)
    result = json.loads(response.result_json)
    quality = result["quality"]
    assert not quality["trustworthy"] and 12 / 32 <= quality["out_of_domain_fraction"] < 12 / 32 + 0.05
    assert "of the pixels are unlike the model's training data" in quality["warnings"][0]
    artefacts = {a.name: a.ref for a in response.artifacts}
    fetch = lambda name: b"".join(r.chunk for r in gateway.Download(  # noqa: E731
        gateway_pb2.DownloadRequest(object=artefacts[name])))
    ood = np.load(io.BytesIO(fetch("ood_score.npy")))
    assert ood.shape == (32, 32) and (ood[:, :12] > 1).all()
    picture = np.asarray(Image.open(io.BytesIO(fetch("class_map.png"))).convert("RGB"))
    scale = pictures.map_scale((32, 32))  # the map sits under the title, enlarged
    shown = picture[pictures.TITLE_PX:pictures.TITLE_PX + 32 * scale:scale, :32 * scale:scale]
    black = (shown == 0).all(axis=2)
    assert result["out_of_domain_colour"] == "#000000"
    assert (black == (ood > 1)).all()  # black exactly where out of domain


def test_upload_never_replaces_stored_data(gateway, stack_store):
    ref = upload(gateway, b"1\t2\n3\t4\n", "keep.txt", key="fixed/keep.txt")
    with pytest.raises(grpc.RpcError) as info:
        upload(gateway, b"other bytes", "keep.txt", key="fixed/keep.txt")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert stack_store.get(ref.bucket, ref.key) == b"1\t2\n3\t4\n"


def test_the_same_file_uploaded_twice_is_one_object_and_its_result_is_reused(gateway, stack_store, samples):
    """Uploads without a key are named by their content: the second upload of the same bytes is
    the same object (same version, same ETag), so its analysis comes from the store; other bytes
    under the same name are another object; an explicit key may be uploaded again with the same
    bytes (a retry) but never with others."""
    data = npy(samples[0].spectra[:3])
    first, again = upload(gateway, data, "same.npy"), upload(gateway, data, "same.npy")
    assert (again.key, again.version_id) == (first.key, first.version_id)
    assert stack_store.stat(first.bucket, first.key).sha256 == hashlib.sha256(data).hexdigest()
    computed, reused = analyze(gateway, first), analyze(gateway, again)
    assert not computed.cached and reused.cached and reused.job_id == computed.job_id
    other = upload(gateway, npy(samples[0].spectra[3:6]), "same.npy")
    assert other.key != first.key
    kept = upload(gateway, data, "same.npy", key="fixed/retried.npy")
    assert upload(gateway, data, "same.npy", key="fixed/retried.npy").key == kept.key
    with pytest.raises(grpc.RpcError) as info:
        upload(gateway, b"other bytes", "same.npy", key="fixed/retried.npy")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS and "other content" in info.value.details()
    assert stack_store.get(kept.bucket, kept.key) == data


def put_url(created: gateway_pb2.CreateUploadUrlResponse, data: bytes, headers: dict | None = None) -> int:
    headers = dict(created.headers) if headers is None else headers
    put = urllib.request.Request(created.url, data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream", **headers})
    try:
        with urllib.request.urlopen(put, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_presigned_put_then_analyze_and_the_url_cannot_replace_the_analysed_input(gateway, stack_store, samples):
    created = gateway.CreateUploadUrl(gateway_pb2.CreateUploadUrlRequest(filename="signed.npy"), timeout=10)
    assert dict(created.headers) == {"If-None-Match": "*"}
    data = npy(samples[0].spectra[:2])
    assert put_url(created, data, headers={}) == 403  # the header is signed into the URL
    assert put_url(created, data) == 200
    result = json.loads(analyze(gateway, created.object).result_json)
    assert result["n_spectra"] == 2
    assert put_url(created, b"2 MB of junk" * 1000) == 412  # reused after the analysis: refused
    stored = stack_store.stat(created.object.bucket, created.object.key)
    assert stack_store.get(created.object.bucket, created.object.key) == data
    assert stored.etag == result["input"]["etag"]  # the result still describes the bytes stored


BAD_INPUTS = [
    ("strings.npy", npy(np.array([["a", "b"]])), SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "numbers"),
    ("four_d.npy", npy(np.zeros((2, 2, 2, 1024), np.float32)), SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    ("flat.npy", npy(np.zeros((3, 1024), np.float32)), MAP, grpc.StatusCode.INVALID_ARGUMENT, "H x W x C"),
    ("cube.npy", npy(np.zeros((2, 2, 1024), np.float32)), SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "MAP"),
    ("narrow.npy", npy(np.ones((3, 100), np.float32)), SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "channels"),
    ("nan.npy", npy(np.full((2, 1024), np.nan, np.float32)), SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    ("empty.csv", b"", SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("corrupt.npy", b"\x93NUMPY garbage", SPECTRA, grpc.StatusCode.INVALID_ARGUMENT, "not a readable"),
    ("truncated.npy", npy(np.zeros((4, 4, 1024), np.float32))[:5000], MAP, grpc.StatusCode.INVALID_ARGUMENT,
     "truncated"),
    ("big.npy", npy(np.zeros((LIMIT_MB * 1024 * 256 + 1024,), np.float32)), SPECTRA,
     grpc.StatusCode.RESOURCE_EXHAUSTED, "NANOLENS_MAX_OBJECT_MB"),
]


@pytest.mark.parametrize("name, data, kind, code, words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_clear_error_and_the_stack_stays_healthy(stack, gateway, stack_store, name, data, kind,
                                                                   code, words):
    key = f"bad/{name}"
    if not stack_store.exists("raw", key):
        stack_store.put("raw", key, data)  # straight to storage: the gateway's upload limit is tested elsewhere
    with pytest.raises(grpc.RpcError) as info:
        analyze(gateway, common_pb2.ObjectRef(bucket="raw", key=key), kind)
    assert info.value.code() == code, info.value.details()
    assert words in info.value.details()
    assert_healthy(stack)


@pytest.mark.parametrize("request_kwargs, code, words", [
    ({"input": common_pb2.ObjectRef(key="no/such/file.npy"), "analysis": SPECTRA}, grpc.StatusCode.NOT_FOUND,
     "does not exist"),
    ({"input": common_pb2.ObjectRef(key="../etc/passwd"), "analysis": SPECTRA}, grpc.StatusCode.INVALID_ARGUMENT,
     "input.key"),
    ({"input": common_pb2.ObjectRef(key="x.npy")}, grpc.StatusCode.INVALID_ARGUMENT, "analysis"),
    ({"input": common_pb2.ObjectRef(key="bad/strings.npy"), "analysis": SPECTRA, "model_name": "nope"},
     grpc.StatusCode.NOT_FOUND, "nope"),
    ({"input": common_pb2.ObjectRef(key="bad/strings.npy"), "analysis": SPECTRA, "model_name": "swcnt-endosome",
      "model_version": "999"}, grpc.StatusCode.NOT_FOUND, "999"),
])
def test_bad_requests(stack, gateway, request_kwargs, code, words):
    with pytest.raises(grpc.RpcError) as info:
        gateway.Analyze(gateway_pb2.AnalyzeRequest(**request_kwargs), timeout=30)
    assert info.value.code() == code
    assert words in info.value.details()
    assert_healthy(stack)


def test_oversized_upload_is_refused(gateway):
    with pytest.raises(grpc.RpcError) as info:
        upload(gateway, b"\0" * ((LIMIT_MB + 1) << 20), "huge.bin")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_wrong_dtype_and_shape_straight_to_the_service(stack, spectra_stub):
    bad_dtype = common_pb2.NDArray(dtype=common_pb2.DATA_TYPE_UNSPECIFIED, shape=[1, 1024], data=b"\0" * 4096)
    bad_bytes = common_pb2.NDArray(dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[2, 1024], data=b"\0" * 10)
    for array, field in ((bad_dtype, "spectra.dtype"), (bad_bytes, "spectra.data")):
        with pytest.raises(grpc.RpcError) as info:
            spectra_stub.ClassifySpectra(spectra_pb2.ClassifySpectraRequest(spectra=array), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()
    assert_healthy(stack)


def test_deadline_exceeded_leaves_the_stack_healthy(stack, gateway, samples):
    ref = upload(gateway, npy(samples[1]), "deadline.npy")
    with pytest.raises(grpc.RpcError) as info:
        analyze(gateway, ref, MAP, timeout=0.05, force=True)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_healthy(stack)
    assert analyze(gateway, ref, MAP).result.key  # and it still works with time to spare


def test_concurrent_requests_are_batched(stack, samples):
    spectra = samples[0].spectra
    before = scrape(stack[1].metrics["spectra"])

    async def hammer():
        async with grpc.aio.insecure_channel(stack[1].spectra) as channel:
            stub = spectra_pb2_grpc.SpectraServiceStub(channel)
            calls = [stub.ClassifySpectra(spectra_pb2.ClassifySpectraRequest(
                spectra=arrays.to_proto(spectra[i % len(spectra)])), timeout=60) for i in range(64)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(hammer())
    assert len(responses) == 64
    after = scrape(stack[1].metrics["spectra"])
    items = metric_sum(after, "nanolens_batch_size_sum") - metric_sum(before, "nanolens_batch_size_sum")
    runs = metric_sum(after, "nanolens_batch_size_count") - metric_sum(before, "nanolens_batch_size_count")
    assert items == 64
    assert runs < 64, "64 concurrent single-spectrum calls ran as 64 separate batches"


def test_a_client_that_is_not_ours_calls_the_gateway_through_reflection(stack, samples, gateway):
    buf = shutil.which("buf") or str(REPO / ".tools/node_modules/.bin/buf")
    if not Path(buf).exists():
        pytest.skip("buf is not installed (make tools installs it)")
    ref = upload(gateway, npy(samples[0].spectra[:3]), "buf.npy")
    base = ["--protocol", "grpc", "--http2-prior-knowledge", "--reflect"]
    url = f"http://{stack[1].gateway}/nanolens.gateway.v1.Gateway"
    listed = subprocess.run([buf, "curl", *base, f"{url}/ListModels"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "swcnt-endosome" in listed.stdout
    body = json.dumps({"input": {"bucket": ref.bucket, "key": ref.key}, "analysis": "ANALYSIS_KIND_SPECTRA"})
    analysed = subprocess.run([buf, "curl", *base, "-d", body, f"{url}/Analyze"], capture_output=True, text=True,
                              timeout=60)
    assert analysed.returncode == 0, analysed.stderr
    assert json.loads(json.loads(analysed.stdout)["resultJson"])["n_spectra"] == 3


def test_sigterm_drains_in_flight_calls(tmp_path, samples):
    """SIGTERM: NOT_SERVING at once, the running stream finishes, then the process exits 0."""
    own = Stack(log_dir=tmp_path, extra_env={"NANOLENS_DRAIN_DELAY_SECONDS": "2"})
    port = own.ports["spectra"]
    proc = own.spawn_service("spectra")
    try:
        assert proc.serving.wait(60), "".join(proc.lines)
        cube = samples[1].reshape(-1, samples[1].shape[2])
        signalled = []

        async def slow_map():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = spectra_pb2_grpc.SpectraServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)

                async def blocks():
                    yield spectra_pb2.ClassifyMapRequest(header=spectra_pb2.MapHeader(shape=[32, 32, cube.shape[1]]))
                    for i in range(0, len(cube), 128):
                        if i == 256:
                            proc.popen.send_signal(15)
                            await asyncio.sleep(0.3)
                            signalled.append((await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status)
                        yield spectra_pb2.ClassifyMapRequest(block=arrays.to_proto(cube[i:i + 128]))

                return [r async for r in stub.ClassifyMap(blocks(), timeout=60)]

        responses = asyncio.run(slow_map())
        assert signalled == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert responses[-1].HasField("provenance") and responses[-1].offset == len(cube)
        assert proc.popen.wait(30) == 0
    finally:
        own.stop()


def test_concurrent_identical_requests_compute_once(stack, gateway, samples):
    ref = upload(gateway, npy(samples[0].spectra[:4]), "together.npy")

    async def three():
        async with grpc.aio.insecure_channel(stack[1].gateway) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            request = gateway_pb2.AnalyzeRequest(input=ref, analysis=SPECTRA)
            return await asyncio.gather(*(stub.Analyze(request, timeout=60) for _ in range(3)))

    responses = asyncio.run(three())
    assert len({r.job_id for r in responses}) == 1
    assert sorted(r.cached for r in responses) == [False, True, True]


def test_map_in_an_npz_with_its_own_axis(gateway, samples):
    cube = samples[1][:8, :8]
    out = io.BytesIO()
    np.savez(out, spectra=cube, axis=samples[0].axis)
    response = analyze(gateway, upload(gateway, out.getvalue(), "small_map.npz"), MAP)
    result = json.loads(response.result_json)
    assert result["shape"] == [8, 8, cube.shape[2]]
    assert abs(sum(result["class_fractions"].values()) - 1) < 1e-4


def test_spectra_on_another_axis_are_resampled_onto_the_models(gateway, spectra_stub, samples):
    """Spectra sampled on a coarser, shorter axis classify like the same spectra on the model's axis."""
    batch = samples[0]
    coarse = np.linspace(batch.axis[0] + 3, batch.axis[-1] - 3, 700)
    resampled = np.array([np.interp(coarse, batch.axis, s) for s in batch.spectra], dtype=np.float32)
    csv = "\n".join(",".join(f"{v:.4f}" for v in row) for row in np.vstack([coarse, resampled]))
    result = json.loads(analyze(gateway, upload(gateway, csv.encode(), "coarse.csv")).result_json)
    direct = spectra_stub.ClassifySpectra(spectra_pb2.ClassifySpectraRequest(
        spectra=arrays.to_proto(batch.spectra)), timeout=60)
    on_model_axis = [direct.class_names[i] for i in direct.predicted_class]
    agree = np.mean([row["class"] == c for row, c in zip(result["spectra"], on_model_axis, strict=True)])
    assert agree >= 7 / 9, f"only {agree:.0%} of 9 spectra keep their class after resampling"


def test_big_endian_map_is_converted_on_the_way(gateway, spectra_stub, samples):
    cube = samples[1][:4, :4].astype(">f4")
    response = analyze(gateway, upload(gateway, npy(cube), "big_endian.npy"), MAP)
    probs = np.load(io.BytesIO(b"".join(r.chunk for r in gateway.Download(gateway_pb2.DownloadRequest(
        object=next(a.ref for a in response.artifacts if a.name == "probabilities.npy"))))))
    direct = spectra_stub.ClassifySpectra(spectra_pb2.ClassifySpectraRequest(
        spectra=arrays.to_proto(cube.reshape(-1, cube.shape[2]).astype("<f4"))), timeout=60)
    np.testing.assert_allclose(probs.reshape(-1, 3), arrays.from_proto(direct.probabilities), atol=1e-5)


def test_particle_sizing_options_are_checked_and_tta_is_its_own_result(stack, gateway):
    """A yes/no option that is neither is refused with its name before the input is fetched,
    test-time augmentation is refused by the methods that have no network, an augmented CNN result
    is stored apart from the plain one, and spellings of the same options share one result."""
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    sizes = gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES
    ref = upload(gateway, npy(generate(seed=12, params=SynthParams(shape=(128, 128))).image), "particles.npy")
    for options, words in [({"bright_particles": "maybe"}, "bright_particles='maybe'"),
                           ({"tta": "2"}, "tta='2'"),
                           ({"tta": "yes", "method": "watershed"}, "test_time_augmentation")]:
        with pytest.raises(grpc.RpcError) as info:
            analyze(gateway, ref, sizes, options=options)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert words in info.value.details()
    # the options are checked before the input is fetched: a text file is refused for the option
    text = upload(gateway, b"not a micrograph", "notes.txt")
    with pytest.raises(grpc.RpcError) as info:
        analyze(gateway, text, sizes, options={"bright_particles": "maybe"})
    assert "bright_particles='maybe'" in info.value.details()
    plain = analyze(gateway, ref, sizes, options={"method": "cnn"})
    augmented = analyze(gateway, ref, sizes, options={"method": "cnn", "tta": "true"})
    assert not augmented.cached and augmented.result.key != plain.result.key
    doc = json.loads(augmented.result_json)
    assert doc["options"]["tta"] == "true" and doc["method"] == "cnn" and doc["n_particles"] > 0
    # other spellings of the same request find the stored results
    for options, stored in [({"method": "CNN", "tta": "no"}, plain),
                            ({"method": "cnn", "tta": "Yes"}, augmented)]:
        again = analyze(gateway, ref, sizes, options=options)
        assert again.cached and again.result.key == stored.result.key, options
    # bright_particles is decided from the file when absent, so an explicit no is its own request
    no, zero = (analyze(gateway, ref, sizes, options={"method": "cnn", "bright_particles": v}) for v in ("no", "0"))
    assert no.result.key != plain.result.key and zero.cached and zero.result.key == no.result.key
    sized = [analyze(gateway, ref, sizes, options={"method": "watershed", "pixel_size_nm": v}) for v in ("0.50", ".5")]
    assert sized[1].cached and sized[1].result.key == sized[0].result.key
    assert json.loads(sized[0].result_json)["options"]["pixel_size_nm"] == "0.5"
    assert_healthy(stack)


def test_the_files_detector_decides_whether_particles_are_bright(gateway, stack):
    """An SEM image (particles brighter than the background, the Zeiss file naming its InLens
    detector) is sized as bright particles without the option, as well as with it; the result says
    why; the option still overrides the file."""
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    sample = generate(seed=21, params=SynthParams(shape=(192, 192)))
    bright = (255 - sample.image.astype(np.int32)).astype(np.uint8)  # secondary-electron-like contrast
    text = ("0\r\n0\r\nAP_WIDTH\r\nWidth = 96.0 nm\r\nDP_DETECTOR_CHANNEL\r\nSignal A = InLens\r\n")
    out = io.BytesIO()
    tifffile.imwrite(out, bright, extratags=[(34118, "s", 0, text.encode("latin-1"), True)])
    ref = upload(gateway, out.getvalue(), "sem.tif")
    sizes = gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES
    auto = json.loads(analyze(gateway, ref, sizes, options={"method": "watershed"}).result_json)
    told = json.loads(analyze(gateway, ref, sizes, options={"method": "watershed",
                                                             "bright_particles": "yes"}).result_json)
    wrong = json.loads(analyze(gateway, ref, sizes, options={"method": "watershed",
                                                              "bright_particles": "no"}).result_json)
    assert auto["image"]["particles_bright"] and auto["image"]["contrast_source"] == "detector: Zeiss InLens"
    assert auto["image"]["pixel_size_nm"] == pytest.approx(0.5)  # 96 nm over 192 columns
    assert told["image"]["contrast_source"] == "request" and not wrong["image"]["particles_bright"]
    assert auto["distribution"]["gmd_px"] == pytest.approx(told["distribution"]["gmd_px"], rel=1e-6)
    assert auto["distribution"]["count"] == told["distribution"]["count"] != wrong["distribution"]["count"]


def test_a_silicon_reference_on_an_uncalibrated_axis_is_reported(gateway):
    axis = np.linspace(100, 3000, 1024)
    band = 5000 / (1 + ((axis - 527.3) / 3.5) ** 2) + 200 + np.random.default_rng(3).normal(0, 5, axis.size)
    text = "".join(f"{x:.3f}\t{y:.3f}\n" for x, y in zip(axis, band, strict=True)).encode()
    result = json.loads(analyze(gateway, upload(gateway, text, "silicon.txt")).result_json)
    warnings = result["quality"]["warnings"]
    assert not result["quality"]["trustworthy"]
    (said,) = [w for w in warnings if "silicon" in w]
    offset = float(re.search(r"off by ([+-][0-9.]+) cm\^-1", said).group(1))
    assert 5.6 <= offset <= 7.6, said  # 6.6 cm^-1 off, on a 2.8 cm^-1 channel grid
