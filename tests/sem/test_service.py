"""The SEM service over gRPC on a free port: the lens, the embedding, anomaly maps on synthetic
defects, a classifier head trained here on the shipped autoencoder's embeddings, and bad requests
of every kind (each INVALID_ARGUMENT naming its field; the service keeps serving)."""

from __future__ import annotations

import contextlib
import json

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nanolens.common.v1 import common_pb2
from nanolens.sem.v1 import sem_pb2, sem_pb2_grpc
from nanolens_runtime import arrays
from nanolens_runtime.inference import InferencePool, select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import create_server
from nanolens_sem.service import SEM, SemPipeline, servicer
from nanolens_sem.synthetic.textures import KINDS, generate, with_info_bar
from nanolens_sem.training.heads import Embedder, train_head

HEAD = "sem-texture-kinds"


@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory):
    """A head trained on the shipped autoencoder's embeddings of synthetic textures (4 kinds,
    seeds 0-79), and one whose manifest names another autoencoder."""
    embedder = Embedder.load()
    textures = [generate(seed, (128, 128)) for seed in range(80)]
    features = np.concatenate([embedder.embed(t.image) for t in textures])
    labels = np.array([t.kind for t in textures])
    root = tmp_path_factory.mktemp("heads")
    train_head(features, labels, np.arange(len(labels)), embedder, HEAD, "1", root / HEAD / "1",
               "synthetic textures seeds 0-79")
    other = root / "sem-stale-head" / "1"
    train_head(features, labels, np.arange(len(labels)), embedder, "sem-stale-head", "1", other, "the same")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["embedding_model"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    return root


@contextlib.asynccontextmanager
async def serving(heads_dir):
    registry = ModelRegistry(SEM.tasks, SEM.default_model, [SEM.bundles, heads_dir], select_providers("cpu"))
    registry.load_all()
    app, port = await create_server([servicer(SemPipeline(registry, InferencePool(2)))])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield sem_pb2_grpc.SemServiceStub(channel)
    await app.server.stop(0)


@pytest.fixture
async def stub(heads_dir):
    async with serving(heads_dir) as s:
        yield s


def request(image: np.ndarray, **kw) -> sem_pb2.AnalyzeImageRequest:
    return sem_pb2.AnalyzeImageRequest(image=arrays.to_proto(image), **kw)


def field_of(exc: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(exc).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            return bad.field_violations[0].field
    return ""


def u8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


async def test_the_lens_returns_every_layer_with_maps_no_larger_than_asked(stub):
    image = u8(generate(1, (300, 420)).image)
    r = await stub.AnalyzeImage(request(image, lens=True, max_side=64))
    assert [layer.name for layer in r.layers] == ["enc1", "enc2", "enc3", "enc4", "latent"]
    for layer in r.layers:
        maps = arrays.from_proto(layer.maps)
        assert maps.shape[0] == layer.channels and max(maps.shape[1:]) <= 64
        assert 0 <= layer.sparsity <= 1 and layer.peak >= layer.mean
        assert list(layer.top_channel_means) == sorted(layer.top_channel_means, reverse=True)
    rec = arrays.from_proto(r.reconstruction).astype(np.float32)
    assert max(rec.shape) <= 64 and 0 <= rec.min() and rec.max() <= 1
    only = await stub.AnalyzeImage(request(image, lens=True, layers=["enc2"]))
    assert [layer.name for layer in only.layers] == ["enc2"]
    plain = await stub.AnalyzeImage(request(image))
    assert not plain.layers and not plain.HasField("anomaly") and not plain.HasField("classification")
    assert plain.provenance.model_name == "sem-autoencoder" and plain.provenance.code_sha256


async def test_max_channels_returns_the_maps_of_the_most_active_channels_only(stub):
    """The gateway's pictures show a layer's 16 most active channels: it asks for those maps only."""
    image = u8(generate(3, (200, 240)).image)
    every = await stub.AnalyzeImage(request(image, lens=True, max_side=64))
    few = await stub.AnalyzeImage(request(image, lens=True, max_side=64, max_channels=4))
    for full, part in zip(every.layers, few.layers, strict=True):
        maps, kept = arrays.from_proto(full.maps), arrays.from_proto(part.maps)
        assert list(full.map_channels) == list(range(full.channels)) and len(part.map_channels) == 4
        assert list(part.map_channels) == list(part.top_channels[:4]) == list(full.top_channels[:4])
        np.testing.assert_array_equal(kept, maps[list(part.map_channels)])
    assert few.ByteSize() < every.ByteSize() / 4
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AnalyzeImage(request(image, lens=True, max_channels=-1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_of(refused.value) == "max_channels"


async def test_the_embedding_is_normalised_and_a_large_image_runs_in_windows(stub):
    image = u8(generate(2, (1100, 700)).image)
    r = await stub.AnalyzeImage(request(image))
    emb = arrays.from_proto(r.embedding)
    assert emb.shape == (352,) and abs(float(np.linalg.norm(emb)) - 1) < 1e-4
    assert r.windows == 6  # 1104 x 704 padded: 3 x 2 windows of 512
    again = arrays.from_proto((await stub.AnalyzeImage(request(image))).embedding)
    np.testing.assert_allclose(again, emb, atol=1e-5)
    # search by cosine similarity: the nearest other texture is mostly of the same kind (chance: about 0.3)
    textures = [generate(seed, (256, 256)) for seed in range(40)]
    vectors = np.stack([arrays.from_proto((await stub.AnalyzeImage(request(u8(t.image)))).embedding)
                        for t in textures])
    kinds = np.array([t.kind for t in textures])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    assert (kinds[similarity.argmax(axis=1)] == kinds).mean() >= 0.6


async def test_the_information_bar_is_found_and_left_out(stub):
    image = u8(with_info_bar(generate(3, (256, 320)).image, 40))
    r = await stub.AnalyzeImage(request(image, anomaly=True))
    assert r.height == 296 and abs(r.info_bar_rows - 40) <= 2
    assert arrays.from_proto(r.anomaly.error_map).shape == (16, 20)  # 256 rows of micrograph in blocks of 16
    kept = await stub.AnalyzeImage(request(image, anomaly=True, keep_info_bar=True))
    assert kept.info_bar_rows == 0 and arrays.from_proto(kept.anomaly.error_map).shape == (19, 20)


async def test_anomaly_maps_light_up_an_injected_defect_and_noise_is_out_of_distribution(stub):
    stood_out, with_defect = 0, 0
    for seed in range(500, 520):
        t = generate(seed, (256, 256), anomaly=True)
        r = await stub.AnalyzeImage(request(u8(t.image), anomaly=True, max_side=256))
        pm = arrays.from_proto(r.anomaly.percentile_map)
        assert pm.shape == (16, 16) and r.anomaly.block_px == 16
        defect = t.anomaly.reshape(16, 16, 16, 16).mean(axis=(1, 3)) > 0.25
        if defect.any():
            with_defect += 1
            stood_out += pm[defect].max() > np.percentile(pm[~defect], 90)
    assert stood_out >= 0.7 * with_defect, f"the defect stood out in {stood_out} of {with_defect} images"
    noise = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    r = await stub.AnalyzeImage(request(noise, anomaly=True))
    assert r.anomaly.image_percentile >= 99 and r.anomaly.anomalous_fraction > 0
    calm = await stub.AnalyzeImage(request(u8(generate(600, (256, 256)).image), anomaly=True))
    assert calm.anomaly.image_percentile < 99 and calm.anomaly.psnr_db > r.anomaly.psnr_db


async def test_a_trained_head_classifies_unseen_textures(stub):
    right = flagged = 0
    seeds = range(1000, 1040)
    for seed in seeds:
        t = generate(seed, (128, 128))
        r = await stub.AnalyzeImage(request(u8(t.image), classifier=common_pb2.ModelSelector(name=HEAD)))
        c = r.classification
        assert sorted(c.classes) == sorted(KINDS) and abs(sum(c.probabilities) - 1) < 1e-4
        assert c.head.name == HEAD and c.probability == max(c.probabilities)
        right += c.label == t.kind
        assert c.HasField("ood_score") and c.ood_score >= 0
        flagged += c.ood_score > 1
    assert right / len(seeds) >= 0.75, f"{right} of {len(seeds)}"
    assert flagged <= 4, f"{flagged} of {len(seeds)} new textures of known kinds called unlike every kind"  # 1 measured
    models = {m.name: m for m in (await stub.ListModels(sem_pb2.ListModelsRequest())).models}
    assert models[HEAD].task == "sem-classifier" and models["sem-autoencoder"].is_default


async def test_a_picture_unlike_every_texture_kind_is_flagged(stub, heads_dir):
    yy, xx = np.mgrid[:128, :128]
    disc = ((yy - 64) ** 2 + (xx - 64) ** 2 < 40 ** 2).astype(float)  # one big particle: no texture at all
    checker = ((yy // 8 + xx // 8) % 2).astype(float)
    noise = np.random.default_rng(0).normal(0, 0.02, disc.shape)
    for image in (disc, checker):
        picture = u8(0.2 + 0.6 * image + noise)  # grey levels of a micrograph, not a mask's two
        r = await stub.AnalyzeImage(request(picture, classifier=common_pb2.ModelSelector(name=HEAD)))
        assert r.classification.ood_score > 1, r.classification.ood_score
    calibration = json.loads((heads_dir / HEAD / "1" / "manifest.json").read_text())["out_of_domain"]
    assert calibration["calibration"]["n_items"] == 80 and calibration["calibration"]["flagged"] <= 2
    assert calibration["threshold"] > 0 and calibration["n_reference"] == 80


async def test_bad_requests_are_refused_naming_the_field_and_the_service_keeps_serving(stub):
    image = u8(generate(4, (128, 128)).image)
    cases = [
        ("3-D", request(np.zeros((2, 64, 64), np.uint8)), "image.shape"),
        ("tiny", request(image[:8, :8]), "image.shape"),
        ("int64", request(image.astype(np.int64)), "image.dtype"),
        ("blank", request(np.zeros((64, 64), np.uint8)), "image"),
        ("max_side", request(image, max_side=5000), "max_side"),
        ("layer", request(image, lens=True, layers=["enc9"]), "layers"),
        ("head as autoencoder", request(image, model=common_pb2.ModelSelector(name=HEAD)), "model.name"),
        ("autoencoder as head", request(image, classifier=common_pb2.ModelSelector(name="sem-autoencoder")),
         "classifier.name"),
        ("head of another autoencoder", request(image, classifier=common_pb2.ModelSelector(name="sem-stale-head")),
         "classifier.name"),
        ("broken bytes", sem_pb2.AnalyzeImageRequest(image=common_pb2.NDArray(
            dtype=common_pb2.DATA_TYPE_UINT8, shape=[64, 64], data=b"\0" * 10)), "image.data"),
    ]
    for what, bad, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzeImage(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert field_of(err.value) == field, (what, err.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AnalyzeImage(request(image, model=common_pb2.ModelSelector(name="no-such-model")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await stub.AnalyzeImage(request(image))).HasField("embedding")
