"""SEM images as the gateway runs them: decode, one call to the SEM service (lens, embedding,
anomaly, classification), pictures, and the embedding into a collection; search over collections."""

from __future__ import annotations

import asyncio

import numpy as np
from PIL import Image, ImageDraw

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens.sem.v1 import sem_pb2, sem_pb2_grpc
from nanolens_formats.images import decode_image
from nanolens_formats.instrument import acquisition
from nanolens_gateway.adapters import pictures, sem_collections
from nanolens_gateway.adapters.pictures import BAR_WIDTH, PANEL, colour_bar, colourise, fit, panels_png
from nanolens_gateway.auth import caller
from nanolens_gateway.context import AnalysisContext, Outcome
from nanolens_gateway.dataplane import DataPlane
from nanolens_gateway.domains import Analysis, Domain, DomainRpc, Option, yes
from nanolens_gateway.results import Artefact
from nanolens_gateway.schema import array, boolean, integer, nullable, number, record, string
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime import arrays
from nanolens_runtime.errors import InvalidArgument, NotFound, Unavailable
from nanolens_search import search as nearest

#: The autoencoder manifest's metric with the calibrated search similarity (nanolens_sem.evaluation.search).
SIMILAR_ABOVE = "search_similar_above"
MOSAIC_CHANNELS = 16  # channels per layer in lens_<layer>.png, most active first

OPTIONS = (
    Option("lens", "the lens: 'all' layers or some, comma-separated (enc1,enc2,enc3,enc4,latent)", flag="--lens"),
    Option("anomaly", "the reconstruction-error map and the image's anomaly percentile", "yes_no", flag="--anomaly"),
    Option("classify", "a classifier head (nanolens sem train), name or name:version", flag="--classify"),
    Option("embed", "add the image's embedding to this collection (nanolens sem search)", flag="--embed"),
    Option("max_side", "largest side of returned maps and pictures, px (default 256, at most 1024)",
           "positive_number", flag="--max-side"),
    Option("keep_info_bar", "keep the bottom rows that look like an instrument's information bar", "yes_no",
           flag="--keep-info-bar"),
)

_LAYER = record("one encoder layer over the whole image", name=string("layer"), channels=integer("channels"),
                stride=integer("input pixels per activation pixel"), mean=number("mean activation"),
                std=number("standard deviation of the activations"),
                sparsity=number("fraction of activations <= 0"), peak=number("largest activation"),
                top_channels=array(integer("channel"), "most active channels, first the most"),
                top_channel_means=array(number("mean activation"), "their mean activations"))
RESULT = {
    "image": record("the image analysed", height=integer("pixels"), width=integer("pixels"),
                    pixel_size_nm=nullable(number("nm per pixel from the file's metadata (null: unknown)")),
                    pixel_size_source=string("where the pixel size came from"),
                    info_bar_rows=integer("bottom rows left out as the instrument's information bar"),
                    windows=integer("windows of at most 512 x 512 px the autoencoder ran in")),
    "embedding": record("the image's embedding", dim=integer("length"),
                        vector=array(number("component"), "standardised, L2-normalised (embedding.npy holds it "
                                     "in float32)"),
                        collection=nullable(string("the collection it was added to (option embed)")),
                        item=nullable(string("its item object in the results bucket"))),
    "lens": array(_LAYER, "per-layer statistics (option lens; empty without); lens_<layer>.png shows the maps"),
    "anomaly": nullable(record(
        "reconstruction error read against the training images (option anomaly)",
        image_percentile=number("percentile of the image's error among the training tiles' (99: worse than 99 % "
                                "of what the model was trained on)"),
        image_error=number("mean squared reconstruction error, intensities 0-1"),
        anomalous_fraction=number("fraction of 16 x 16 blocks above the training blocks' 99.9th percentile"),
        psnr_db=number("reconstruction PSNR, dB"), block_px=integer("block side of the maps, px"))),
    "classification": nullable(record(
        "the head's answer (option classify)", label=string("most probable class"),
        probability=number("its probability"), classes=array(string("class"), "the head's classes"),
        probabilities=array(number("probability"), "per class"),
        head=string("the head that answered, name:version"),
        ood_score=nullable(number("how unlike every class's training images the image is: cosine distance of its "
                                  "embedding to the nearest training embedding over a threshold calibrated on "
                                  "held-out images (about 2 % of new images of known classes score above 1); "
                                  "null: the head has none")),
        out_of_domain=boolean("ood_score above 1: unlike every class, the label is a guess"))),
    "quality": record("whether to trust the classification",
                      trustworthy=boolean("false when any warning was raised"),
                      warnings=array(string("one reason"), "why not to trust the result; empty when it can be "
                                     "trusted")),
}


def lens_layers(raw: str) -> list[str]:
    """The lens option as layer names ([]: every layer)."""
    names = [p.strip().lower() for p in raw.split(",") if p.strip()]
    return [] if names in ([], ["all"]) else list(dict.fromkeys(names))


async def resolve_model(client: ServiceClient, name: str, version: str, options: dict[str, str]
                        ) -> common_pb2.ModelInfo:
    """The autoencoder, and the head written as name:version (its newest when no version is
    given), so that a new head version makes a new result identity."""
    if "classify" in options:
        head_name, _, head_version = options["classify"].partition(":")
        head = await client.catalogue.resolve(head_name, head_version)
        if head.task != "sem-classifier":
            raise InvalidArgument(f"model {head.name} has task {head.task}, not sem-classifier",
                                  field="options.classify")
        options["classify"] = f"{head.name}:{head.version}"
    if "lens" in options:
        options["lens"] = ",".join(lens_layers(options["lens"])) or "all"
    if "embed" in options:
        sem_collections.check_name(options["embed"], "options.embed")
    model = await client.catalogue.resolve(name, version)
    if model.task != "sem-autoencoder":
        raise InvalidArgument(f"model {model.name} has task {model.task}, not sem-autoencoder", field="model_name")
    return model


def max_side_of(options: dict[str, str]) -> int:
    value = float(options.get("max_side", 256))
    if value != int(value) or not 16 <= value <= 1024:
        raise InvalidArgument(f"option max_side={options['max_side']} must be a whole number of pixels, 16-1024",
                              field="options.max_side")
    return int(value)


async def call(client: ServiceClient, request: sem_pb2.AnalyzeImageRequest, key: str, deadline_s: float | None):
    return await client.unary("AnalyzeImage", request, deadline_s, f"input {key!r}")


async def sem_image(ctx: AnalysisContext, client: ServiceClient) -> Outcome:
    data = await ctx.fetch()
    with ctx.timer.stage("decode"):
        decoded = await asyncio.to_thread(decode_image, data, ctx.source.key, ctx.max_pixels)
    max_side = max_side_of(ctx.options)
    head_name, _, head_version = ctx.options.get("classify", "").partition(":")
    request = sem_pb2.AnalyzeImageRequest(
        image=arrays.to_proto(decoded.image), model=common_pb2.ModelSelector(name=ctx.model.name,
                                                                             version=ctx.model.version),
        lens="lens" in ctx.options, layers=lens_layers(ctx.options.get("lens", "")), max_side=max_side,
        anomaly=yes(ctx.options, "anomaly"), keep_info_bar=yes(ctx.options, "keep_info_bar"),
        classifier=common_pb2.ModelSelector(name=head_name, version=head_version), max_channels=MOSAIC_CHANNELS)
    response = await call(client, request, ctx.source.key, ctx.remaining())
    ctx.absorb(response.provenance)
    vector = arrays.from_proto(response.embedding, "embedding")
    collection = ctx.options.get("embed")
    item = None
    if collection:
        with ctx.timer.stage("store"):
            metadata = {"detector": decoded.detector or None, "pixel_size_nm": decoded.pixel_size_nm or None,
                        **await asyncio.to_thread(acquisition, data)}
            item = await asyncio.to_thread(sem_collections.add, ctx.store, ctx.results_bucket, collection, ctx.model,
                                           ctx.source, vector, metadata)
    with ctx.timer.stage("postprocess"):
        # PIL pictures only (fonts per thread): no lock, so concurrent analyses draw side by side
        outcome = await asyncio.to_thread(build_outcome, decoded, response, vector, collection, item)
    return outcome


def build_outcome(decoded, response: sem_pb2.AnalyzeImageResponse, vector: np.ndarray, collection: str | None,
                  item: str | None) -> Outcome:
    image = decoded.image[:response.height - response.info_bar_rows]
    summary = {
        "image": {"height": response.height, "width": response.width, "pixel_size_nm": decoded.pixel_size_nm or None,
                  "pixel_size_source": decoded.pixel_size_source or "unknown", "info_bar_rows": response.info_bar_rows,
                  "windows": response.windows},
        "embedding": {"dim": int(vector.size), "vector": [round(float(v), 6) for v in vector],
                      "collection": collection, "item": item},
        "lens": [{"name": layer.name, "channels": layer.channels, "stride": layer.stride,
                  "mean": round(layer.mean, 5), "std": round(layer.std, 5), "sparsity": round(layer.sparsity, 4),
                  "peak": round(layer.peak, 4), "top_channels": list(layer.top_channels),
                  "top_channel_means": [round(v, 5) for v in layer.top_channel_means]} for layer in response.layers],
        "anomaly": None, "classification": None, "quality": {"trustworthy": True, "warnings": []},
    }
    artefacts = [Artefact("embedding.npy", pictures.npy_bytes(vector), "application/x-npy")]
    for layer in response.layers:
        maps = arrays.from_proto(layer.maps, "maps").astype(np.float32)
        artefacts.append(Artefact(f"lens_{layer.name}.png", lens_mosaic_png(layer, maps), "image/png"))
    if response.layers:
        artefacts.append(Artefact("lens_overlay.png", lens_overlay_png(image, response.layers), "image/png"))
    if response.HasField("reconstruction"):
        rec = arrays.from_proto(response.reconstruction, "reconstruction").astype(np.float32)
        artefacts.append(Artefact("reconstruction.png", reconstruction_png(image, rec), "image/png"))
    if response.HasField("anomaly"):
        a = response.anomaly
        summary["anomaly"] = {"image_percentile": round(a.image_percentile, 2), "image_error": round(a.image_error, 6),
                              "anomalous_fraction": round(a.anomalous_fraction, 5), "psnr_db": round(a.psnr_db, 2),
                              "block_px": a.block_px}
        percentiles = arrays.from_proto(a.percentile_map, "percentile_map")
        artefacts.append(Artefact("anomaly.png", anomaly_png(image, percentiles, a), "image/png"))
        artefacts.append(Artefact("anomaly_percentiles.npy", pictures.npy_bytes(percentiles),
                                  "application/x-npy"))
    if response.HasField("classification"):
        c = response.classification
        summary["classification"] = {"label": c.label, "probability": round(c.probability, 4),
                                     "classes": list(c.classes),
                                     "probabilities": [round(p, 4) for p in c.probabilities],
                                     "head": f"{c.head.name}:{c.head.version}",
                                     "ood_score": round(c.ood_score, 4) if c.HasField("ood_score") else None,
                                     "out_of_domain": c.HasField("ood_score") and c.ood_score > 1}
        if summary["classification"]["out_of_domain"]:
            summary["quality"] = {"trustworthy": False, "warnings": [
                f"the image is unlike every class head {c.head.name}:{c.head.version} was trained on (out-of-domain "
                f"score {c.ood_score:.2f}, above 1): '{c.label}' is a guess"]}
    return Outcome(summary, artefacts)


def lens_mosaic_png(layer: sem_pb2.LayerLens, maps: np.ndarray) -> bytes:
    """The layer's most active channels (up to 16: the service sends those), one panel each on one
    colour scale, with a colour bar."""
    row = {int(c): i for i, c in enumerate(layer.map_channels)}
    shown = [int(c) for c in layer.map_channels[:MOSAIC_CHANNELS]]
    vmax = float(np.percentile(maps[[row[c] for c in shown]], 99.5)) or 1.0
    panels = [(fit(colourise(maps[row[c]], 0, vmax), PANEL), f"channel {c}") for c in shown]
    title = (f"{layer.name}: {len(shown)} of {layer.channels} channels, most active first "
             f"(stride {layer.stride}, sparsity {layer.sparsity:.2f})")
    return panels_png(panels, title, colour_bar(2 * PANEL, 0, vmax, "magma", "activation"), min(4, len(shown)))


def _overlay(grey: np.ndarray, values: np.ndarray, vmin: float, vmax: float, cmap: str, alpha: float
             ) -> Image.Image:
    base = Image.fromarray(grey).convert("RGB")
    heat = Image.fromarray(colourise(values, vmin, vmax, cmap)).resize(base.size, Image.BILINEAR)
    return fit(np.asarray(Image.blend(base, heat, alpha)), 2 * PANEL, Image.BILINEAR)


def lens_overlay_png(image: np.ndarray, layers) -> bytes:
    """The image with each layer's most active channel laid over it, one panel per layer."""
    grey = pictures.to_uint8(image)
    panels = []
    for layer in layers:
        maps = arrays.from_proto(layer.maps, "maps").astype(np.float32)
        top = int(layer.map_channels[0])  # the most active: the service ranks the channels it sends
        vmax = float(np.percentile(maps[0], 99.5)) or 1.0
        panels.append((_overlay(grey, maps[0], 0, vmax, "magma", 0.55).resize((PANEL, PANEL)),
                       f"{layer.name} ch {top}"))
    return panels_png(panels, "each layer's most active channel over the image (its own scale)",
                   colour_bar(PANEL, 0, 1, "magma", "relative"), len(panels))


def reconstruction_png(image: np.ndarray, reconstruction: np.ndarray) -> bytes:
    grey = pictures.to_uint8(image)
    rec = (np.clip(reconstruction, 0, 1) * 255).astype(np.uint8)
    side = 2 * PANEL
    panels = [(fit(np.repeat(grey[..., None], 3, 2), side, Image.BILINEAR), "input (information bar removed)"),
              (fit(np.repeat(rec[..., None], 3, 2), side, Image.BILINEAR), "autoencoder reconstruction")]
    rows = -(-len(panels) // 2)
    canvas = Image.new("RGB", (2 * side + 12, side + 40 * rows), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, caption) in enumerate(panels):
        draw.text((4 + i * (side + 6), 4), caption, fill="black")
        canvas.paste(panel, (4 + i * (side + 6), 20))
    return pictures.png_bytes(canvas, compress_level=1)


def anomaly_png(image: np.ndarray, percentiles: np.ndarray, a: sem_pb2.Anomaly) -> bytes:
    """The image with its block error percentiles over it (colour bar: percentile of the training blocks)."""
    grey = pictures.to_uint8(image)
    panel = _overlay(grey, percentiles, 50, 100, "inferno", 0.5)
    lines = (f"anomaly: image at the {a.image_percentile:.1f}th percentile of the training tiles",
             f"{100 * a.anomalous_fraction:.2f} % of {a.block_px} px blocks above their 99.9th percentile")
    top = 8 + 16 * len(lines)  # the title on lines of its own, the canvas as wide as the longest
    width = max(panel.size[0] + BAR_WIDTH + 90, 8 + max(round(pictures.font().getlength(t)) for t in lines))
    canvas = Image.new("RGB", (width, panel.size[1] + top + 20), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, 4 + 16 * i), line, fill="black", font=pictures.font())
    canvas.paste(panel, (4, top))
    canvas.paste(colour_bar(panel.size[1] - 20, 50, 100, "inferno", "percentile"), (panel.size[0] + 10, top))
    return pictures.png_bytes(canvas, compress_level=1)


def collections(plane: DataPlane) -> sem_collections.Collections:
    """This gateway's collections, loaded on first search."""
    return plane.state("sem.collections", lambda p: sem_collections.Collections(
        p.store, p.settings.results_bucket, p.settings.sem_index_above, p.settings.sem_relist_seconds))


MIN_REGION = 32  # px: the deepest layer the embedding pools over runs at stride 16


def region_of(request: gateway_pb2.SearchCollectionRequest) -> tuple[int, int, int, int] | None:
    """The query's region as (x, y, width, height), or None for the whole image."""
    if not request.HasField("region"):
        return None
    r = request.region
    if r.x < 0 or r.y < 0 or r.width < MIN_REGION or r.height < MIN_REGION:
        raise InvalidArgument(f"region x={r.x} y={r.y} width={r.width} height={r.height}: x and y must be >= 0 and "
                              f"each side at least {MIN_REGION} px", field="region")
    return r.x, r.y, r.width, r.height


async def embed_query(plane: DataPlane, model: common_pb2.ModelInfo, bucket: str, key: str, version: str,
                      region: tuple[int, int, int, int] | None) -> np.ndarray:
    """The query image's embedding (of its region when given) by the collection's model."""
    _, _, client = plane.route(gateway_pb2.ANALYSIS_KIND_SEM_IMAGE, "query")
    info = await asyncio.to_thread(plane.store.stat, bucket, key, version)
    data = await asyncio.to_thread(plane.store.get, bucket, key, info.version_id)
    image = (await asyncio.to_thread(decode_image, data, key, plane.settings.max_image_mp * 2**20)).image
    if region is not None:
        x, y, width, height = region
        if x + width > image.shape[1] or y + height > image.shape[0]:
            raise InvalidArgument(f"region x={x} y={y} width={width} height={height} reaches past the query image, "
                                  f"{image.shape[1]} x {image.shape[0]} px", field="region")
        image = np.ascontiguousarray(image[y:y + height, x:x + width])
    response = await call(client, sem_pb2.AnalyzeImageRequest(
        image=arrays.to_proto(image), model=common_pb2.ModelSelector(name=model.name, version=model.version),
        keep_info_bar=region is not None), key, None)
    if response.provenance.model_sha256 != model.sha256:
        raise InvalidArgument(f"the SEM service ran {response.provenance.model_name} "
                              f"{response.provenance.model_version}, not the collection's model", field="query")
    return arrays.from_proto(response.embedding, "embedding")


def hit(obj: dict, score: float) -> gateway_pb2.SearchHit:
    return gateway_pb2.SearchHit(
        object=common_pb2.ObjectRef(bucket=obj["bucket"], key=obj["key"], version_id=obj["version_id"]), score=score,
        metadata={k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in obj.get("metadata", {}).items()})


async def search(plane: DataPlane, request: gateway_pb2.SearchCollectionRequest
                 ) -> gateway_pb2.SearchCollectionResponse:
    """SearchCollection: the query's embedding (stored, or computed by the collection's model; of a
    region of it when asked) against the collection; hits the caller may not read, or whose
    instrument metadata does not match the filters, are left out."""
    name = sem_collections.check_name(request.collection)
    k = request.k or 10
    if not 1 <= k <= sem_collections.MAX_K:
        raise InvalidArgument(f"k must be 1-{sem_collections.MAX_K} (0: 10), got {request.k}", field="k")
    region = region_of(request)
    matches = sem_collections.metadata_filter(dict(request.where))
    bucket, key, version = plane.buckets.input_object(request.query, "query")
    # A collection may hold several groups' images: each caller sees only the hits it may read, and
    # queries with an image it may read (stored in the collection) or analyse (embedded now).
    who = caller()
    loaded = await collections(plane).load(name)
    row = -1 if region else collections(plane).row_of(loaded, bucket, key)
    model = common_pb2.ModelInfo(**loaded.record["model"])
    # outside the caller's scopes the refusal is the same whether the collection holds the object or
    # not (no membership oracle); within them, a query not stored must be embedded: an analysis
    outside = not who.may("read", bucket, key)
    who.require("read" if row >= 0 or outside else "analyse", bucket, key)
    query = loaded.vectors.vector(row) if row >= 0 else await embed_query(plane, model, bucket, key, version, region)
    found = await asyncio.to_thread(
        nearest, loaded.vectors, query, k, row,
        lambda o: who.may("read", o["bucket"], o["key"]) and matches(o.get("metadata", {})))
    hits = [hit(loaded.vectors.objects[r], score) for r, score in found]
    similar_above = await _similar_above(plane, model)
    return gateway_pb2.SearchCollectionResponse(
        hits=hits, n_items=loaded.vectors.n_items, model=model, query_in_collection=row >= 0,
        similar_above=similar_above,
        nothing_similar=similar_above is not None and not any(h.score >= similar_above for h in hits))


async def _similar_above(plane: DataPlane, model: common_pb2.ModelInfo) -> float | None:
    """The collection's autoencoder's calibrated "similar" threshold, from the SEM service's catalogue
    (None without a SEM service, or for a model without the calibration)."""
    client = plane.clients.get("sem")
    if client is None:
        return None
    try:
        info = await client.catalogue.resolve(model.name, model.version)
    except (NotFound, Unavailable):  # a search of stored vectors does not need the service
        return None
    return info.metrics.get(SIMILAR_ABOVE) if info.sha256 == model.sha256 else None


def summarise(result: dict) -> list[str]:
    image, embedding = result["image"], result["embedding"]
    bar = f", information bar of {image['info_bar_rows']} rows left out" if image["info_bar_rows"] else ""
    added = f" added to collection {embedding['collection']}" if embedding["collection"] else ""
    lines = [f"{image['width']} x {image['height']} px{bar}; embedding of {embedding['dim']}{added}"]
    for layer in result["lens"]:
        lines.append(f"  lens {layer['name']}: {layer['channels']} channels, mean {layer['mean']:.3g}, sparsity "
                     f"{layer['sparsity']:.2f}, most active {layer['top_channels'][:3]}")
    if result["anomaly"]:
        a = result["anomaly"]
        lines.append(f"  anomaly: {a['image_percentile']:.1f}th percentile of the training tiles, "
                     f"{100 * a['anomalous_fraction']:.2f} % of blocks above the 99.9th, PSNR {a['psnr_db']:.1f} dB")
    if result["classification"]:
        c = result["classification"]
        unlike = " UNLIKE EVERY CLASS" if c.get("out_of_domain") else ""
        lines.append(f"  class: {c['label']} ({c['probability']:.3f}, head {c['head']}){unlike}")
    return lines


DOMAIN = Domain(
    name="sem", title="SEM images through an autoencoder: lens, embeddings, classes, anomalies",
    module="nanolens_sem",
    stub=sem_pb2_grpc.SemServiceStub, list_models_request=sem_pb2.ListModelsRequest(),
    analyses=(Analysis(gateway_pb2.ANALYSIS_KIND_SEM_IMAGE, "sem_image", sem_image, OPTIONS, resolve_model, RESULT,
                       "an SEM image through the autoencoder: embedding, and with options the lens, the anomaly map, "
                       "a class; artefacts: embedding.npy, lens_<layer>.png, lens_overlay.png, reconstruction.png, "
                       "anomaly.png, anomaly_percentiles.npy"),),
    summarise=summarise, file_help="an SEM image (TIFF, DM3/DM4, PNG, JPEG, BMP, .npy)",
    rpcs=(DomainRpc("SearchCollection", "read", search),))
