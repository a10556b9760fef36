"""Every analysis's result.json, as the stack writes it, matches the schema the analysis declares
(the one the result reference is generated from): a field written but not declared, declared but
not written, or of another type fails here."""

from __future__ import annotations

import io
import json

import grpc
import jsonschema
import numpy as np
import pytest

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_gateway.domains import analyses

pytestmark = pytest.mark.slow


def _npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _spectra():
    from nanolens_spectra.synthetic.swcnt import generate_spectra

    batch = generate_spectra(n_per_class=2, seed=5)
    return "spectra.npy", _npy(batch.spectra), {}


def _spectral_map():
    from nanolens_spectra.synthetic.swcnt import generate_map

    return "map.npy", _npy(generate_map(6, 6, seed=6)[0]), {}


def _particle_sizes():
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    image = generate(seed=7, params=SynthParams(shape=(128, 128))).image
    return "particles.npy", _npy(image), {"method": "watershed", "pixel_size_nm": "0.8"}


def _lpem_movie():
    from nanolens_lpem.synthetic.movies import MovieParams, generate

    images = generate(MovieParams(shape=(64, 64), n_frames=8, n_particles=4, contrast=0.4), seed=8)[0]
    return "movie.npy", _npy(images.astype(np.uint16)), {"pixel_size_nm": "2", "fps": "10"}


def _sem_image():
    from nanolens_sem.synthetic.textures import generate

    image = (generate(8, (96, 128)).image * 255).astype(np.uint8)
    return "texture.npy", _npy(image), {"lens": "all", "anomaly": "yes", "embed": "schema-sample"}


#: a small input for each analysis: (file name, bytes, options)
SAMPLES = {"spectra": _spectra, "spectral_map": _spectral_map, "particle_sizes": _particle_sizes,
           "lpem_movie": _lpem_movie, "sem_image": _sem_image}


def test_every_analysis_declares_its_fields_and_has_a_sample_here():
    for _, analysis in analyses().values():
        assert analysis.result, f"{analysis.name}: Analysis.result declares no fields"
        assert analysis.doc, f"{analysis.name}: Analysis.doc is empty"
        assert analysis.name in SAMPLES, f"{analysis.name}: add a sample input to SAMPLES"
        jsonschema.Draft202012Validator.check_schema(analysis.schema())


@pytest.mark.parametrize("kind", sorted(analyses()), ids=lambda k: analyses()[k][1].name)
def test_result_json_matches_the_declared_schema(stack, kind):
    from nanolens_runtime.storage import ObjectStore

    analysis = analyses()[kind][1]
    filename, data, options = SAMPLES[analysis.name]()
    with grpc.insecure_channel(stack[1].gateway) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        ref = gateway.Upload(iter([gateway_pb2.UploadRequest(header=gateway_pb2.UploadHeader(filename=filename)),
                                   gateway_pb2.UploadRequest(chunk=data)]), timeout=60).object
        response = gateway.Analyze(gateway_pb2.AnalyzeRequest(input=ref, analysis=kind, options=options,
                                                              force=True), timeout=300)
        catalogue = gateway.ListModels(gateway_pb2.ListModelsRequest(), timeout=60)
    returned = json.loads(response.result_json)
    store = ObjectStore.from_settings(stack[1].storage_settings())
    stored = json.loads(store.get(response.result.bucket, response.result.key))
    validator = jsonschema.Draft202012Validator(analysis.schema())
    for doc in (returned, stored):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    assert isinstance(response.result, common_pb2.ObjectRef) and stored["identity"] == returned["identity"]
    prov = stored["provenance"]
    info = next(m for s in catalogue.services for m in s.models
                if (m.name, m.version) == (prov["model_name"], prov["model_version"]))
    if info.training_data_sha256:  # a trained model, not a model-free method: it says what it learnt from
        assert prov["model_training_data"] == info.training_data != ""
