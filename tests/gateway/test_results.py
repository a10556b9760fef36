from nanolens.common.v1 import common_pb2
from nanolens_gateway.results import identity
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
