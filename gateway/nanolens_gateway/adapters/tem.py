"""Particle sizing as the gateway runs it: decode the micrograph, call the TEM service, build the result."""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens.tem.v1 import tem_pb2, tem_pb2_grpc
from nanolens_formats.calibration import SOURCES
from nanolens_formats.images import decode_image
from nanolens_formats.scalebar import read_scale_bar
from nanolens_gateway.adapters import pictures
from nanolens_gateway.context import AnalysisContext, Outcome
from nanolens_gateway.domains import Analysis, Domain, Option, yes
from nanolens_gateway.results import Artefact
from nanolens_gateway.schema import array, boolean, integer, nullable, number, record, string
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime import arrays
from nanolens_runtime.enums import enum_words

METHODS = enum_words(tem_pb2.Method, "METHOD_")  # cnn, ann, watershed, hough: the proto is the table
OPTIONS = (
    Option("method", "segmentation method (default: the best the service has)", "choice", tuple(METHODS),
           flag="--method"),
    Option("pixel_size_nm", "pixel size in nm; overrides the file's metadata", "positive_number",
           flag="--pixel-size-nm"),
    Option("bright_particles", "particles are brighter than the background (default: what the file's detector "
           "implies, SEM electrons and dark-field STEM bright; else darker, as in TEM bright field)",
           "yes_no", flag="--bright-particles", from_input=True),
    Option("tta", "cnn only: average the network over the image's 8 rotations and reflections (8x the time)",
           "yes_no", flag="--tta"),
    Option("scale", "cnn only: resample the image by this factor before the network (default: the image's own "
           "scale)", "positive_number", flag="--scale"),
    Option("choose_scale", "cnn only: choose that factor from the image, so that the particles reach the network at "
           "the size it was trained on and sizes do not depend on the magnification (on real labelled images it "
           "sizes further from the masks than the image's own scale: docs/tem-evaluation.md)", "yes_no",
           flag="--choose-scale"),
    Option("keep_info_bar", "keep the bottom rows that look like an instrument's information bar (by default "
           "they are left out of the segmentation)", "yes_no", flag="--keep-info-bar"),
)


_PARTICLE = record(
    "one particle (the first NANOLENS_MAX_LISTED)",
    id=integer("label in labels.tif"), diameter_px=number("area-equivalent diameter, pixels"),
    diameter_nm=nullable(number("area-equivalent diameter, nm (null without a pixel size)")),
    area_px=number("area, pixels"), centroid=array(number("pixels"), "[row, column] of the centre"),
    agglomerate=integer("id of the agglomerate it belongs to"),
    weight=number("occlusion-correction weight: how many particles this one stands for (1 without correction)"))
RESULT = {
    "method": string("the method that ran", list(METHODS)),
    "image": record("the image analysed", height=integer("pixels"), width=integer("pixels"),
                    pixel_size_nm=nullable(number("nm per pixel (null: unknown, sizes in pixels)")),
                    pixel_size_source=string("where the pixel size came from: request, the file's metadata, "
                                             "the image's scale bar or unknown",
                                             ["request", *SOURCES, "scale bar", "unknown"]),
                    scale_bar=nullable(record(
                        "the burned-in scale bar, looked for when neither request nor file gives the pixel size "
                        "(null: not looked for, or none found)",
                        length_px=integer("from the centre of its first pixel to that of its last"),
                        box=array(integer("pixels"), "[row0, col0, row1, col1], inclusive"),
                        label=string("its label as read (\"200 nm\"); empty when not read"),
                        warning=string("why the bar gave no pixel size; empty when it did"))),
                    info_bar_rows=integer("bottom rows left out as the instrument's information bar (text, "
                                          "logo, scale bar); 0: none found, or the option keep_info_bar"),
                    particles_bright=boolean("particles were taken as brighter than their background"),
                    contrast_source=string("why: request (the bright_particles option), detector: <the "
                                           "file's detector> (SEM electrons, dark-field STEM: bright; bright "
                                           "field: dark), or default: TEM bright field (dark)")),
    "scale": nullable(record(
        "the factor the image was resampled by before the network (null: it ran at the image's own scale, the "
        "default); sizes are in the image's own pixels whatever it was",
        factor=number("2: the network saw twice the pixels each way"),
        source=string("request (the scale option) or image (the choose_scale option: the factor at which the "
                      "network measures the particles' typical radius at the middle of its training range)",
                      ["request", "image"]),
        typical_radius_px=nullable(number("the particles' typical radius as the network measured it, in the "
                                          "image's own pixels (null: the factor was requested, or no particle "
                                          "was seen)")))),
    "distribution": record(
        "the primary-particle size distribution (lognormal fit of the area-equivalent diameters)",
        count=integer("particles sized"), gmd_px=number("geometric mean diameter, pixels"),
        gmd_nm=nullable(number("geometric mean diameter, nm")), gsd=number("geometric standard deviation"),
        unit=string("unit of the histogram edges", ["nm", "px"]),
        histogram_edges=array(number("diameter"), "histogram bin edges"),
        histogram_counts=array(integer("particles"), "particles per bin"),
        occlusion_corrected=boolean("the counts are corrected for particles hidden by overlaps"),
        estimated_count=number("particles estimated to be present, hidden ones included"),
        histogram_estimated_counts=array(number("particles"), "estimated particles per bin"),
        gmd_px_ci=nullable(array(number("pixels"), "95 % confidence interval of the GMD [low, high] (bootstrap over "
                                 "the particles; null under two particles)")),
        gmd_nm_ci=nullable(array(number("nm"), "the same in nm (null without a pixel size)")),
        gsd_ci=nullable(array(number("GSD"), "95 % confidence interval of the GSD [low, high]"))),
    "quality": record(
        "whether to trust the result: signals that catch the ways a size goes wrong, each with a threshold "
        "fitted on results with ground truth (docs/tem-evaluation.md, \"Verdict\")",
        trustworthy=boolean("false when any warning was raised"),
        contrast_to_noise=number("particle-versus-background contrast over the background's robust standard "
                                 "deviation (noise: about 1 or less)"),
        coverage=number("fraction of the image labelled as particle, 0..1"),
        edge_fraction=number("share of the particles touching the image's edge or the information bar"),
        faint_fraction=number("share of the particles differing from their surroundings by less than the "
                              "background's noise (texture or noise counted as particles)"),
        outline_ratio=nullable(number("GMD over that of the particles' outlines (equivalent-circle diameters)")),
        classical_ratio=nullable(number("GMD over that of a classical watershed on the same image (null for "
                                        "the watershed itself)")),
        classical_count_ratio=nullable(number("count over that of a classical watershed on the same image")),
        half_scale_ratio=nullable(number("GMD of the same method on the image at half scale over this GMD")),
        warnings=array(string("one reason"), "why not to trust the result; empty when it can be trusted")),
    "n_particles": integer("particles found"),
    "n_agglomerates": integer("connected agglomerates"),
    "particles": array(_PARTICLE, "the particles found"),
    "agglomerates": array(record("one agglomerate", id=integer("agglomerate id"),
                                 particle_count=integer("particles in it"),
                                 bbox=array(integer("pixels"), "[min_row, min_col, max_row, max_col]")),
                          "the agglomerates (the first NANOLENS_MAX_LISTED)"),
}


async def resolve_model(client: ServiceClient, model_name: str, model_version: str,
                        options: dict[str, str]) -> common_pb2.ModelInfo:
    """The model behind the request, which the result's identity names; sets ``options["method"]``
    when the model it resolves to runs one method (so "no method" and "the default method" are one
    request). Which model a method runs, and which method is the default, is the service's to say
    (its catalogue's ``default_for`` and ``is_default``): this module keeps no table of its own.

    A named model runs the method its task implies (the service checks a method asked beside it).
    """
    method = options.get("method", "")
    if model_name:
        model = await client.catalogue.resolve(model_name, model_version)
    elif method:
        model = await client.catalogue.resolve_use(method, model_version)
    else:
        model = await client.catalogue.resolve("", model_version)
    if not method and len(model.default_for) == 1:
        options["method"] = model.default_for[0]
    return model


def intervals(dist: tem_pb2.Distribution, pixel_size: float) -> dict:
    """The distribution's 95 % intervals for the result (null where the service had none)."""
    def pair(low: float, high: float, scale: float = 1.0, digits: int = 4) -> list[float] | None:
        return None if np.isnan(low) or np.isnan(high) else [round(low * scale, digits), round(high * scale, digits)]

    return {"gmd_px_ci": pair(dist.gmd_px_ci_low, dist.gmd_px_ci_high),
            "gmd_nm_ci": pair(dist.gmd_px_ci_low, dist.gmd_px_ci_high, pixel_size) if pixel_size else None,
            "gsd_ci": pair(dist.gsd_ci_low, dist.gsd_ci_high)}


def scale_block(response: tem_pb2.AnalyzeImageResponse) -> dict | None:
    """The scale block of the result: what the network ran at, and why."""
    if not response.HasField("scale"):
        return None
    radius = response.scale.typical_radius_px
    return {"factor": round(response.scale.factor, 4), "source": response.scale.source,
            "typical_radius_px": None if np.isnan(radius) else round(radius, 2)}


def quality(q: tem_pb2.Quality) -> dict:
    """The verdict's block of the result: signals rounded, NaN (not measured) as null."""
    def value(x: float, digits: int) -> float | None:
        return None if np.isnan(x) else round(x, digits)

    return {"trustworthy": q.trustworthy, "contrast_to_noise": round(q.contrast_to_noise, 3),
            "coverage": round(q.coverage, 4), "edge_fraction": round(q.edge_fraction, 3),
            "faint_fraction": round(q.faint_fraction, 3), "outline_ratio": value(q.outline_ratio, 3),
            "classical_ratio": value(q.classical_ratio, 3), "classical_count_ratio": value(q.classical_count_ratio, 3),
            "half_scale_ratio": value(q.half_scale_ratio, 3), "warnings": list(q.warnings)}


async def particle_sizes(ctx: AnalysisContext, client: ServiceClient) -> Outcome:
    data = await ctx.fetch()
    requested = float(ctx.options.get("pixel_size_nm", 0.0))
    scale_bar = None
    with ctx.timer.stage("decode"):
        decoded = await asyncio.to_thread(decode_image, data, ctx.source.key, ctx.max_pixels)
        pixel_size = requested or decoded.pixel_size_nm or 0.0
        source = "request" if requested else (decoded.pixel_size_source or "unknown")
        if not pixel_size:  # neither the request nor the file says: the burned-in scale bar may
            reading = await asyncio.to_thread(read_scale_bar, decoded.image)
            pixel_size, source = (reading.pixel_size_nm, "scale bar") if reading.pixel_size_nm else (0.0, source)
            scale_bar = reading.summary()
    # Particles brighter or darker than the background: the request says, else the file's detector
    # (SEM electrons and dark-field STEM: brighter), else TEM bright field (darker).
    if "bright_particles" in ctx.options:
        bright, contrast_source = yes(ctx.options, "bright_particles"), "request"
    elif decoded.bright_particles is not None:
        bright, contrast_source = decoded.bright_particles, f"detector: {decoded.detector}"
    else:
        bright, contrast_source = False, "default: TEM bright field"
    request = tem_pb2.AnalyzeImageRequest(
        image=arrays.to_proto(decoded.image), pixel_size_nm=pixel_size,
        method=METHODS.get(ctx.options.get("method", ""), tem_pb2.METHOD_UNSPECIFIED),
        bright_particles=bright, test_time_augmentation=yes(ctx.options, "tta"),
        keep_info_bar=yes(ctx.options, "keep_info_bar"), info_bar_rows=decoded.info_bar_rows,
        scale=float(ctx.options.get("scale", 0.0)), choose_scale=yes(ctx.options, "choose_scale"),
        # the model resolved for the result's identity is the one that runs
        model=common_pb2.ModelSelector(name=ctx.model.name, version=ctx.model.version))
    (h, w), dtype = decoded.image.shape, decoded.image.dtype
    response = await client.unary("AnalyzeImage", request, ctx.remaining(), f"input {ctx.source.key!r}: a {w} x {h} "
                                  f"{dtype} image", "send it as 8- or 16-bit integers, or raise that limit on the "
                                  "gateway and the service")
    ctx.absorb(response.provenance)
    with ctx.timer.stage("postprocess"):
        labels = arrays.from_proto(response.labels, "labels")
        dist = response.distribution
        unit = "nm" if pixel_size else "px"
        diameters = np.array([p.diameter_nm if pixel_size else p.diameter_px for p in response.particles])
        weights = np.array([p.weight for p in response.particles]) if dist.occlusion_corrected else None
        sized = diameters > 0  # as in the distribution: a particle the method could not size is left out
        summary = {
            "method": response.method,
            "image": {"height": int(labels.shape[0]), "width": int(labels.shape[1]),
                      "pixel_size_nm": pixel_size or None, "pixel_size_source": source, "scale_bar": scale_bar,
                      "info_bar_rows": response.info_bar_rows,
                      "particles_bright": bright, "contrast_source": contrast_source},
            "distribution": {"count": dist.count, "gmd_px": dist.gmd_px, "gmd_nm": dist.gmd_nm or None,
                             "gsd": dist.gsd, "unit": dist.unit, "histogram_edges": list(dist.histogram_edges),
                             "histogram_counts": list(dist.histogram_counts),
                             "occlusion_corrected": dist.occlusion_corrected,
                             "estimated_count": round(dist.estimated_count, 1),
                             "histogram_estimated_counts": [round(c, 2) for c in dist.histogram_estimated_counts],
                             **intervals(dist, pixel_size)},
            "scale": scale_block(response),
            "quality": quality(response.quality),
            "n_particles": len(response.particles),
            "n_agglomerates": len(response.agglomerates),
            "particles": [
                {"id": p.id, "diameter_px": round(p.diameter_px, 3),
                 "diameter_nm": round(p.diameter_nm, 3) if pixel_size else None, "area_px": round(p.area_px, 1),
                 "centroid": [round(p.centroid_row, 2), round(p.centroid_col, 2)], "agglomerate": p.agglomerate_id,
                 "weight": round(p.weight, 3)}
                for p in response.particles[:ctx.max_listed]
            ],
            "agglomerates": [
                {"id": a.id, "particle_count": a.particle_count, "bbox": [a.min_row, a.min_col, a.max_row, a.max_col]}
                for a in response.agglomerates[:ctx.max_listed]
            ],
        }
        gmd = dist.gmd_nm if pixel_size else dist.gmd_px
        ci = summary["distribution"]
        gmd_ci, gsd_ci = ci["gmd_nm_ci"] if pixel_size else ci["gmd_px_ci"], ci["gsd_ci"]

        # made in worker threads as they are stored, side by side (PIL, tifffile: no lock)
        artefacts = [
            Artefact("labels.tif", partial(pictures.labels_tiff, labels, pixel_size or None), "image/tiff"),
            Artefact("overlay.png", partial(pictures.overlay_png, decoded.image, labels, pixel_size or None),
                     "image/png"),
            Artefact("psd.png", partial(pictures.psd_png, diameters[sized], unit, gmd, dist.gsd, response.method,
                                        None if weights is None else weights[sized], gmd_ci, gsd_ci), "image/png"),
        ]
    return Outcome(summary, artefacts)


def summarise(result: dict) -> list[str]:
    dist, image = result["distribution"], result["image"]
    size = f"{image['pixel_size_nm']:.4g} nm/px ({image['pixel_size_source']})" if image["pixel_size_nm"] else \
        "pixel size unknown"
    bar = image.get("scale_bar") or {}
    if bar.get("label") and image["pixel_size_source"] == "scale bar":
        size = size[:-1] + f": \"{bar['label']}\" over {bar['length_px']} px)"
    unit, scale = ("nm", "gmd_nm") if dist["gmd_nm"] else ("px", "gmd_px")
    gmd = f"{dist[scale]:.4g} {unit}"
    gmd_ci, gsd_ci = dist.get(f"{scale}_ci"), dist.get("gsd_ci")
    if gmd_ci:
        gmd += f" (95 % CI {gmd_ci[0]:.4g}-{gmd_ci[1]:.4g})"
    return [f"{result['method']}: {dist['count']} primary particles in {result['n_agglomerates']} agglomerates; "
            f"{image['width']} x {image['height']} px, {size}"
            + (f"; information bar of {image['info_bar_rows']} rows left out" if image.get("info_bar_rows") else ""),
            f"  GMD {gmd}, GSD {dist['gsd']:.3f}" + (f" ({gsd_ci[0]:.3f}-{gsd_ci[1]:.3f})" if gsd_ci else "")
            + scale_line(result.get("scale"))] \
        + ([f"  warning: {bar['warning']}"] if bar.get("warning") else [])


def scale_line(block: dict | None) -> str:
    if not block:
        return ""
    why = "requested" if block["source"] == "request" else "chosen from the image" + (
        f", typical radius {block['typical_radius_px']:.3g} px" if block["typical_radius_px"] else "")
    return f"; network at scale {block['factor']:.3g} ({why})"


DOMAIN = Domain(
    name="tem", title="primary-particle sizes in TEM and SEM images", module="nanolens_tem",
    stub=tem_pb2_grpc.TemServiceStub, list_models_request=tem_pb2.ListModelsRequest(),
    analyses=(Analysis(gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, "particle_sizes", particle_sizes, OPTIONS,
                       resolve_model, RESULT, "primary-particle size distribution of a TEM or SEM image; "
                       "artefacts: labels.tif (instance labels), overlay.png, psd.png"),),
    summarise=summarise, file_help="a TEM or SEM image (TIFF, DM3/DM4, PNG, JPEG, BMP, .npy)")
