"""``nanolens sem search`` and ``nanolens sem train``: SEM embedding collections and classifier heads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanolens_cli.client import add_gateway, connect
from nanolens_cli.models import register_bundle
from nanolens_client import Ref

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".dm3", ".dm4", ".npy"}


def region_arg(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y,WIDTH,HEIGHT in whole pixels")
    x, y, w, h = (int(p) for p in parts)
    return x, y, w, h


def where_arg(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    return name.strip(), value.strip()


def cmd_search(args) -> int:
    """Search a collection with a local image (uploaded first) or a stored key (bucket/key or key)."""
    with connect(args) as client:
        path = Path(args.query)
        if path.is_file():
            query = client.upload(path, timeout=args.timeout).object
        else:
            bucket, _, key = args.query.partition("/") if args.bucket_in_query else ("", "", args.query)
            query = Ref(bucket, key)
        response = client.search(args.collection, query, k=args.k, region=args.region, where=dict(args.where),
                                 timeout=args.timeout)
    if args.json:
        from google.protobuf import json_format

        print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    print(f"{len(response.hits)} of {response.n_items} images in {args.collection} "
          f"({response.model.name} {response.model.version})"
          + (" (the query is in the collection and left out)" if response.query_in_collection else ""))
    if response.nothing_similar:
        print(f"nothing in {args.collection} is like the query: every similarity is below "
              f"{response.similar_above:.3f}, the model's calibrated level for images of one kind")
    for hit in response.hits:
        said = ", ".join(f"{k} {v}" for k, v in sorted(hit.metadata.items()))
        print(f"{hit.score:8.4f}  s3://{hit.object.bucket}/{hit.object.key}" + (f"  ({said})" if said else ""))
    return 0


def labelled_images(folder: Path, tile: int, embedder) -> tuple:
    """Embeddings, labels and groups (source image) of FOLDER/<class>/<image> files."""
    import numpy as np

    from nanolens_formats.images import decode_image

    features, labels, groups, counts = [], [], [], {}
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    for class_dir in classes:
        files = sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        counts[class_dir.name] = len(files)
        for f in files:
            image = decode_image(f.read_bytes(), f.name, 256 * 2**20).image
            rows = embedder.embed(image, tile=tile)
            features.append(rows)
            labels += [class_dir.name] * len(rows)
            groups += [str(f.relative_to(folder))] * len(rows)
    if len(counts) < 2 or min(counts.values(), default=0) < 2:
        raise SystemExit(f"error: {folder} needs at least two class folders with at least two images each; "
                         f"found {counts or 'none'}")
    return np.concatenate(features), np.array(labels), np.array(groups), counts


def cmd_train(args) -> int:
    from nanolens_sem.training.heads import Embedder, confusion_figure, train_head

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder of class folders", file=sys.stderr)
        return 2
    embedder = Embedder.load(Path(args.autoencoder) if args.autoencoder else None)
    features, labels, groups, counts = labelled_images(folder, args.tile, embedder)
    out = Path(args.out) / args.name / args.version
    source = (f"{folder.resolve()}: " + ", ".join(f"{c} {n}" for c, n in counts.items())
              + (f" images in {args.tile} px tiles ({len(labels)} tiles)" if args.tile else " images"))
    path, cv = train_head(features, labels, groups, embedder, args.name, args.version, out, source, args.c)
    figure = confusion_figure(cv, path / "confusion.png")
    print(f"grouped {cv.n_folds}-fold cross-validation on {cv.n_items} items from {cv.n_groups} images: "
          f"accuracy {cv.accuracy:.3f}, balanced {cv.balanced_accuracy:.3f}")
    for c in cv.classes:
        print(f"  {c:<24} precision {cv.precision[c]:.3f}  recall {cv.recall[c]:.3f}")
    novelty = json.loads((path / "manifest.json").read_text())["out_of_domain"]
    calibration = novelty["calibration"]
    print(f"unlike every class above a cosine distance of {novelty['threshold']:.3g} to the nearest training image "
          f"({calibration['flagged']} of {calibration['n_items']} held-out items above it)")
    print(f"wrote {path} (confusion matrix: {figure})")
    if args.register:
        print(f"registered: {register_bundle(path)}")
    return 0


def add_parsers(sub) -> None:
    sem = sub.add_parser("sem", help="SEM embedding collections and classifier heads")
    ssub = sem.add_subparsers(dest="action", required=True)
    search = ssub.add_parser("search", help="the images of a collection most similar to an image")
    search.add_argument("collection", help="made by `nanolens analyze sem IMAGE --embed COLLECTION`")
    search.add_argument("query", help="a local image file, or the key of a stored image")
    search.add_argument("-k", type=int, default=10, help="hits (default 10)")
    search.add_argument("--bucket-in-query", action="store_true", help="the query is BUCKET/KEY")
    search.add_argument("--region", type=region_arg, metavar="X,Y,W,H",
                        help="search for images like this part of the query image (pixels; sides at least 32)")
    search.add_argument("--where", type=where_arg, action="append", default=[], metavar="FIELD=VALUE",
                        help="only images whose file says so (repeatable): detector=SE2 (part of its name), "
                             "magnification_min/_max=N, pixel_size_nm_min/_max=N, acquired_from/_to=YYYY-MM-DD")
    search.add_argument("--json", action="store_true")
    add_gateway(search)
    search.add_argument("--timeout", type=float, default=120)
    search.set_defaults(func=cmd_search)
    train = ssub.add_parser("train", help="train a classifier head on the autoencoder's embeddings of a labelled "
                                          "folder tree (FOLDER/<class>/<image>), cross-validated by source image")
    train.add_argument("folder")
    train.add_argument("--name", required=True)
    train.add_argument("--version", required=True)
    train.add_argument("--tile", type=int, default=0, help="embed tiles of this side, px (0: whole images)")
    train.add_argument("-c", type=float, default=1.0, help="inverse regularisation of the logistic regression")
    train.add_argument("--autoencoder", help="autoencoder bundle folder (default: the shipped one)")
    train.add_argument("--out", default="build/sem-heads", help="bundles go to OUT/NAME/VERSION")
    train.add_argument("--register", action="store_true", help="upload to the models bucket (NANOLENS_S3_* settings)")
    train.set_defaults(func=cmd_train)
