"""Particle sizing as the gateway runs it: decode the micrograph, call the TEM service, build the result."""

from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens.tem.v1 import tem_pb2
from nanolens_gateway import pictures
from nanolens_gateway.images import decode_image
from nanolens_gateway.jobs import Job, Outcome
from nanolens_gateway.results import Artefact
from nanolens_gateway.upstream import ServiceClient, translate
from nanolens_runtime import arrays
from nanolens_runtime.errors import InvalidArgument, ResourceExhausted

METHODS = {"cnn": tem_pb2.METHOD_CNN, "ann": tem_pb2.METHOD_ANN, "watershed": tem_pb2.METHOD_WATERSHED,
           "hough": tem_pb2.METHOD_HOUGH}
MODEL_OF = {"cnn": "tem-unet", "ann": "tem-ann"}  # the shipped model of each model method
METHOD_OF_TASK = {"instance-segmentation": "cnn", "agglomerate-sizing": "ann"}
BASELINES = ("watershed", "hough")  # catalogue entries named by the method


def method_option(options: dict[str, str]) -> str:
    method = options.get("method", "").lower()
    if method and method not in METHODS:
        raise InvalidArgument(f"option method={method!r} is not one of {sorted(METHODS)}", field="options.method")
    return method


def bool_option(options: dict[str, str], name: str) -> bool:
    raw = options.get(name, "")
    value = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}.get(raw.lower())
    if value is None:
        raise InvalidArgument(f"option {name}={raw!r} must be true or false (1/0, yes/no)", field=f"options.{name}")
    return value


def pixel_size_option(options: dict[str, str]) -> float:
    raw = options.get("pixel_size_nm", "")
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise InvalidArgument(f"option pixel_size_nm={raw!r} must be a positive number", field="options.pixel_size_nm")
    return value


YES_NO_OPTIONS = ("bright_particles", "tta")
OPTIONS = ("method", "pixel_size_nm", *YES_NO_OPTIONS)  # every key particle sizing reads


def canonical_options(options: dict[str, str]) -> None:
    """Check the yes/no options and the pixel size before anything is fetched, and write them in
    one spelling, so that the same request makes the same result identity: a yes/no option that is
    true becomes ``"true"`` and one that is false is dropped (``tta=no`` is no ``tta``); the pixel
    size becomes the float's shortest form (``0.50`` is ``0.5``)."""
    for name in YES_NO_OPTIONS:
        if bool_option(options, name):
            options[name] = "true"
        else:
            options.pop(name, None)
    if "pixel_size_nm" in options:
        value = pixel_size_option(options)
        if value:
            options["pixel_size_nm"] = repr(value)
        else:
            del options["pixel_size_nm"]


async def resolve_model(client: ServiceClient, model_name: str, model_version: str,
                        options: dict[str, str]) -> common_pb2.ModelInfo:
    """The model behind the request, which the result's identity names; puts ``options`` in their
    canonical form (:func:`canonical_options`) and sets ``options["method"]``.

    - A model name picks the method by the model's task (instance-segmentation: cnn,
      agglomerate-sizing: ann), so a CNN fine-tuned on local masks is asked for by its name; the
      baselines are catalogue entries named by the method, versioned by the service and hashed
      by their code (so a code change gives a new identity).
    - No name: the method's shipped model (``model_version`` pins its version); no method: the
      CNN when the service has one, else watershed (what the service itself picks).
    """
    canonical_options(options)
    method = method_option(options)
    if method:
        options["method"] = method  # METHOD=CNN is method=cnn
    if model_name:
        model = await client.catalogue.resolve(model_name, model_version)
        named = model_name if model_name in BASELINES else METHOD_OF_TASK.get(model.task)
        if named is None or (method and method != named):
            raise InvalidArgument(f"model {model_name!r} ({model.task or 'no task'}) cannot run method "
                                  f"{method or '(default)'}", field="model_name")
        options["method"] = named
        return model
    if not method:
        models = await client.catalogue.all()
        method = "cnn" if any(m.name == MODEL_OF["cnn"] for m in models) else "watershed"
        options["method"] = method  # the result's identity names the method actually run
    return await client.catalogue.resolve(MODEL_OF.get(method, method), model_version)


async def particle_sizes(job: Job, client: ServiceClient) -> Outcome:
    data = await job.fetch()
    with job.timer.stage("decode"):
        decoded = await asyncio.to_thread(decode_image, data, job.source.key, job.max_pixels)
    requested = pixel_size_option(job.options)
    pixel_size = requested or decoded.pixel_size_nm or 0.0
    source = "request" if requested else (decoded.pixel_size_source or "unknown")
    method = method_option(job.options)
    request = tem_pb2.AnalyzeImageRequest(
        image=arrays.to_proto(decoded.image), pixel_size_nm=pixel_size, method=METHODS[method],
        bright_particles=bool_option(job.options, "bright_particles"),
        test_time_augmentation=bool_option(job.options, "tta"),
        # the model resolved for the result's identity is the one that runs
        model=None if method in BASELINES else common_pb2.ModelSelector(name=job.model.name,
                                                                         version=job.model.version))
    size = request.ByteSize()
    if size > client.max_message_mb * 2**20:  # gRPC's own refusal names no setting
        (h, w), dtype = decoded.image.shape, decoded.image.dtype
        raise ResourceExhausted(
            f"input {job.source.key!r}: a {w} x {h} {dtype} image is {size / 2**20:.1f} MiB as one message, above "
            f"the {client.max_message_mb} MiB the TEM service takes (NANOLENS_MAX_MESSAGE_MB); send it as 8- or "
            "16-bit integers, or raise that limit on the gateway and the service")
    try:
        response = await client.stub.AnalyzeImage(request, timeout=job.remaining())
    except grpc.aio.AioRpcError as exc:
        raise translate(exc, "tem") from exc
    job.absorb(response.provenance)
    with job.timer.stage("postprocess"):
        labels = arrays.from_proto(response.labels, "labels")
        dist = response.distribution
        unit = "nm" if pixel_size else "px"
        diameters = np.array([p.diameter_nm if pixel_size else p.diameter_px for p in response.particles])
        weights = np.array([p.weight for p in response.particles]) if dist.occlusion_corrected else None
        sized = diameters > 0  # as in the distribution: a particle the method could not size is left out
        summary = {
            "method": response.method,
            "image": {"height": int(labels.shape[0]), "width": int(labels.shape[1]),
                      "pixel_size_nm": pixel_size or None, "pixel_size_source": source},
            "distribution": {"count": dist.count, "gmd_px": dist.gmd_px, "gmd_nm": dist.gmd_nm or None,
                             "gsd": dist.gsd, "unit": dist.unit, "histogram_edges": list(dist.histogram_edges),
                             "histogram_counts": list(dist.histogram_counts),
                             "occlusion_corrected": dist.occlusion_corrected,
                             "estimated_count": round(dist.estimated_count, 1),
                             "histogram_estimated_counts": [round(c, 2) for c in dist.histogram_estimated_counts]},
            "n_particles": len(response.particles),
            "n_agglomerates": len(response.agglomerates),
            "particles": [
                {"id": p.id, "diameter_px": round(p.diameter_px, 3),
                 "diameter_nm": round(p.diameter_nm, 3) if pixel_size else None, "area_px": round(p.area_px, 1),
                 "centroid": [round(p.centroid_row, 2), round(p.centroid_col, 2)], "agglomerate": p.agglomerate_id,
                 "weight": round(p.weight, 3)}
                for p in response.particles[:job.max_listed]
            ],
            "agglomerates": [
                {"id": a.id, "particle_count": a.particle_count, "bbox": [a.min_row, a.min_col, a.max_row, a.max_col]}
                for a in response.agglomerates[:job.max_listed]
            ],
        }
        gmd = dist.gmd_nm if pixel_size else dist.gmd_px
        artefacts = [
            Artefact("labels.tif", pictures.labels_tiff(labels), "image/tiff"),
            Artefact("overlay.png", pictures.overlay_png(decoded.image, labels), "image/png"),
            Artefact("psd.png", pictures.psd_png(diameters[sized], unit, gmd, dist.gsd, response.method,
                                                 None if weights is None else weights[sized]), "image/png"),
        ]
    return Outcome(summary, artefacts)
