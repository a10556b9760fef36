import asyncio
import threading
import uuid

import pytest

from nanolens.common.v1 import common_pb2
from nanolens_gateway.results import Artefact, ResultStore, identity
from nanolens_runtime.bundles import sha256_bytes
from nanolens_runtime.storage import ObjectInfo

SOURCE = ObjectInfo(bucket="raw", key="a.tif", size=10, etag="e1", version_id="v1", content_type="image/tiff")
NEWER = ObjectInfo(bucket="raw", key="a.tif", size=10, etag="e2", version_id="v2", content_type="image/tiff")
MODEL = dict(name="tem-unet", version="1.1.0", sha256="a" * 64, code_sha256="c" * 64)
ADAPTER = "e" * 64


def test_identity_follows_input_model_code_and_options():
    base = identity(SOURCE, "particle_sizes", common_pb2.ModelInfo(**MODEL), {"method": "cnn"}, ADAPTER)
    assert base == identity(SOURCE, "particle_sizes", common_pb2.ModelInfo(**MODEL), {"method": "cnn"}, ADAPTER)
    changed = [
        identity(NEWER, "particle_sizes", common_pb2.ModelInfo(**MODEL), {"method": "cnn"}, ADAPTER),
        identity(SOURCE, "particle_sizes", common_pb2.ModelInfo(**{**MODEL, "sha256": "b" * 64}), {"method": "cnn"},
                 ADAPTER),
        # the same model behind changed serving code (pre- or post-processing) is a new result
        identity(SOURCE, "particle_sizes", common_pb2.ModelInfo(**{**MODEL, "code_sha256": "d" * 64}),
                 {"method": "cnn"}, ADAPTER),
        # and so is the same model behind changed gateway code (a fixed reader, a new default)
        identity(SOURCE, "particle_sizes", common_pb2.ModelInfo(**MODEL), {"method": "cnn"}, "f" * 64),
        identity(SOURCE, "particle_sizes", common_pb2.ModelInfo(**MODEL), {"method": "cnn", "pixel_size_nm": "2"},
                 ADAPTER),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_a_result_lists_only_artefacts_that_are_stored_and_none_when_one_failed(store):
    """Artefacts are written at once, a picture drawn while the numbers are written; the document
    comes last, so a picture that failed (or a gateway that died) leaves no result to trust."""
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    results = ResultStore(store, bucket)
    prefix = "raw/a.npy/spectra/0123456789abcdef/"
    drawn = threading.Event()

    def picture() -> bytes:
        drawn.set()
        return b"\x89PNG picture"

    def broken() -> bytes:
        raise RuntimeError("the picture could not be drawn")

    numbers = Artefact("probabilities.npy", b"numbers", "application/x-npy")
    with pytest.raises(RuntimeError, match="could not be drawn"):
        asyncio.run(results.save(prefix, {"n_spectra": 1}, [numbers, Artefact("spectra.png", broken, "image/png")]))
    assert results.load(prefix) is None  # no result claims the missing picture: the next request computes

    doc = asyncio.run(results.save(prefix, {"n_spectra": 1}, [numbers, Artefact("spectra.png", picture, "image/png")]))
    assert drawn.is_set() and results.load(prefix) == doc
    assert [a["name"] for a in doc["artifacts"]] == ["probabilities.npy", "spectra.png"]
    for listed in doc["artifacts"]:  # each listed artefact is there, with the bytes its entry describes
        data = store.get(listed["bucket"], listed["key"])
        assert (len(data), sha256_bytes(data)) == (listed["size_bytes"], listed["sha256"])
    assert store.get(bucket, prefix + "spectra.png") == b"\x89PNG picture"
