"""An analysis context keeps a service's answer only when the service ran the model the result's identity names."""

import pytest

from nanolens.common.v1 import common_pb2
from nanolens_gateway.context import AnalysisContext
from nanolens_runtime.errors import Aborted
from nanolens_runtime.metrics import StageTimer
from nanolens_runtime.storage import ObjectInfo

ASKED = common_pb2.ModelInfo(name="tem-unet", version="1.0.0", sha256="a" * 64, code_sha256="c" * 64)


def ctx() -> AnalysisContext:
    source = ObjectInfo(bucket="raw", key="a.tif", size=1, etag="e", version_id="", content_type="image/tiff")
    return AnalysisContext(store=None, source=source, model=ASKED, options={}, timer=StageTimer(), deadline=None,
               block_bytes=1, max_listed=1, max_pixels=1)


def test_the_model_asked_for_is_absorbed_with_its_timings():
    j = ctx()
    j.absorb(common_pb2.Provenance(service_name="tem", model_name="tem-unet", model_version="1.0.0",
                                   model_sha256="a" * 64, code_sha256="c" * 64,
                                   timings=[common_pb2.StageTiming(stage="inference", seconds=0.5)]))
    assert j.service_timings == {"inference": 0.5} and j.provenance.model_version == "1.0.0"


@pytest.mark.parametrize("version, sha", [("1.0.1", "a" * 64), ("1.0.0", "b" * 64)])
def test_another_model_than_asked_is_refused(version, sha):
    j = ctx()
    with pytest.raises(Aborted, match="instead of tem-unet:1.0.0"):
        j.absorb(common_pb2.Provenance(service_name="tem", model_name="tem-unet", model_version=version,
                                       model_sha256=sha))
    assert j.provenance is None and j.service_timings == {}


def test_the_same_model_behind_other_serving_code_is_refused():
    """A replica with newer pre- or post-processing than the catalogue said: its result would be
    stored under an identity that names the old code."""
    j = ctx()
    with pytest.raises(Aborted, match="other serving code"):
        j.absorb(common_pb2.Provenance(service_name="tem", model_name="tem-unet", model_version="1.0.0",
                                       model_sha256="a" * 64, code_sha256="d" * 64))
    assert j.provenance is None
