"""The TEM service over gRPC on a free port: every method, the measurements, and bad requests."""

from __future__ import annotations

import contextlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nanolens.common.v1 import common_pb2
from nanolens.tem.v1 import tem_pb2, tem_pb2_grpc
from nanolens_runtime import arrays
from nanolens_runtime.bundles import ModelBundle
from nanolens_runtime.inference import InferencePool, select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import create_server
from nanolens_runtime.version import SERVICE_VERSION
from nanolens_tem.bundles import latest_bundle
from nanolens_tem.science.segmentation import geometric_stats
from nanolens_tem.service import CNN_MODEL, SHIPPED_BUNDLES, TASKS, TemPipeline, servicer, serving_code_sha256
from nanolens_tem.synthetic.agglomerates import SynthParams, generate
from support import renamed_bundle


@pytest.fixture(scope="module")
def synthetic():
    return generate(seed=3, params=SynthParams(shape=(256, 256), gmd=20.0, gsd=1.15))


@contextlib.asynccontextmanager
async def serving(roots: list[Path], pool_threads: int = 2):
    """A real TEM service on a free port over the bundles in ``roots``, and a stub to it."""
    registry = ModelRegistry(TASKS, CNN_MODEL, roots, select_providers("cpu"))
    registry.load_all()
    app, port = await create_server([servicer(TemPipeline(registry, InferencePool(pool_threads)))])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield tem_pb2_grpc.TemServiceStub(channel)
    await app.server.stop(0)


@pytest.fixture
async def stub():
    async with serving([SHIPPED_BUNDLES]) as tem:
        yield tem


def request(image, **kwargs) -> tem_pb2.AnalyzeImageRequest:
    return tem_pb2.AnalyzeImageRequest(image=arrays.to_proto(image), **kwargs)


@pytest.mark.parametrize("method", [tem_pb2.METHOD_WATERSHED, tem_pb2.METHOD_HOUGH])
async def test_baselines_measure_particles_and_agglomerates(stub, synthetic, method):
    response = await stub.AnalyzeImage(request(synthetic.image, method=method, pixel_size_nm=0.5), timeout=120)
    labels = arrays.from_proto(response.labels, "labels")
    assert labels.shape == synthetic.image.shape and labels.dtype == np.uint16
    assert response.distribution.count == len(response.particles) > 0
    assert {p.id for p in response.particles} <= set(np.unique(labels).tolist()) | {0}
    assert sum(a.particle_count for a in response.agglomerates) == len(response.particles)
    truth_gmd, _ = geometric_stats(synthetic.diameters)
    # Sizes within a factor of two of the truth: a sanity bound, not the evaluation (docs/tem.md).
    assert truth_gmd / 2 < response.distribution.gmd_px < truth_gmd * 2
    assert response.distribution.gmd_nm == pytest.approx(response.distribution.gmd_px * 0.5)
    assert response.distribution.unit == "nm"
    assert sum(response.distribution.histogram_counts) == response.distribution.count
    assert response.provenance.service_name == "tem"
    listed = {m.name: m for m in (await stub.ListModels(tem_pb2.ListModelsRequest(), timeout=30)).models}
    assert response.provenance.model_name == response.method
    assert response.provenance.model_sha256 == listed[response.method].sha256
    assert response.provenance.code_sha256 == listed[response.method].code_sha256 == serving_code_sha256()


def baselines_code_sha256() -> str:
    import hashlib

    import skimage

    from nanolens_tem.science import baselines, segmentation

    code = (Path(baselines.__file__).read_bytes() + Path(segmentation.__file__).read_bytes()
            + f"scikit-image {skimage.__version__}".encode())
    return hashlib.sha256(code).hexdigest()


async def test_baselines_are_listed_with_the_hash_of_their_code(stub):
    models = {m.name: m for m in (await stub.ListModels(tem_pb2.ListModelsRequest(), timeout=30)).models}
    assert {"tem-unet", "tem-ann", "watershed", "hough"} <= set(models)
    assert models["watershed"].sha256 == models["hough"].sha256 == baselines_code_sha256()
    assert models["watershed"].version == SERVICE_VERSION and not models["watershed"].is_default
    # every entry, model or baseline, names the serving code around it: the CNN's scale estimate
    # and the ANN's features use the baselines' mask, so a change there changes their results too
    assert {m.code_sha256 for m in models.values()} == {serving_code_sha256()}
    assert len(serving_code_sha256()) == 64


async def test_ann_sizes_agglomerates_with_the_shipped_model(stub, synthetic):
    response = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_ANN), timeout=120)
    assert response.method == "ann" and response.distribution.count > 0
    assert response.provenance.model_name == "tem-ann" and len(response.provenance.model_sha256) == 64
    assert response.distribution.unit == "px" and response.distribution.gmd_nm == 0


@pytest.mark.parametrize("image, field", [
    (np.zeros((8, 8), np.uint8), "image.shape"),
    (np.zeros((32, 32, 3), np.uint8), "image.shape"),
    (np.zeros((32, 32), np.int64), "image.dtype"),
    (np.full((64, 64), 128, np.uint8), "image"),  # a blank frame
    ((np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8), "image"),  # a mask
    (np.array([[0.5, np.nan] * 16] * 32, np.float32), "image"),
])
async def test_bad_images(stub, synthetic, image, field):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AnalyzeImage(request(image), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert rpc_status.from_call(info.value).details[0].Unpack(bad)
    assert bad.field_violations[0].field == field
    healthy = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_WATERSHED), timeout=120)
    assert healthy.distribution.count > 0  # the bad request left the service serving


async def test_negative_pixel_size(stub, synthetic):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AnalyzeImage(request(synthetic.image, pixel_size_nm=-1), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_deadline_stops_the_cnn():
    """A CNN run past its deadline is terminated, not left to finish in the pool: the segmentation
    of a 2048 x 2048 image (several seconds here) never completes, and with one pool thread the
    next call gets through. Told by what the pool thread did, not by how long anything took."""
    outcomes: list[str] = []

    class Watched(TemPipeline):
        def predict(self, request, model, run_options):
            try:
                result = super().predict(request, model, run_options)
            except Exception as exc:
                outcomes.append(f"stopped: {exc}")
                raise
            outcomes.append("finished")
            return result

    registry = ModelRegistry(TASKS, CNN_MODEL, [SHIPPED_BUNDLES], select_providers("cpu"))
    registry.load_all()
    app, port = await create_server([servicer(Watched(registry, InferencePool(1)))])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tem_pb2_grpc.TemServiceStub(channel)
            big = np.tile(generate(seed=5, params=SynthParams(shape=(256, 256))).image, (8, 8))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.AnalyzeImage(request(big, method=tem_pb2.METHOD_CNN), timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            small = generate(seed=6, params=SynthParams(shape=(64, 64))).image
            response = await stub.AnalyzeImage(request(small, method=tem_pb2.METHOD_WATERSHED), timeout=120)
            assert response.method == "watershed"
    finally:
        await app.server.stop(0)
    # the pool's one thread ran the big call's predict (if it got that far) before the small one
    assert outcomes[-1] == "finished" and "finished" not in outcomes[:-1], outcomes
    assert all("terminate" in outcome for outcome in outcomes[:-1]), outcomes


@pytest.mark.parametrize("method", [tem_pb2.METHOD_CNN, tem_pb2.METHOD_WATERSHED, tem_pb2.METHOD_HOUGH])
async def test_bright_particles_on_a_dark_background_like_sem(stub, synthetic, method):
    """SEM secondary-electron images show bright particles: with ``bright_particles`` the inverted
    micrograph gives the same particles as the original; without it, it does not."""
    assert synthetic.image.dtype == np.uint8
    inverted = 255 - synthetic.image
    dark = await stub.AnalyzeImage(request(synthetic.image, method=method), timeout=120)
    bright = await stub.AnalyzeImage(request(inverted, method=method, bright_particles=True), timeout=120)
    wrong = await stub.AnalyzeImage(request(inverted, method=method), timeout=120)
    same = arrays.from_proto(bright.labels, "labels"), arrays.from_proto(dark.labels, "labels")
    np.testing.assert_array_equal(same[0], same[1])
    assert bright.distribution.count == dark.distribution.count
    assert bright.distribution.gmd_px == pytest.approx(dark.distribution.gmd_px, rel=1e-9)
    # read the wrong way round, the background becomes the "particle" (most of the frame)
    assert np.mean(arrays.from_proto(wrong.labels, "labels") > 0) > 2 * np.mean(same[1] > 0)


SHIPPED_CNN = latest_bundle(CNN_MODEL)


def plain_postprocessing() -> dict:
    """The shipped CNN's post-processing without its radius spread and detection model."""
    post = ModelBundle.load(SHIPPED_CNN).manifest.get("postprocessing", {})
    return {k: v for k, v in post.items() if k not in ("radius_spread", "detection")}


@pytest.fixture
async def stub_with_more_models(tmp_path):
    """Shipped bundles plus a tem-unet newer than any shipped one and a 'tem-unet-local' (say,
    fine-tuned) CNN."""
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet", "9.0.0")
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet", "0.9.0")
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet-local", "1")
    async with serving([SHIPPED_BUNDLES, tmp_path]) as tem:
        yield tem


@pytest.mark.parametrize("name, version, ran", [
    ("", "", ("tem-unet", "9.0.0")),                 # the newest version of the default model
    ("", "0.9.0", ("tem-unet", "0.9.0")),            # a pinned version is the one that runs
    ("tem-unet-local", "", ("tem-unet-local", "1")),  # another CNN, e.g. fine-tuned on real masks
])
async def test_the_requested_cnn_model_is_the_one_that_runs(stub_with_more_models, synthetic, name, version, ran):
    response = await stub_with_more_models.AnalyzeImage(request(
        synthetic.image, method=tem_pb2.METHOD_CNN, model=common_pb2.ModelSelector(name=name, version=version)),
        timeout=120)
    assert (response.provenance.model_name, response.provenance.model_version) == ran
    assert response.method == "cnn" and response.distribution.count > 0


@pytest.mark.parametrize("method, name, code, words", [
    (tem_pb2.METHOD_CNN, "tem-ann", grpc.StatusCode.INVALID_ARGUMENT, "needs a model of task instance-segmentation"),
    (tem_pb2.METHOD_ANN, "tem-unet-local", grpc.StatusCode.INVALID_ARGUMENT, "task agglomerate-sizing"),
    (tem_pb2.METHOD_CNN, "no-such-model", grpc.StatusCode.NOT_FOUND, "no-such-model"),
])
async def test_a_model_that_cannot_run_the_method_is_refused(stub_with_more_models, synthetic, method, name, code,
                                                             words):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub_with_more_models.AnalyzeImage(
            request(synthetic.image, method=method, model=common_pb2.ModelSelector(name=name)), timeout=60)
    assert info.value.code() == code and words in info.value.details()


async def test_the_served_cnn_applies_the_bundle_radius_spread(tmp_path, synthetic):
    """Two copies of one network, one whose manifest widens the sizes: the service sizes with it."""
    plain = plain_postprocessing()
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet-plain", "1", postprocessing=plain)
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet-wide", "1", postprocessing=dict(plain, radius_spread=1.5))
    async with serving([tmp_path]) as tem:
        got = {}
        for name in ("tem-unet-plain", "tem-unet-wide"):
            r = await tem.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN,
                                               model=common_pb2.ModelSelector(name=name)), timeout=120)
            got[name] = np.log([p.diameter_px for p in r.particles])
    plain, wide = got["tem-unet-plain"], got["tem-unet-wide"]
    assert len(plain) == len(wide) >= 5
    assert wide.mean() == pytest.approx(plain.mean(), abs=1e-5)
    assert wide - wide.mean() == pytest.approx(1.5 * (plain - plain.mean()), abs=1e-4)


async def test_the_served_cnn_weights_the_distribution_with_the_bundle_detection_model(tmp_path, synthetic):
    """A copy of one network whose manifest carries a detection model (smaller-than-average
    particles found half the time): the particles carry its weights and the distribution uses them."""
    from nanolens_tem.science.occlusion import OVERLAP_EDGES, SIZE_EDGES, DetectionModel

    recall = np.ones((len(SIZE_EDGES) + 1, len(OVERLAP_EDGES) + 1))
    recall[:2] = 0.5
    table = DetectionModel(recall, np.full(recall.shape, 100))
    plain = plain_postprocessing()
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet-plain", "1", postprocessing=plain)
    renamed_bundle(SHIPPED_CNN, tmp_path, "tem-unet-weighted", "1",
                   postprocessing=dict(plain, detection=table.to_json()))
    async with serving([tmp_path]) as tem:
        got = {}
        for name in ("tem-unet-plain", "tem-unet-weighted"):
            got[name] = await tem.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN, pixel_size_nm=2.0,
                                                       model=common_pb2.ModelSelector(name=name)), timeout=120)
    plain, weighted = got["tem-unet-plain"], got["tem-unet-weighted"]
    assert [p.weight for p in plain.particles] == [1.0] * len(plain.particles)
    assert not plain.distribution.occlusion_corrected
    assert plain.distribution.estimated_count == plain.distribution.count
    assert list(plain.distribution.histogram_estimated_counts) == list(plain.distribution.histogram_counts)

    d = np.array([p.diameter_px for p in weighted.particles])
    w = np.array([p.weight for p in weighted.particles])
    labels = arrays.from_proto(weighted.labels, "labels")
    assert w == pytest.approx(table.weights(labels, d))
    assert set(np.round(w, 6)) == {1.0, 2.0}  # both kinds present in this image
    dist = weighted.distribution
    assert dist.occlusion_corrected and dist.estimated_count == pytest.approx(w.sum())
    assert sum(dist.histogram_estimated_counts) == pytest.approx(w.sum())
    assert (dist.gmd_px, dist.gsd) == pytest.approx(geometric_stats(d, w), rel=1e-9)
    assert dist.gmd_nm == pytest.approx(2.0 * dist.gmd_px)
    # the small ones count double, so the GMD falls below the found particles' own
    assert dist.gmd_px < plain.distribution.gmd_px


async def test_test_time_augmentation_runs_the_cnn_on_every_view(stub, synthetic):
    """The served result with ``test_time_augmentation`` is the shipped model's augmented
    segmentation, and the other methods refuse the flag rather than ignore it."""
    from nanolens_tem.bundles import latest_bundle
    from nanolens_tem.science.cnn import CnnSegmenter

    newest = latest_bundle(CNN_MODEL)
    want = CnnSegmenter.from_bundle(newest).segment(synthetic.image, tta=True)
    got = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN, test_time_augmentation=True),
                                  timeout=120)
    assert got.provenance.model_version == newest.name
    assert np.array_equal(arrays.from_proto(got.labels, "labels"), want.labels)
    assert [p.diameter_px for p in got.particles] == pytest.approx(want.diameters)
    plain = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN), timeout=120)
    assert not np.array_equal(arrays.from_proto(plain.labels, "labels"), want.labels)
    for method in (tem_pb2.METHOD_WATERSHED, tem_pb2.METHOD_ANN):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.AnalyzeImage(request(synthetic.image, method=method, test_time_augmentation=True), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = error_details_pb2.BadRequest()
        assert rpc_status.from_call(info.value).details[0].Unpack(bad)
        assert bad.field_violations[0].field == "test_time_augmentation"


async def test_the_information_bar_is_left_out_of_the_segmentation(stub, synthetic):
    from nanolens_sem.synthetic.textures import with_info_bar

    image = (synthetic.image * 255).astype(np.uint8) if synthetic.image.dtype.kind == "f" else synthetic.image
    barred = with_info_bar(image, 48)
    plain = await stub.AnalyzeImage(request(image, method=tem_pb2.METHOD_WATERSHED), timeout=120)
    cut = await stub.AnalyzeImage(request(barred, method=tem_pb2.METHOD_WATERSHED), timeout=120)
    labels = arrays.from_proto(cut.labels, "labels")
    assert abs(cut.info_bar_rows - 48) <= 2 and labels.shape == barred.shape
    assert not labels[image.shape[0]:].any()  # nothing found in the bar
    assert abs(cut.distribution.count - plain.distribution.count) <= 0.05 * plain.distribution.count
    kept = await stub.AnalyzeImage(request(barred, method=tem_pb2.METHOD_WATERSHED, keep_info_bar=True),
                                   timeout=120)
    assert kept.info_bar_rows == 0  # the black bar is then "particles" of a bright-field image
    assert arrays.from_proto(kept.labels, "labels")[image.shape[0]:].any()


async def test_the_information_bar_the_metadata_states_is_left_out_whatever_the_pixels(stub, synthetic):
    """A bar the file's metadata states (FEI/Thermo) is left out even where the pixels show none;
    a count that leaves no micrograph is refused naming the field."""
    image = (synthetic.image * 255).astype(np.uint8) if synthetic.image.dtype.kind == "f" else synthetic.image
    stated = await stub.AnalyzeImage(request(image, method=tem_pb2.METHOD_WATERSHED, info_bar_rows=40), timeout=120)
    assert stated.info_bar_rows == 40
    assert not arrays.from_proto(stated.labels, "labels")[-40:].any()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AnalyzeImage(request(image, method=tem_pb2.METHOD_WATERSHED, info_bar_rows=image.shape[0]),
                                timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "info_bar_rows" in info.value.details()


async def test_every_result_carries_the_signals_of_its_verdict(stub, synthetic):
    """The CNN's result is compared with a classical watershed and with itself at half scale; the
    watershed's own result has no classical comparison (NaN), and noise is flagged."""
    cnn = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN), timeout=120)
    q = cnn.quality
    assert q.trustworthy, list(q.warnings)
    assert 0.8 < q.classical_ratio < 1.25 and 0.8 < q.half_scale_ratio < 1.4 and 0.8 < q.outline_ratio < 1.5
    assert q.classical_count_ratio > 0 and 0 <= q.edge_fraction <= 1 and 0 <= q.faint_fraction <= 1
    own = (await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_WATERSHED), timeout=120)).quality
    assert np.isnan(own.classical_ratio) and np.isnan(own.classical_count_ratio) and own.half_scale_ratio > 0
    noise = np.random.default_rng(2).integers(0, 256, (256, 256)).astype(np.uint8)
    flagged = (await stub.AnalyzeImage(request(noise, method=tem_pb2.METHOD_CNN), timeout=120)).quality
    assert not flagged.trustworthy and flagged.warnings


async def test_the_distribution_carries_its_95_percent_intervals(stub, synthetic):
    response = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_WATERSHED, pixel_size_nm=0.5),
                                       timeout=120)
    dist = response.distribution
    assert dist.gmd_px_ci_low < dist.gmd_px < dist.gmd_px_ci_high and dist.gsd_ci_low < dist.gsd < dist.gsd_ci_high
    assert dist.gmd_px_ci_high / dist.gmd_px_ci_low < 1.5  # some 40 particles pin the GMD to a few %
    truth_gmd, _ = geometric_stats(synthetic.diameters)
    assert dist.gmd_px_ci_low / 1.3 < truth_gmd < dist.gmd_px_ci_high * 1.3


async def test_the_cnn_runs_at_the_images_own_scale_unless_asked_and_reports_the_scale_it_ran_at(stub, synthetic):
    own = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN), timeout=120)
    assert not own.HasField("scale")
    chosen = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN, choose_scale=True),
                                     timeout=120)
    assert chosen.HasField("scale") and chosen.scale.source == "image"
    assert 0.25 < chosen.scale.factor < 4 and chosen.scale.typical_radius_px > 0
    asked = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_CNN, scale=0.5), timeout=120)
    assert asked.scale.source == "request" and asked.scale.factor == 0.5 and np.isnan(asked.scale.typical_radius_px)
    assert asked.distribution.gmd_px != chosen.distribution.gmd_px  # the network did run at the factor asked
    watershed = await stub.AnalyzeImage(request(synthetic.image, method=tem_pb2.METHOD_WATERSHED), timeout=120)
    assert not watershed.HasField("scale")
    for bad in ({"method": tem_pb2.METHOD_CNN, "scale": 0.5, "choose_scale": True},
                {"method": tem_pb2.METHOD_WATERSHED, "choose_scale": True}):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.AnalyzeImage(request(synthetic.image, **bad), timeout=120)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "choose_scale" in refused.value.details()


@pytest.mark.parametrize("method, scale", [(tem_pb2.METHOD_WATERSHED, 2.0), (tem_pb2.METHOD_CNN, -1.0),
                                           (tem_pb2.METHOD_CNN, float("nan")), (tem_pb2.METHOD_CNN, 40.0)])
async def test_a_scale_the_method_cannot_run_is_refused(stub, synthetic, method, scale):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AnalyzeImage(request(synthetic.image, method=method, scale=scale), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert rpc_status.from_call(info.value).details[0].Unpack(bad)
    assert bad.field_violations[0].field == "scale"
