"""SEM images end to end: upload, Analyze through the gateway to the SEM service (real processes,
S3 server on loopback), stored results and pictures, collections and search, bad requests."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
import tifffile
from PIL import Image

from nanolens.gateway.v1 import gateway_pb2
from nanolens_sem.synthetic.textures import generate, with_info_bar
from support import upload

pytestmark = pytest.mark.slow
SEM = gateway_pb2.ANALYSIS_KIND_SEM_IMAGE


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def analyse(gateway, ref, **options) -> gateway_pb2.AnalyzeResponse:
    return gateway.Analyze(gateway_pb2.AnalyzeRequest(input=ref, analysis=SEM, options=options), timeout=120)


def test_an_sem_image_gives_its_lens_anomaly_map_and_pictures(gateway, stack_store):
    image = with_info_bar(generate(5, (320, 384), anomaly=True).image, 48)
    ref = upload(gateway, png(image), "wires.png")
    r = analyse(gateway, ref, lens="enc1,enc4", anomaly="yes", max_side="128")
    doc = json.loads(r.result_json)
    assert doc["analysis"] == "sem_image" and doc["options"] == {"anomaly": "true", "lens": "enc1,enc4",
                                                                  "max_side": "128.0"}
    assert abs(doc["image"]["info_bar_rows"] - 48) <= 2 and doc["image"]["height"] == 368
    assert [layer["name"] for layer in doc["lens"]] == ["enc1", "enc4"]
    assert 0 <= doc["anomaly"]["image_percentile"] <= 100 and doc["anomaly"]["psnr_db"] > 10
    assert doc["embedding"]["dim"] == len(doc["embedding"]["vector"]) == 352
    names = {a.name for a in r.artifacts}
    assert {"embedding.npy", "lens_enc1.png", "lens_enc4.png", "lens_overlay.png", "reconstruction.png",
            "anomaly.png", "anomaly_percentiles.npy"} <= names
    for a in r.artifacts:
        data = stack_store.get(a.ref.bucket, a.ref.key)
        if a.name.endswith(".png"):
            assert Image.open(io.BytesIO(data)).size[0] > 100
        if a.name == "embedding.npy":
            np.testing.assert_allclose(np.load(io.BytesIO(data)), doc["embedding"]["vector"], atol=1e-5)
        if a.name == "anomaly_percentiles.npy":
            assert max(np.load(io.BytesIO(data)).shape) <= 128
    again = analyse(gateway, ref, lens="ENC1, enc4", anomaly="on", max_side="128")
    assert again.cached  # one spelling of the options: the same identity


def test_collections_are_searched_by_image_and_by_stored_key(gateway):
    refs, kinds = [], []
    for seed in range(30):
        t = generate(seed, (192, 192))
        refs.append(upload(gateway, png(t.image), f"tex{seed}.png"))
        kinds.append(t.kind)
        analyse(gateway, refs[-1], embed="textures")
    by_key = {r.key: k for r, k in zip(refs, kinds, strict=True)}
    same = 0
    for seed, kind in enumerate(("wires", "porous", "particles", "fibres"), start=900):
        query = upload(gateway, png(generate(seed, (192, 192), kind=kind).image), f"query{seed}.png")
        hits = gateway.SearchCollection(gateway_pb2.SearchCollectionRequest(collection="textures", query=query, k=5),
                                        timeout=60)
        assert hits.n_items == 30 and len(hits.hits) == 5 and not hits.query_in_collection
        assert hits.model.name == "sem-autoencoder"
        scores = [h.score for h in hits.hits]
        assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0001
        same += sum(by_key[h.object.key] == kind for h in hits.hits)
    assert same >= 10, f"{same} of 20 hits of the query's kind (chance: about 5)"
    stored = gateway.SearchCollection(gateway_pb2.SearchCollectionRequest(
        collection="textures", query=refs[0], k=3), timeout=60)
    assert stored.query_in_collection and refs[0].key not in {h.object.key for h in stored.hits}
    # analysing again (cached) keeps one item per image
    analyse(gateway, refs[1], embed="textures")
    assert gateway.SearchCollection(gateway_pb2.SearchCollectionRequest(
        collection="textures", query=refs[0]), timeout=60).n_items == 30


def test_a_search_says_when_nothing_in_the_collection_is_like_the_query(gateway):
    for seed in range(8):
        analyse(gateway, upload(gateway, png(generate(seed, (192, 192)).image), f"kind{seed}.png"), embed="kinds")
    # another picture of a sample in the collection (mirrored, other noise): "like" as the calibration means it,
    # images of one kind of sample (a new texture of the same synthetic kind is not: about 0.6)
    rng = np.random.default_rng(2)
    like = upload(gateway, png(np.fliplr(generate(3, (192, 192)).image) + rng.normal(0, 0.02, (192, 192))),
                  "like.png")
    yy, xx = np.mgrid[:192, :192]
    disc = 0.2 + 0.6 * ((yy - 96) ** 2 + (xx - 96) ** 2 < 60 ** 2) + np.random.default_rng(1).normal(0, 0.02, yy.shape)
    unlike = upload(gateway, png(disc), "one-particle.png")
    search = lambda ref: gateway.SearchCollection(  # noqa: E731
        gateway_pb2.SearchCollectionRequest(collection="kinds", query=ref, k=3), timeout=60)
    found, nothing = search(like), search(unlike)
    # the shipped autoencoder's calibration (nanolens_sem.evaluation.search, on real SEM images)
    assert found.HasField("similar_above") and abs(found.similar_above - 0.929) < 1e-9
    assert not found.nothing_similar and found.hits[0].score >= found.similar_above, found.hits[0].score
    assert nothing.nothing_similar and len(nothing.hits) == 3  # the least unlike are still listed
    assert all(h.score < nothing.similar_above for h in nothing.hits)


def zeiss_tiff(image: np.ndarray, detector: str, mag: str, date: str) -> bytes:
    """An 8-bit TIFF with Zeiss SmartSEM metadata: detector, magnification and date."""
    text = (f"0\r\n0\r\nAP_MAG\r\nMag = {mag}\r\nAP_DATE\r\nDate = {date}\r\n"
            f"DP_DETECTOR_CHANNEL\r\nSignal A = {detector}\r\n")
    out = io.BytesIO()
    tifffile.imwrite(out, (np.clip(image, 0, 1) * 255).astype(np.uint8), photometric="minisblack",
                     extratags=[(34118, "s", 0, text.encode("latin-1"), True)])
    return out.getvalue()


def search(gateway, collection: str, query, k: int = 10, **fields) -> gateway_pb2.SearchCollectionResponse:
    return gateway.SearchCollection(gateway_pb2.SearchCollectionRequest(collection=collection, query=query, k=k,
                                                                        **fields), timeout=60)


def test_hits_are_filtered_by_the_instrument_metadata_stored_with_them(gateway):
    taken = {}  # key -> (detector, magnification, date)
    for seed, (detector, mag, date) in enumerate([("InLens", "50.00 K X", "25 Sep 2018"),
                                                  ("SE2", "50.00 K X", "03 Mar 2024"),
                                                  ("InLens", "5.00 K X", "03 Mar 2024"),
                                                  ("SE2", "800 X", "12 Jan 2019"),
                                                  ("InLens", "120.0 K X", "30 Jun 2025")]):
        ref = upload(gateway, zeiss_tiff(generate(seed, (160, 160)).image, detector, mag, date), f"zeiss{seed}.tif")
        analyse(gateway, ref, embed="instruments")
        taken[ref.key] = (detector, mag, date)
    query = upload(gateway, png(generate(40, (160, 160)).image), "plain.png")

    def keys(**where):
        return {h.object.key for h in search(gateway, "instruments", query, where=where).hits}

    assert len(keys()) == 5
    assert keys(detector="inlens") == {k for k, t in taken.items() if t[0] == "InLens"}
    assert keys(magnification_min="10000") == {k for k, t in taken.items() if "K X" in t[1] and t[1] != "5.00 K X"}
    assert keys(acquired_from="2020-01-01", acquired_to="2024-12-31") == {
        k for k, t in taken.items() if t[2] == "03 Mar 2024"}
    assert keys(detector="se2", magnification_max="1000") == {k for k, t in taken.items() if t[1] == "800 X"}
    hit = search(gateway, "instruments", query, where={"magnification_min": "100000"}).hits
    assert len(hit) == 1 and dict(hit[0].metadata) == {"detector": "Zeiss InLens", "magnification": "120000",
                                                      "acquired": "2025-06-30"}
    assert keys(pixel_size_nm_max="100") == set()  # these files say no pixel size: no match on it
    for where, words in (({"colour": "red"}, "unknown filter field 'colour'"),
                         ({"magnification_min": "high"}, "must be a number"),
                         ({"acquired_from": "2024-13-01"}, "YYYY-MM-DD")):
        with pytest.raises(grpc.RpcError) as err:
            search(gateway, "instruments", query, where=where)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details(), where


def test_a_region_of_an_image_finds_the_images_like_that_part(gateway):
    halves = {kind: generate(seed, (192, 192), kind=kind).image for seed, kind in enumerate(
        ("wires", "porous", "particles", "fibres"), start=60)}
    refs = {}
    for kind, image in halves.items():
        refs[kind] = upload(gateway, png(image), f"half-{kind}.png")
        analyse(gateway, refs[kind], embed="halves")
    both = upload(gateway, png(np.hstack([halves["wires"], halves["porous"]])), "wires-and-porous.png")
    left = search(gateway, "halves", both, 2, region=gateway_pb2.Region(x=0, y=0, width=192, height=192))
    right = search(gateway, "halves", both, 2, region=gateway_pb2.Region(x=192, y=0, width=192, height=192))
    assert left.hits[0].object.key == refs["wires"].key and left.hits[0].score > 0.999
    assert right.hits[0].object.key == refs["porous"].key and right.hits[0].score > 0.999
    # a region of a stored image is embedded anew, and the image itself is a hit like any other
    inside = search(gateway, "halves", refs["fibres"], 1, region=gateway_pb2.Region(x=0, y=0, width=192, height=192))
    assert not inside.query_in_collection and inside.hits[0].object.key == refs["fibres"].key
    for region, words in ((gateway_pb2.Region(x=0, y=0, width=16, height=192), "at least 32"),
                          (gateway_pb2.Region(x=-1, y=0, width=64, height=64), ">= 0"),
                          (gateway_pb2.Region(x=300, y=0, width=100, height=64), "reaches past the query image, "
                                                                                 "384 x 192 px")):
        with pytest.raises(grpc.RpcError) as err:
            search(gateway, "halves", both, region=region)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details(), region


def test_bad_requests_name_what_is_wrong(gateway):
    ref = upload(gateway, png(generate(7, (128, 128)).image), "bad.png")
    cases = [
        ({"lens": "enc9"}, grpc.StatusCode.INVALID_ARGUMENT, "enc9"),
        ({"classify": "no-such-head"}, grpc.StatusCode.NOT_FOUND, "no-such-head"),
        ({"classify": "sem-autoencoder"}, grpc.StatusCode.INVALID_ARGUMENT, "sem-classifier"),
        ({"embed": "../escape"}, grpc.StatusCode.INVALID_ARGUMENT, "collection name"),
        ({"max_side": "5000"}, grpc.StatusCode.INVALID_ARGUMENT, "max_side"),
        ({"colour": "red"}, grpc.StatusCode.INVALID_ARGUMENT, "colour"),
    ]
    for options, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            analyse(gateway, ref, **options)
        assert err.value.code() == code, options
        assert words in err.value.details(), (options, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        gateway.SearchCollection(gateway_pb2.SearchCollectionRequest(collection="nothing-here", query=ref), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "embed=nothing-here" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        gateway.SearchCollection(gateway_pb2.SearchCollectionRequest(collection="textures", query=ref, k=5000),
                                 timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = upload(gateway, b"not an image at all", "notes.png")
    with pytest.raises(grpc.RpcError) as err:
        analyse(gateway, text)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert analyse(gateway, ref).result_json  # still serving
